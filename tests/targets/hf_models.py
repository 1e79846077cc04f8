"""Tiny random-weight Hugging Face models, built from configs (no download), for the audit.

``python -m properties audit tests/targets/hf_models.py:gpt2 --length 16 --vocab 50 --layout BT
--output logits --predicts next``
"""

import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

VOCAB = 50


def gpt2(attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    """A 2-layer GPT-2 (causal self-attention: output t sees tokens <= t, predicts t + 1)."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attn_implementation,
    )
    return GPT2LMHeadModel(config)


def gpt2_eager() -> GPT2LMHeadModel:
    return gpt2("eager")


def gpt2_sdpa() -> GPT2LMHeadModel:
    return gpt2("sdpa")


def gpt2_leaky(layer: int = 1) -> GPT2LMHeadModel:
    """The 2-layer GPT-2 with one layer's attention made bidirectional (see
    :func:`gpt2_small_leaky`): a positive control the default audit must fail."""
    return _bidirectional(gpt2(), layer)


def _bidirectional(model: GPT2LMHeadModel, layer: int) -> GPT2LMHeadModel:
    """A planted leak: layer ``layer``'s self-attention without its causal mask. With SDPA and no
    padding mask, transformers asks the attention module itself (``is_causal``) whether to mask;
    the bug is a layer that says no (a copied encoder block, a mask flag flipped by a refactor)."""
    model.transformer.h[layer].attn.is_causal = False
    return model


def bert(attn_implementation: str = "sdpa", is_decoder: bool = False) -> BertModel:
    """A 2-layer BERT encoder: bidirectional attention, every output sees every token."""
    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        is_decoder=is_decoder,
        attn_implementation=attn_implementation,
    )
    return BertModel(config, add_pooling_layer=False)


def bert_decoder() -> BertModel:
    """The same BERT with ``is_decoder=True``: a causal mask on its self-attention."""
    return bert(is_decoder=True)


# ---------------------------------------------------------------------------------------------
# Real sizes (benchmarks and scale tests): random weights from configs, nothing downloaded.


def gpt2_small(attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    """GPT-2 small: 12 layers, 12 heads, 768 wide, vocab 50257, 1024 positions (124M parameters).

    ``python -m properties audit tests/targets/hf_models.py:gpt2_small --layout BT --vocab 50257
    --length 128 --output logits --predicts next``
    """
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(attn_implementation=attn_implementation))


def gpt2_small_eager() -> GPT2LMHeadModel:
    return gpt2_small("eager")


def gpt2_small_leaky(layer: int = 5) -> GPT2LMHeadModel:
    """GPT-2 small with one layer's mask made bidirectional (layer 5 of 12): every prediction
    sees every token through that layer; the planted leak of ``benchmarks/bench_default_audit.py``.
    """
    return _bidirectional(gpt2_small(), layer)


def llama_small(attn_implementation: str = "sdpa"):
    """A Llama-style decoder: RoPE, grouped-query attention (8 query heads, 2 key/value heads),
    RMSNorm, SwiGLU, SDPA; 4 layers, 256 wide, vocab 1000, up to 2048 positions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=4,
        hidden_size=256,
        intermediate_size=688,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=1000,
        max_position_embeddings=2048,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config)


def llama_small_eager():
    return llama_small("eager")
