"""Third-party models audited for real: the harness has never seen them and is not tuned to them.

Hugging Face ``transformers`` (GPT-2, BERT), ``pytorch-tcn``, ``torch.nn.TransformerEncoder`` and
MADE-style masked MLPs (our own and ``zuko``'s), each tiny and with random weights, through the
Python API and the CLI. The factories live in ``tests/targets/``; each test's docstring says what
the library really does. The CLI runs in-process (``properties.cli.main``): the entry point's own
subprocess test is in ``interfaces/test_bad_input.py``.
"""

import json

import hf_models
import made
import pytest
import tcn_models
import torch
import torch_encoder
from paths import TARGETS

import properties
from properties import cli
from properties.auditing.coverage import MapCoverage

pytestmark = pytest.mark.thirdparty

EXAMPLES = 5  # Hypothesis examples per search: the sweeps cover every cut of these small grids


def audit_cli(argv, tmp_path, capsys):
    """``python -m properties audit ...`` in-process: exit code, JSON report, printed text."""
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--max-examples", str(EXAMPLES), "--json", str(out)])
    captured = capsys.readouterr()
    data = json.loads(out.read_text()) if out.exists() else None
    return code, data, captured


def audit_tokens(model, **options):
    """A Hugging Face model on 16 tokens of the tiny vocabulary, as a next-token predictor."""
    defaults = dict(grid=(16,), vocab=hf_models.VOCAB, layout="BT", predicts="next")
    return properties.audit_model(model, max_examples=EXAMPLES, **{**defaults, **options})


def gradients_ran(coverage, *modes):
    return all(isinstance(coverage.gradient[mode], MapCoverage) for mode in modes)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_is_inclusive_in_eval_and_train(attn):
    """GPT-2 (either attention implementation) in eval and in train mode (dropout 0.1 on
    embeddings, attention and residuals; the audit replays the RNG, so dropout is no leak):
    output t sees tokens <= t. Gradients come through the token embedding (wte)."""
    model = hf_models.gpt2(attn)
    assert model.config._attn_implementation == attn
    result = audit_tokens(
        model, output="logits", train=True, checks=("causality", "receptive_field")
    )
    assert (result.mode, result.causal, result.passed) == ("inclusive", True, True)
    assert gradients_ran(result.coverage, "eval", "train")
    assert result.receptive_field.size == 16  # the last output sees the whole sequence
    assert any("may be clipped by the grid" in n for n in result.notes)  # attention: no bound


