"""Tiny random-weight Hugging Face models with cached paths worth checking (no download): a
sliding window (Mistral), a state-space model (Mamba), a recurrent one (RWKV), a Llama-style
decoder, and a step hook with the positions bug of transformers#43082.

``python -m properties audit tests/targets/hf_stepping.py:mistral --layout BT --vocab 50
--length 16 --output logits --checks incremental``
"""

import torch

VOCAB = 50
WINDOW = 4


def mistral():
    """Two layers with a sliding window of 4: position t sees tokens t - 3 .. t in each."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        sliding_window=WINDOW,
        max_position_embeddings=64,
    )
    return MistralForCausalLM(config).eval()


def mamba():
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        state_size=4,
        vocab_size=VOCAB,
        intermediate_size=64,
        conv_kernel=4,
        time_step_rank=4,
    )
    return MambaForCausalLM(config).eval()


def rwkv():
    from transformers import RwkvConfig, RwkvForCausalLM

    torch.manual_seed(0)
    config = RwkvConfig(
        num_hidden_layers=2,
        hidden_size=32,
        attention_hidden_size=32,
        intermediate_size=64,
        vocab_size=VOCAB,
        context_length=64,
    )
    return RwkvForCausalLM(config).eval()


def llama():
    """A Llama-style decoder (RoPE, grouped-query attention, RMSNorm), two layers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def restarting_positions(model, chunk, state):
    """A chunked prefill that gives each chunk the positions 0 .. L - 1 (transformers#43082:
    the chunk's own cache positions passed as ``position_ids``): RoPE is wrong from the second
    chunk on."""
    positions = torch.arange(chunk.shape[1])[None]
    out = model(chunk, cache=state, position_ids=positions, use_cache=True)
    return out.logits, out.cache
