"""Tiny random-weight Hugging Face decoders for the contracts besides causality (no download).

Packed documents reach them as padding-free ``position_ids`` (``--documents-as position_ids``):
transformers builds a block-diagonal mask from positions that restart only when no attention
mask and no cache is given (``masking_utils._preprocess_mask_arguments``), so the models below
are built with ``use_cache=False`` unless the name says ``cached``.

``python -m properties audit tests/targets/hf_contracts.py:llama --layout BT --vocab 50 --length 12
--output logits --predicts next --documents 4,3,5 --documents-as position_ids``
"""

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 50
SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
}
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def build(family: str, attn: str = "sdpa", *, layers: int = 2, use_cache=False, **config):
    """A ``family`` decoder of ``layers`` layers with the ``attn`` backend, in inference."""
    torch.manual_seed(0)
    config_class, model_class = FAMILIES[family]
    cfg = config_class(num_hidden_layers=layers, attn_implementation=attn, use_cache=use_cache,
                       **SIZES, **config)
    return model_class(cfg).eval()


def gpt2(attn="sdpa"):
    """GPT-2 (absolute positions: the restarting position_ids are its positions too)."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64,
                        bos_token_id=0, eos_token_id=0, attn_implementation=attn,
                        use_cache=False)
    return GPT2LMHeadModel(config).eval()


def gpt2_eager():
    return gpt2("eager")


def llama(attn="sdpa"):
    return build("llama", attn)


def llama_eager():
    return llama("eager")


def llama_flex():
    return llama("flex_attention")


def llama_paged():
    """The paged backend (continuous batching): builds no mask outside its scheduler."""
    return llama("paged|eager")


def llama_cached():
    """use_cache left on (the default): the cache switches the packed-sequence mask off."""
    return build("llama", "sdpa", use_cache=True)


def mistral(attn="sdpa"):
    return build("mistral", attn)


def mistral_eager():
    return mistral("eager")


def qwen2(attn="sdpa"):
    return build("qwen2", attn)


def qwen2_eager():
    return qwen2("eager")


def with_ones_mask(model, x, position_ids=None):
    """A forward hook that also passes an all-ones attention mask, as a collator that pads
    nothing might: transformers then does not detect the packing (its PR#46634's bug class)."""
    return model(x, position_ids=position_ids, attention_mask=torch.ones_like(x)).logits


# ---------------------------------------------------------------------------------------------
# Windows

WINDOW = 4


def mistral_sliding(attn="sdpa", layers=1):
    """Mistral with ``sliding_window=4``: every layer sees 4 positions, its own included."""
    return build("mistral", attn, layers=layers, sliding_window=WINDOW)


def mistral_sliding_eager():
    return mistral_sliding("eager")


def mistral_sliding_two():
    return mistral_sliding(layers=2)


def qwen2_mixed():
    """Qwen2 with a sliding layer then a full-attention one (``layer_types``)."""
    return build("qwen2", "sdpa", layers=2, use_sliding_window=True, sliding_window=WINDOW,
                 max_window_layers=1, layer_types=["sliding_attention", "full_attention"])
