"""Third-party models' cached paths against their full pass (the incremental check), through
the adapters: Hugging Face's dynamic and static caches (GPT-2, a sliding-window Mistral, a
Llama-style decoder), its recurrent models (Mamba, RWKV), pytorch-tcn's streaming mode.

Each passes, or shows a real divergence confirmed here by hand: Mamba's (transformers 5.x)
multi-token call with a cache starts its selective scan from a zero state, ignoring the state
the previous chunk left, so a chunked prefill diverges from the full pass.
"""

import copy
import json

import hf_models
import hf_stepping
import pytest
import tcn_models
import torch
from paths import TARGETS

from properties import assert_incremental, cli
from properties.evidence.schedules import Schedule

pytestmark = pytest.mark.thirdparty

EXAMPLES = 8
N = 16
TOKENS = dict(grid=(N,), layout="BT", vocab=hf_stepping.VOCAB, output="logits")


def test_gpt2_passes_on_its_dynamic_and_its_poisoned_static_cache():
    report = assert_incremental(hf_models.gpt2(), max_examples=EXAMPLES, **TOKENS)
    assert report.variants == ["its dynamic cache", "a StaticCache of 18 slots"]
    assert {o.schedule.variant for o in report.tried} == {0, 1}
    assert report.poisoned > 0  # the static slots not written held 1e4: none was read


def test_mistral_passes_across_its_sliding_window():
    """Cuts drawn at the window's landmarks (3, 4, 5, 8); the static cache's sliding layers
    hold 4 slots, and the schedules run past them."""
    report = assert_incremental(hf_stepping.mistral(), max_examples=EXAMPLES, **TOKENS)
    cuts = {c for o in report.tried for c in o.schedule.cuts}
    assert {3, 4, 5, 8} <= cuts
    assert any(o.schedule.variant == 1 and o.schedule.n > hf_stepping.WINDOW for o in report.tried)


def test_llama_passes_and_a_chunked_prefill_with_restarting_positions_does_not():
    """transformers#43082's class: positions 0 .. L - 1 for every chunk. Caught at position 1
    on the smallest schedule that has a second chunk; the first module that diverges is the
    rotary embedding (its input, the positions, already differs)."""
    assert assert_incremental(hf_stepping.llama(), max_examples=EXAMPLES, **TOKENS).holds
    with pytest.raises(AssertionError) as info:
        assert_incremental(hf_stepping.llama(), step=hf_stepping.restarting_positions,
                           max_examples=EXAMPLES, **TOKENS)
    message = str(info.value)
    assert "at position 1 on chunks [1, 15] (minimal)" in message
    assert "first diverging module: model.rotary_emb (LlamaRotaryEmbedding)" in message


def test_rwkv_passes_on_its_recurrent_state():
    report = assert_incremental(hf_stepping.rwkv(), max_examples=EXAMPLES, **TOKENS)
    assert report.variants == ["its recurrent state"]


def test_mamba_diverges_on_a_chunked_prefill():
    """The check's finding: chunks [1, 15] diverge from position 1, in float32 and in float64
    alike, inside the mixer's own code (its selective scan)."""
    with pytest.raises(AssertionError) as info:
        assert_incremental(hf_stepping.mamba(), max_examples=EXAMPLES, **TOKENS)
    message = str(info.value)
    assert "at position 1 on chunks [1, 15] (minimal)" in message
    assert "backbone.layers.0.mixer.out_proj (Linear)" in message
    assert "in the code of backbone.layers.0.mixer (MambaMixer)" in message


def test_mamba_chunked_prefill_ignores_the_recurrent_state_confirmed_by_hand():
    """By hand, in float64: after a prefix of one token, the logits of a 15-token chunk are
    bit for bit the same whether the cache keeps the recurrent state the prefix left or has it
    zeroed: the state is not read. A one-token decode reads it, and equals the full pass."""
    model = hf_stepping.mamba().double()
    x = torch.randint(hf_stepping.VOCAB, (1, N), generator=torch.Generator().manual_seed(0))

    def zeroed(cache):
        cache = copy.deepcopy(cache)
        for layer in range(model.config.num_hidden_layers):
            cache.get_recurrent_state(layer, state_idx=0).zero_()
        return cache

    with torch.no_grad():
        full = model(x).logits
        cache = model(x[:, :1], use_cache=True).cache
        chunk = model(x[:, 1:], cache=copy.deepcopy(cache), use_cache=True).logits
        chunk_zeroed = model(x[:, 1:], cache=zeroed(cache), use_cache=True).logits
        token = model(x[:, 1:2], cache=copy.deepcopy(cache), use_cache=True).logits
        token_zeroed = model(x[:, 1:2], cache=zeroed(cache), use_cache=True).logits
    assert torch.equal(chunk, chunk_zeroed)
    assert (chunk - full[:, 1:]).abs().max() > 1e-6
    assert torch.equal(token, full[:, 1:2]) and not torch.equal(token, token_zeroed)


@pytest.mark.parametrize("factory, layout", [("tcn_causal", "BCT"), ("tcn_nlc", "BTC")])
def test_pytorch_tcn_streaming_passes_and_leaves_its_buffers(factory, layout):
    model = getattr(tcn_models, factory)()
    before = [b.clone() for b in model.get_buffers()]
    report = assert_incremental(model.eval(), grid=(20,), layout=layout,
                                features=tcn_models.FEATURES, max_examples=EXAMPLES)
    assert report.variants == ["pytorch-tcn's streaming mode (inference=True)"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.get_buffers(), strict=True))


def test_pytorch_tcn_without_causal_cannot_stream(tmp_path, capsys):
    code = cli.main([
        "audit", f"{TARGETS}/tcn_models.py:tcn_noncausal", "--length", "20", "--features", "2",
        "--layout", "BCT", "--checks", "incremental",
    ])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pytorch-tcn's streaming mode (inference=True) raised ValueError" in err


def test_the_cli_reports_mamba_as_json(tmp_path, capsys):
    out = tmp_path / "mamba.json"
    code = cli.main([
        "audit", f"{TARGETS}/hf_stepping.py:mamba", "--length", str(N), "--vocab", "50",
        "--layout", "BT", "--output", "logits", "--checks", "incremental",
        "--max-examples", str(EXAMPLES), "--json", str(out),
    ])
    assert code == 1
    d = json.loads(out.read_text())["incremental"]["divergence"]
    assert d["schedule"]["chunks"] == [1, 15] and d["position"] == 1
    assert d["diff"]["float64"] > 1e6 * d["tolerance"]["float64"]
    assert Schedule(N, tuple(d["schedule"]["cuts"])) == Schedule(N, (1,))
