"""Every causal-LM architecture of the installed transformers, as a tiny random-weight model.

``build("deepseek_v2")`` takes the architecture's default config (``CONFIG_MAPPING``), shrinks
every size field it has to a tiny value (2 layers, width 32, 4 experts, vocabulary ``VOCAB``) and
builds ``AutoModelForCausalLM.from_config`` in eval mode, with ``torch.manual_seed(0)``; nothing is
downloaded. Per-layer lists (``layer_types``, ``layers_block_type``...) keep one layer of each
kind, so a hybrid model keeps its attention and its Mamba layers. The experts kernel is the
library's default (``grouped_mm`` in transformers 5), unless ``experts=`` names another.

``python -m properties audit tests/targets/hf_causal_lms.py:deepseek_v2 --layout BT --vocab 96
--length 24 --output logits --predicts next``

``benchmarks/thirdparty_sweep.py`` audits all of them; ``tests/thirdparty/`` a few.
"""

import torch

VOCAB = 96
WIDTH = 32

# config field -> tiny value; only fields the default config already has are set
SIZES = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "dim", "embed_dim"), WIDTH),
    **dict.fromkeys(("embedding_size", "attention_hidden_size", "word_embed_proj_dim"), WIDTH),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads"), 4),
    **dict.fromkeys(("decoder_attention_heads", "encoder_attention_heads"), 4),
    "num_key_value_heads": 2, "multi_query_group_num": 2, "head_dim": 8, "kv_channels": 8,
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size"), 48),
    **dict.fromkeys(("decoder_ffn_dim", "encoder_ffn_dim", "inner_hidden_size"), 48),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size"), 16),
    **dict.fromkeys(("expert_intermediate_size", "expert_ffn_hidden_size"), 16),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts"), 4),
    **dict.fromkeys(("moe_num_experts", "num_routed_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k", "moe_k"), 2),
    "n_group": 1, "topk_group": 1, "n_shared_experts": 1,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx"), 64),
    "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 8, "qk_head_dim": 8,
    "kv_lora_rank": 8, "q_lora_rank": 16, "index_head_dim": 8, "index_n_heads": 2,
    "index_topk": 8, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
    "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_head_dim": 8,
    "linear_num_heads": 4, "mamba_d_state": 8, "mamba_n_heads": 4, "mamba_d_head": 8,
    "mamba_d_ssm": WIDTH, "mamba_expand": 2, "mamba_n_groups": 1,
    "mamba_chunk_size": 8, "chunk_size": 8, "state_size": 8, "time_step_rank": 4,
    "ssm_state_size": 8, "n_groups": 1, "rotary_dim": 4, "partial_rotary_factor": 0.5,
    "swa_num_attention_heads": 4, "swa_head_dim": 8, "num_memory_tokens": 0,
    "attention_chunk_size": 8,
}
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")
KIND_LISTS = ("layer_types", "layers_block_type", "hybrid_override_pattern", "block_types")


def model_types() -> list[str]:
    """Every model type transformers maps to a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _kept_layers(cfg, n_layers: int) -> list[int]:
    """One layer of each kind (at most 4, at least 2): a hybrid keeps each of its blocks."""
    for key in KIND_LISTS:
        kinds = getattr(cfg, key, None)
        if isinstance(kinds, (list, str)) and len(kinds) == n_layers:
            first = {}
            for i, kind in enumerate(kinds):
                first.setdefault(str(kind), i)
            keep = sorted(first.values())[:4]
            break
    else:
        keep = [0, 1]
    while len(keep) < 2:
        keep.append(min(keep[-1] + 1, n_layers - 1))
    return keep


def tiny_config(model_type: str):
    from transformers import CONFIG_MAPPING

    cfg = CONFIG_MAPPING[model_type]()
    cfg = getattr(cfg, "text_config", None) or cfg  # a multimodal model: its language model
    d = cfg.to_dict()
    # a size the default sets (or leaves None: some MoE configs leave num_experts_per_tok unset)
    d.update({k: v for k, v in SIZES.items() if k in d and type(d[k]) in (type(v), type(None))})
    n_layers = next((d[k] for k in LAYER_FIELDS if isinstance(d.get(k), int)), 2)
    keep = _kept_layers(cfg, n_layers)
    for key, value in list(d.items()):  # per-layer lists and strings, cut to the kept layers
        if isinstance(value, (list, str)) and len(value) == n_layers and n_layers > 2:
            cut = [value[i] for i in keep]
            d[key] = "".join(cut) if isinstance(value, str) else cut
    d.update({k: len(keep) for k in LAYER_FIELDS if isinstance(d.get(k), int)})
    if "vocab_size" in d:
        d["vocab_size"] = VOCAB
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if isinstance(d.get(key), int):
            d[key] = min(d[key], VOCAB - 1)
    if isinstance(d.get("sliding_window"), int):
        d["sliding_window"] = 8  # shorter than the audit's sequence: the window is exercised
    if isinstance(d.get("first_k_dense_replace"), int):
        d["first_k_dense_replace"] = 1
    for key in ("transformers_version", "model_type", "architectures"):
        d.pop(key, None)
    return type(cfg).from_dict(d)


def build(model_type: str, *, attn_implementation: str | None = None, experts: str | None = None):
    """The tiny model of ``model_type`` in eval mode (``experts``: an experts kernel, e.g.
    ``"eager"``; default: the library's)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config(model_type)
    options = {}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    if experts is not None:
        options["experts_implementation"] = experts
    return AutoModelForCausalLM.from_config(cfg, **options).eval()


def is_moe(model) -> bool:
    """Whether the model routes tokens to experts (a module named like one)."""
    return any("expert" in type(m).__name__.lower() or name.endswith("experts")
               for name, m in model.named_modules())


# Representative mixture-of-experts models for tests/thirdparty (fast to build and audit).
def mixtral():
    return build("mixtral")


def qwen2_moe():
    return build("qwen2_moe")


def deepseek_v2():
    return build("deepseek_v2")


def jetmoe():
    return build("jetmoe")


def olmoe():
    return build("olmoe")


def falcon_h1():
    return build("falcon_h1")


def __getattr__(name: str):
    """``hf_causal_lms.py:qwen3_next`` on the command line: any model type is a factory (its
    ``-`` written ``_`` where the name has one: ``gpt_sw3``)."""
    if name.startswith("__"):
        raise AttributeError(name)
    types = {t.replace("-", "_"): t for t in model_types()}
    if name not in types:
        raise AttributeError(f"no causal-LM model type {name!r} in this transformers")
    return lambda: build(types[name])