def test_gpt2_through_the_cli(tmp_path, capsys):
    """The loss check runs too: the one-pass cross-entropy equals the masked per-position one."""
    code, data, captured = audit_cli(
        [
            f"{TARGETS}/hf_models.py:gpt2",
            "--length", "16", "--vocab", "50", "--layout", "BT",
            "--output", "logits", "--predicts", "next",
        ],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 0, captured.err
    assert (data["mode"], data["causal"]) == ("inclusive", True)
    assert data["coverage"]["gradient"]["inference"] != "unavailable"
    assert data["loss_equivalence"]["holds"]
    assert data["loss_equivalence"]["one_pass_loss"] is not None
    assert "gradients (inference): unavailable" not in captured.out


def test_bert_encoder_fails():
    """BERT's self-attention is bidirectional: every output sees every token."""
    result = audit_tokens(hf_models.bert(), output="last_hidden_state", checks=("causality",))
    assert (result.mode, result.causal) == ("none", False)
    assert gradients_ran(result.coverage, "eval")
    evidence = {v.evidence for v in result.violations if v.kind == "future"}
    assert {"gradient", "perturbation"} <= evidence


def test_bert_as_decoder_is_inclusive():
    """``BertConfig(is_decoder=True)`` puts a causal mask on the same encoder."""
    result = audit_tokens(
        hf_models.bert_decoder(), output="last_hidden_state", checks=("causality",)
    )
    assert (result.mode, result.causal) == ("inclusive", True)


def test_bert_through_the_cli_needs_output(tmp_path, capsys):
    base = [f"{TARGETS}/hf_models.py:bert", "--length", "16", "--vocab", "50", "--layout", "BT"]
    code, _, captured = audit_cli(base, tmp_path, capsys)
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert "--output" in line and "last_hidden_state" in line and "Traceback" not in line
    code, data, _ = audit_cli(
        [*base, "--output", "last_hidden_state", "--checks", "causality"], tmp_path, capsys
    )
    assert (code, data["mode"]) == (1, "none")


def test_gpt2_with_a_larger_vocab_names_vocab(tmp_path, capsys):
    """Tokens beyond wte's 50 rows: an IndexError deep in torch, reported as a --vocab problem."""
    code, _, captured = audit_cli(
        [f"{TARGETS}/hf_models.py:gpt2", "--length", "16", "--vocab", "60", "--layout", "BT",
         "--output", "logits"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert "'transformer.wte'" in line and "pass --vocab 50" in line


# ---------------------------------------------------------------------------------------------
# pytorch-tcn


def test_tcn_causal_is_inclusive_with_its_receptive_field():
    """TCN(causal=True) pads on the left only: output t sees x_{t-12..t} (kernel 3, two blocks
    of two convolutions, dilations 1 and 2). Input layout NCL (the default): BCT."""
    result = properties.audit_model(
        tcn_models.tcn_causal(),
        grid=(20,),
        features=tcn_models.FEATURES,
        layout="BCT",
        predicts="next",
        max_examples=EXAMPLES,
    )
    assert (result.mode, result.passed) == ("inclusive", True)
    rf = result.receptive_field
    assert (rf.size, rf.span, rf.holes) == (13, 12, 0)
    assert result.loss.holds
    assert not any("clipped" in n for n in result.notes)


def test_tcn_nlc_through_the_cli(tmp_path, capsys):
    """input_shape='NLC' takes (and returns) channels last: BTC."""
    code, data, captured = audit_cli(
        [f"{TARGETS}/tcn_models.py:tcn_nlc", "--length", "20", "--features", "2",
         "--layout", "BTC", "--predicts", "next"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 0, captured.err
    assert data["mode"] == "inclusive"
    assert data["receptive_field"]["size"] == 13


def test_tcn_noncausal_fails(tmp_path, capsys):
    """causal=False pads both sides: output t sees t+6 at most."""
    code, data, _ = audit_cli(
        [f"{TARGETS}/tcn_models.py:tcn_noncausal", "--length", "20", "--features", "2",
         "--layout", "BCT", "--predicts", "next", "--checks", "causality"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert (code, data["mode"]) == (1, "none")
    assert max(v["input"] - v["output"] for v in data["violations"]) == 6


def test_tcn_dropout_in_training_mode_passes(tmp_path, capsys):
    """Dropout 0.5 in training mode: the same RNG state in both forward passes."""
    code, data, captured = audit_cli(
        [f"{TARGETS}/tcn_models.py:tcn_dropout", "--length", "20", "--features", "2",
         "--layout", "BCT", "--predicts", "next", "--train", "--checks", "causality"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 0, captured.out
    assert data["mode"] == "inclusive"
    assert set(data["coverage"]["perturbation"]) == {"eval", "train"}
    assert isinstance(data["coverage"]["gradient"]["training mode"], dict)


def test_tcn_batch_norm_leaks_in_training_mode_only():
    """use_norm='batch_norm': BatchNorm1d statistics over (batch, time) in training mode let the
    future move the past; in eval mode (running statistics) it is causal."""
    model = tcn_models.tcn_batchnorm()
    options = dict(
        grid=(20,),
        features=tcn_models.FEATURES,
        layout="BCT",
        predicts="next",
        max_examples=EXAMPLES,
        checks=("causality",),
    )
    assert properties.audit_model(model, **options).mode == "inclusive"
    result = properties.audit_model(model, train=True, **options)
    assert (result.mode, result.causal) == ("none", False)
    future = [v for v in result.violations if v.kind == "future"]
    assert future and all(v.evidence.endswith("/train") for v in future)
    assert any(v.evidence == "perturbation/train" for v in future)


# ---------------------------------------------------------------------------------------------
# torch.nn.TransformerEncoder


def test_encoder_with_causal_mask_is_inclusive():
    for factory in (torch_encoder.encoder_mask, torch_encoder.encoder_mask_hint):
        result = properties.audit_model(
            factory(),
            grid=(12,),
            features=torch_encoder.FEATURES,
            predicts="next",
            train=True,
            max_examples=EXAMPLES,
            checks=("causality",),
        )
        assert (result.mode, result.passed) == ("inclusive", True), factory.__name__
        assert gradients_ran(result.coverage, "eval", "train")


def test_encoder_without_mask_fails():
    result = properties.audit_model(
        torch_encoder.encoder_nomask(),
        grid=(12,),
        features=torch_encoder.FEATURES,
        predicts="next",
        max_examples=EXAMPLES,
        checks=("causality",),
    )
    assert result.mode == "none"


def test_encoder_with_only_the_is_causal_hint(tmp_path, capsys):
    """torch 2.13, ``encoder(h, is_causal=True)`` without a mask:

    - eval + no_grad takes the fast path (torch._transformer_encoder_layer_fwd), which drops the
      hint: attention is bidirectional, the future leaks into the past;
    - with autograd on, or in training mode, MultiheadAttention raises "Need attn_mask if
      specifying the is_causal hint".

    The audit says both: NOT causal (perturbations, inference), gradients and training mode
    unavailable, with the model's own message in the notes."""
    code, data, captured = audit_cli(
        [f"{TARGETS}/torch_encoder.py:encoder_hint", "--length", "12", "--features", "2",
         "--predicts", "next", "--train", "--checks", "causality"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 1 and not captured.err
    assert (data["mode"], data["causal"]) == ("none", False)
    assert {v["evidence"] for v in data["violations"]} == {"perturbation"}
    coverage = data["coverage"]
    assert coverage["gradient"] == {
        "eval": "unavailable", "train": "unavailable",  # and under the old names, for a release
        "inference": "unavailable", "training mode": "unavailable",
    }
    assert coverage["perturbation"]["train"] == "unavailable"
    assert coverage["perturbation"]["eval"]["cuts_swept"] == 12
    assert any("Need attn_mask" in n and "perturbation" in n for n in data["notes"])
    assert "perturbations (training mode): unavailable" in captured.out


def test_encoder_hint_without_fast_path_is_a_one_line_error(tmp_path, capsys):
    """batch_first=False: no fast path, so every mode raises; with no evidence at all, the
    model's own error is the answer (exit 2, one line)."""
    code, _, captured = audit_cli(
        [f"{TARGETS}/torch_encoder.py:encoder_hint_seq_first", "--length", "12",
         "--features", "2", "--predicts", "next"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert "Need attn_mask" in line and "Traceback" not in line


# ---------------------------------------------------------------------------------------------
# MADE-style models: arbitrary orders, flattened outputs


@pytest.mark.parametrize(
    "factory, layout", [(made.made, "BT->B(TC)"), (made.zuko_made, "BT->B(CT)")]
)
def test_made_is_strict_in_its_own_order_only(factory, layout):
    """Output i sees exactly the inputs generated before position i: strict in ``ORDER``, and
    not causal in raster order. The layout says how (B, D * K) splits into positions."""
    model = factory()
    options = dict(grid=(made.D,), layout=layout, predicts="current", max_examples=EXAMPLES)
    result = properties.audit_model(model, order=made.ORDER, **options)
    assert (result.mode, result.passed) == ("strict", True)
    assert result.loss.holds
    assert result.coverage.loss_convention == "current"
    raster = properties.audit_model(model, checks=("causality",), **options)
    assert (raster.mode, raster.causal) == ("none", False)
    # zuko's own `order` is a rank per position: passed as a generation order, it is the
    # inverse permutation, and the audit says so by failing.
    if not torch.equal(torch.argsort(made.RANKS), made.RANKS):
        wrong = properties.audit_model(model, order=made.RANKS, checks=("causality",), **options)
        assert not wrong.causal


def test_made_through_the_cli_with_its_order(tmp_path, capsys):
    base = [f"{TARGETS}/made.py:made", "--length", "12", "--layout", "BT->B(TC)",
            "--predicts", "current"]  # fmt: skip
    code, data, captured = audit_cli([*base, "--order", "@generation_order"], tmp_path, capsys)
    assert code == 0, captured.err
    assert data["mode"] == "strict"
    code, data, _ = audit_cli([*base, "--checks", "causality"], tmp_path, capsys)
    assert (code, data["mode"]) == (1, "none")


def test_zuko_through_the_cli_with_a_module_order(tmp_path, capsys):
    code, data, captured = audit_cli(
        [f"{TARGETS}/made.py:zuko_made", "--length", "12", "--layout", "BT->B(CT)",
         "--order", f"{TARGETS}/made.py:ORDER", "--predicts", "current", "--checks", "causality"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert code == 0, captured.err
    assert data["mode"] == "strict"
