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
