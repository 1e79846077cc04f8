"""Bad input: every mistake a user can make gets one line naming the problem and the fix (exit
code 2), or a verdict with a note. Never a traceback, never a silent wrong verdict.

The targets are in ``tests/targets/bad.py`` (one small causal convolution, wrong in one way per
model) and ``tests/targets/broken_import.py``.
"""

import json
import subprocess
import sys

import pytest
import torch
from paths import TARGETS

import properties
from properties import AdapterError, cli
from properties.subject.layout import parse_layout_pair

BAD = f"{TARGETS}/bad.py"
FAST = ["--max-examples", "3", "--checks", "causality"]


def fails(argv, capsys) -> str:
    """Run the CLI; assert exit code 2 and one line on stderr without a traceback; return it."""
    code = cli.main(["audit", *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.out
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    assert lines[0].startswith("python -m properties: error: ")
    return lines[0]


def verdict(argv, tmp_path, capsys) -> tuple[int, dict, str]:
    """Run the CLI; assert it gave a verdict (exit 0 or 1, nothing on stderr)."""
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--json", str(out)])
    captured = capsys.readouterr()
    assert code in (0, 1) and not captured.err, captured.err
    return code, json.loads(out.read_text()), captured.out


# ---------------------------------------------------------------------------------------------
# Targets


@pytest.mark.parametrize(
    "target, words",
    [
        ("no_such_package.models:net", ["no module named 'no_such_package.models'"]),
        (f"{TARGETS}/no_such_file.py:net", ["no file", "check the path"]),
        ("just_a_name", ["names no attribute", "module:attr"]),
        ("zoo:no_such_model", ["zoo"]),
        (f"{TARGETS}/broken_import.py:model", ["a_package_that_does_not_exist", "fix the file"]),
        (f"{BAD}:no_such_attribute", ["no attribute 'no_such_attribute'", "CausalConv"]),
        (f"{BAD}:NOT_A_MODEL", ["is a int, not a module or a callable"]),
        (f"{BAD}:raising_factory", ["ValueError: the checkpoint is missing", "fix the factory"]),
        (f"{BAD}:needs_arguments", ["needs arguments", "zero-argument function"]),
        (f"{BAD}:returns_a_string", ["returned a str, not an nn.Module"]),
    ],
)
def test_target_errors(target, words, capsys):
    line = fails([target, "--length", "8"], capsys)
    for word in words:
        assert word in line


def test_the_entry_point_itself_prints_one_line():
    """``python -m properties`` as a user runs it (the only subprocess: torch's import is slow)."""
    run = subprocess.run(
        [sys.executable, "-m", "properties", "audit", f"{BAD}:structured", "--length", "8",
         "--layout", "BT"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "fields: logits, hidden, aux_loss" in line and "--output" in line


# ---------------------------------------------------------------------------------------------
# Layouts and outputs


@pytest.mark.parametrize(
    "layout, words",
    [
        ("BT->BCT", ["does not fit output layout BCT"]),  # (B, T, 4) read as (B, C, T)
        ("BT->B(TC)", ["shape (2, 8, 4), 3 axes, but output layout B(TC) has 2"]),
        ("BTC", ["raised RuntimeError", "--layout"]),  # a channel axis the model does not take
        ("BCHW", ["2 grid axes but the grid has 1"]),
        ("B(T", ["unbalanced"]),
        ("(BT)C", ["batch axis B, on its own"]),
        ("BT->B(T)C", ["one-letter"]),
    ],
)
def test_layout_errors(layout, words, capsys):
    line = fails([f"{BAD}:causal_conv", "--length", "8", "--layout", layout, *FAST], capsys)
    for word in words:
        assert word in line


def test_flat_output_error_suggests_grouped_layouts(capsys):
    line = fails(
        [f"{TARGETS}/made.py:made", "--length", "12", "--layout", "BT", *FAST], capsys
    )
    assert "(2, 24)" in line and "BT->B(TC) or BT->B(CT)" in line


def test_grouped_layouts_round_trip():
    a, b = parse_layout_pair("B(TC)->B(CT)", 1)
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)  # canonical (B, T, C)
    assert a.to_native(x).shape == (2, 12)
    assert torch.equal(a.to_canonical(a.to_native(x), (3,)), x)
    assert torch.equal(b.to_native(x).reshape(2, 4, 3), x.transpose(1, 2))
    with pytest.raises(AdapterError, match="not a multiple of 3"):
        b.to_canonical(torch.zeros(2, 13), (3,))


def test_structured_output_needs_output_and_a_real_field(capsys):
    base = [f"{BAD}:structured", "--length", "8", "--layout", "BT", *FAST]
    line = fails(base, capsys)
    assert "fields: logits, hidden, aux_loss" in line and "--output" in line
    line = fails([*base, "--output", "scores"], capsys)
    assert "no field 'scores'" in line and "logits" in line
    line = fails([*base, "--output", "aux_loss"], capsys)  # a 0-d tensor
    assert "output has shape ()" in line and "does not fit" in line


@pytest.mark.parametrize("model, kind", [("NaNModel", "NaN"), ("InfModel", "Inf")])
def test_nan_and_inf_outputs(model, kind, capsys):
    line = fails([f"{BAD}:{model}", "--length", "8", "--layout", "BT", *FAST], capsys)
    assert f"contain {kind}" in line and "fix the model" in line


def test_nan_at_a_few_positions_points_at_a_mask_polarity_bug(capsys):
    argv = [f"{BAD}:WrongPolarityAttention", "--length", "8", "--layout", "BT", *FAST]
    line = fails(argv, capsys)
    assert "positions 7" in line and "wrong polarity" in line


# ---------------------------------------------------------------------------------------------
# Models that misbehave: verdicts with notes


@pytest.mark.parametrize("factory", ["InPlace", "in_place_double"])
def test_model_that_changes_its_input_in_place(factory, tmp_path, capsys):
    """float32 models get a cast copy anyway; float64 ones used to get a view of the audit's
    own inputs. Either way: the right verdict, and a note."""
    code, data, _ = verdict(
        [f"{BAD}:{factory}", "--length", "8", "--layout", "BT", "--predicts", "next",
         "--max-examples", "3"],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert (code, data["mode"]) == (0, "inclusive")
    assert data["receptive_field"]["size"] == 3
    assert data["loss_equivalence"]["holds"]
    assert any("changes its input in place" in n for n in data["notes"])


def test_tokens_outside_the_vocabulary_name_vocab(capsys):
    line = fails([f"{BAD}:small_vocab", "--length", "8", "--vocab", "50", *FAST], capsys)
    assert "--vocab is 50" in line and "30 entries" in line and "pass --vocab 30" in line
    assert "IndexError" not in line


def test_floats_fed_to_an_embedding_say_vocab(capsys):
    line = fails([f"{BAD}:small_vocab", "--length", "8", "--layout", "BT", *FAST], capsys)
    assert "nn.Embedding 'embedding'" in line and "pass --vocab 30" in line


def test_token_model_with_the_right_vocabulary_passes(tmp_path, capsys):
    code, data, _ = verdict(
        [f"{BAD}:small_vocab", "--length", "8", "--vocab", "30", "--predicts", "next", *FAST],
        tmp_path,
        capsys,
    )
    assert (code, data["mode"]) == (0, "inclusive")
    assert data["coverage"]["gradient"]["inference"] != "unavailable"


@pytest.mark.parametrize(
    "factory, mode, why",
    [
        ("rounded", "inclusive", "zero everywhere"),
        ("rounded_leak", "none", "zero everywhere"),
        ("IntegerPath", "inclusive", "no gradient path"),
        ("backward_raises", "inclusive", "NotImplementedError: this op has no backward"),
    ],
)
def test_not_differentiable_the_perturbations_decide(factory, mode, why, tmp_path, capsys):
    code, data, text = verdict(
        [f"{BAD}:{factory}", "--length", "8", "--layout", "BT", "--predicts", "next", *FAST],
        tmp_path,
        capsys,
    )
    assert data["mode"] == mode and code == (0 if mode == "inclusive" else 1)
    assert data["coverage"]["gradient"]["inference"] == "unavailable"
    assert data["receptive_field"] is None  # not a size 0 from an empty map
    assert any(why in n and "gradient evidence unavailable" in n for n in data["notes"])
    assert {v["evidence"] for v in data["violations"]} == {"perturbation"}
    assert "gradients (inference): unavailable" in text


def test_model_that_raises_in_training_mode(tmp_path, capsys):
    code, data, _ = verdict(
        [f"{BAD}:TrainOnly", "--length", "8", "--layout", "BT", "--predicts", "next",
         "--train", *FAST],
        tmp_path,
        capsys,
    )  # fmt: skip
    assert (code, data["mode"]) == (0, "inclusive")
    assert data["coverage"]["gradient"]["training mode"] == "unavailable"
    assert data["coverage"]["perturbation"]["train"] == "unavailable"
    assert data["coverage"]["perturbation"]["eval"]["cuts_swept"] == 8
    assert any("training needs a mask" in n for n in data["notes"])


def test_model_that_raises_everywhere_is_an_error(capsys):
    line = fails([f"{BAD}:TrainOnly", "--length", "8", "--layout", "BTC", *FAST], capsys)
    assert "raised RuntimeError" in line


def test_grid_too_small_for_the_receptive_field(tmp_path, capsys):
    args = [f"{BAD}:causal_conv", "--layout", "BT", "--predicts", "next", "--max-examples", "3"]
    args += ["--checks", "causality,receptive_field"]
    _, data, text = verdict([*args, "--length", "3"], tmp_path, capsys)
    assert any("may be clipped by the grid (3,)" in n and "--length" in n for n in data["notes"])
    assert "note: the receptive field may be clipped" in text
    _, data, _ = verdict([*args, "--length", "8"], tmp_path, capsys)
    assert data["receptive_field"]["size"] == 3
    assert not any("clipped" in n for n in data["notes"])


# ---------------------------------------------------------------------------------------------
# Devices and dtypes


def test_float64_model_takes_any_input_dtype(tmp_path, capsys):
    code, data, _ = verdict(
        [f"{BAD}:double_model", "--length", "8", "--layout", "BT", "--predicts", "next", *FAST],
        tmp_path,
        capsys,
    )
    assert (code, data["mode"]) == (0, "inclusive")
    subject = properties.make_subject(_bad().double_model(), grid=(8,), layout="BT")
    assert subject(torch.randn(2, 8, 1, dtype=torch.float32)).dtype == torch.float64


def test_model_whose_float64_copy_cannot_run(tmp_path, capsys):
    """A model that casts to float32 inside: gradients are taken in float32, with a note."""
    code, data, _ = verdict(
        [f"{BAD}:Float32Inside", "--length", "8", "--layout", "BT", "--predicts", "next", *FAST],
        tmp_path,
        capsys,
    )
    assert (code, data["mode"]) == (0, "inclusive")
    assert data["coverage"]["gradient"]["inference"] != "unavailable"
    assert data["coverage"]["perturbation"]["eval"] != "unavailable"  # unconfirmed, not lost
    assert any("float64 copy" in n and "torch.float32" in n for n in data["notes"])


def test_model_on_the_meta_device(capsys):
    line = fails([f"{BAD}:meta_model", "--length", "8", "--layout", "BT", *FAST], capsys)
    assert "meta device" in line and "to_empty" in line


def test_model_on_another_device_gets_its_input_there():
    """The adapter moves inputs to the model's device (the first parameter's)."""
    subject = properties.make_subject(_bad().causal_conv(), grid=(8,), layout="BT")
    assert subject.device == torch.device("cpu")
    assert subject(torch.randn(2, 8, 1, dtype=torch.float64)).shape == (2, 8, 4)


def _bad():
    sys.path.insert(0, str(TARGETS))
    try:
        import bad
    finally:
        sys.path.remove(str(TARGETS))
    return bad


def test_an_output_without_prediction_values_is_said(capsys):
    # every comparison over zero values passes: a silent "causal" would be the wrong verdict
    line = fails([f"{BAD}:NoPredictions", "--length", "8", "--layout", "BT", *FAST], capsys)
    assert "no prediction values" in line and "--output" in line
