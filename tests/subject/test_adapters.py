"""Third-party models as they come (issue 8): a model that runs at one batch size only, outputs
that are not one prediction per position (what the error says, and the forward hook that fixes
it), and colour PixelCNNs audited at sub-pixel level (``order="raster+channels"``).

The targets live in ``tests/targets/as_they_come.py`` and ``tests/targets/colour_pixelcnn.py``;
each is the pattern of a public repository reduced to a few lines (their docstrings say which).
"""

import json

import as_they_come as come
import colour_pixelcnn as colour
import pytest
import torch
from paths import TARGETS

import properties
from properties import AdapterError, cli, explain
from properties.subject.canonical import make_subject

COME = f"{TARGETS}/as_they_come.py"
COLOUR = f"{TARGETS}/colour_pixelcnn.py"
EXAMPLES = 10  # Hypothesis examples per search: the sweeps cover every cut of these grids
LEVELS = dict(classes=colour.LEVELS, value_range=(0, colour.LEVELS - 1))  # colour values
SUBPIXEL = dict(grid=(5, 5), features=3, predicts="current", max_examples=EXAMPLES)


def run_cli(argv, tmp_path, capsys):
    """Exit code, JSON report (None on an error), stdout and stderr of the CLI, in-process."""
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--max-examples", str(EXAMPLES), "--json", str(out)])
    captured = capsys.readouterr()
    data = json.loads(out.read_text()) if out.exists() else None
    return code, data, captured.out, captured.err


def error_line(argv, tmp_path, capsys) -> str:
    code, _, _, err = run_cli(argv, tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    return err.strip()


# ---------------------------------------------------------------------------------------------
# One batch size


@pytest.mark.parametrize("factory", [come.cached_padding, come.cached_bias])
def test_a_model_that_caches_its_first_batch_is_audited_at_that_batch(factory):
    """PixelCNN++'s cached padding (fails at another batch size) and a cached tensor that
    broadcasts (returns the first batch size): the audit says what happened, runs every pass at
    batch 2 and gives the verdict of the model (strict: a mask-A convolution)."""
    result = properties.audit_model(
        factory(), grid=(5, 5), layout="BCHW", predicts="current", max_examples=EXAMPLES
    )
    assert result.mode == "strict" and result.causal
    notes = [n for n in result.notes if n.startswith("the model ran on batch 2 and fails on")]
    assert len(notes) == 1, result.notes
    assert "does it cache state from its first call" in notes[0]
    assert "ran at batch 2" in notes[0]


@pytest.mark.parametrize("leaky", [False, True])
def test_a_token_model_run_in_slices_keeps_its_gradient_evidence(leaky):
    """Tokens, a cache sized by the first batch: every pass runs at batch 2, and the gradients,
    taken at the embedding's output across the slices, map exactly what each output sees (its
    position and the previous one; the next one for the leaky control)."""
    factory = come.cached_tokens_leaky if leaky else come.cached_tokens
    result = properties.audit_model(
        factory(), grid=(8,), vocab=come.VOCAB, layout="BT", predicts="next", max_examples=5
    )
    assert any(n.startswith("the model ran on batch 2") for n in result.notes)
    assert result.coverage.gradient["eval"].outputs_mapped == 8
    band = torch.eye(8, dtype=torch.bool) | torch.eye(8, dtype=torch.bool).roll(
        1 if leaky else -1, 1
    )
    band[(7, 0) if leaky else (0, 7)] = False  # no wrap-around
    assert torch.equal(result.dependency_map.seen, band)
    assert result.mode == ("none" if leaky else "inclusive")
    if leaky:
        assert any(v.evidence == "gradient" and v.kind == "future" for v in result.violations)


def test_a_model_that_squeezes_a_batch_of_one_away():
    """``x.squeeze()`` works at batch 2 and breaks at batch 1: the note names that cause too;
    the model is strict (its convolution sees the two previous positions)."""
    result = properties.audit_model(
        come.squeezing(), grid=(10,), layout="BCT", predicts="current", max_examples=EXAMPLES
    )
    assert result.mode == "strict" and result.receptive_field.size == 2
    assert any("fails on batch 1" in n and "squeeze a batch of 1 away" in n for n in result.notes)


def test_the_batch_diagnosis_and_the_sliced_outputs():
    """After a call at batch 2, a call at batch 1 or 5 fails inside the model; the subject
    names the cause and returns, for each sample, what a batch of any size gives."""
    model = come.cached_padding()
    subject = make_subject(model, grid=(5, 5), layout="BCHW")
    x = subject.draw_inputs(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = subject(x[:2])
        assert subject.batch is None
        y = subject(x)
    assert subject.batch == 2
    assert subject.notes[0].startswith("the model ran on batch 2 and fails on batch 5")
    assert "Sizes of tensors must match" in subject.notes[0]
    with torch.no_grad():
        fresh = [make_subject(come.cached_padding(), grid=(5, 5), layout="BCHW") for _ in x]
        alone = torch.cat([f(x[i : i + 1]) for i, f in enumerate(fresh)])
    torch.testing.assert_close(y, alone)
    torch.testing.assert_close(y[:2], first)


def test_a_batch_fixed_beforehand(tmp_path, capsys):
    """A cache sized before the audit (the model ran at batch 5 in training): the audit's very
    first call fails and cannot be compared with an earlier one; ``--batch 5`` (``batch=5``)
    runs every pass at that size."""
    model = come.cached_padding()
    model(torch.zeros(5, 1, 5, 5))
    options = dict(grid=(5, 5), layout="BCHW", predicts="current", max_examples=EXAMPLES)
    with pytest.raises(AdapterError, match="Sizes of tensors must match"):
        properties.audit_model(model, **options)
    result = properties.audit_model(model, batch=5, **options)
    assert result.mode == "strict" and result.causal
    argv = [f"{COME}:cached_padding", "--shape", "5", "5", "--layout", "BCHW", "--batch", "2"]
    code, data, _, _ = run_cli(argv, tmp_path, capsys)
    assert code == 0 and data["mode"] == "strict"


# ---------------------------------------------------------------------------------------------
# Outputs that are not one prediction per position; the forward hook


def test_last_position_only_says_so_and_the_hook_fixes_it(tmp_path, capsys):
    """nanoGPT returns ``logits[:, [-1], :]`` without targets: the error says so and writes
    the hook (its forward takes ``targets``); with ``--forward`` the audit passes (inclusive),
    and the same hook on a GPT without its causal mask fails (the hook hides nothing)."""
    base = ["--length", "12", "--vocab", "11", "--layout", "BT", "--predicts", "next"]
    line = error_line([f"{COME}:last_only_gpt", *base, "--output", "0"], tmp_path, capsys)
    assert "shape (2, 1, 11): one position of the 12 given" in line
    assert "nanoGPT" in line and "def FN(model, x): return model(x, targets=x)[0]" in line
    hook = ["--forward", f"{COME}:all_logits"]
    code, data, _, _ = run_cli([f"{COME}:last_only_gpt", *base, *hook], tmp_path, capsys)
    assert code == 0 and data["mode"] == "inclusive"
    code, data, _, _ = run_cli(
        [f"{COME}:last_only_gpt_without_mask", *base, *hook], tmp_path, capsys
    )
    assert code == 1 and data["mode"] == "none"


def test_the_hook_in_the_api():
    result = properties.audit_model(
        come.last_only_gpt(),
        grid=(12,),
        vocab=come.VOCAB,
        layout="BT",
        predicts="next",
        forward=lambda model, x: model(x, targets=x)[0],
        max_examples=EXAMPLES,
    )
    assert result.mode == "inclusive" and result.causal
    assert result.receptive_field.size == 12  # output 11 sees every token


def test_folded_batch_and_time_says_so_and_the_hook_fixes_it(tmp_path, capsys):
    """A WaveNet without padding returns ``(B * (T - 3), K)``: the error counts the samples,
    the positions and the missing ones, and writes the padding for this layout; with the hook
    the audit measures the receptive field of 4 (kernel 2, dilations 1 and 2)."""
    base = ["--length", "12", "--layout", "BCT", "--predicts", "next"]
    line = error_line([f"{COME}:folded_wavenet", *base], tmp_path, capsys)
    assert "shape (18, 7): batch and positions folded into one axis" in line
    assert "(2 samples x 9 positions), 9 of the 12 positions given: the first 3 are missing" in line
    assert "model(F.pad(x, (3, 0)))" in line
    argv = [f"{COME}:folded_wavenet", *base, "--forward", f"{COME}:unfold"]
    code, data, _, _ = run_cli(argv, tmp_path, capsys)
    assert code == 0 and data["mode"] == "inclusive"
    assert data["receptive_field"]["size"] == 4


def test_fewer_positions_names_the_padding_for_the_layout():
    """``(B, L, K)`` with ``L < T``, channels-last input: the pad covers the time axis."""
    model = torch.nn.Conv1d(1, 3, 4)  # no padding: 12 - 3 positions
    with pytest.raises(AdapterError, match=r"9 of the 12 positions given .*F.pad\(x, \(3, 0\)\)"):
        properties.audit_model(model, grid=(12,), layout="BCT", max_examples=EXAMPLES)

    def channels_last(x):
        return model(x.transpose(1, 2)).transpose(1, 2)

    with pytest.raises(AdapterError, match=r"F.pad\(x, \(0, 0, 3, 0\)\)"):
        properties.audit_model(channels_last, grid=(12,), layout="BTC", max_examples=EXAMPLES)


def test_a_bad_forward_spec_is_one_line(tmp_path, capsys):
    base = [f"{COME}:folded_wavenet", "--length", "12", "--layout", "BCT"]
    assert "no attribute 'nope'" in error_line(
        [*base, "--forward", f"{COME}:nope"], tmp_path, capsys
    )
    assert "not a function" in error_line([*base, "--forward", f"{COME}:VOCAB"], tmp_path, capsys)
    line = error_line([*base, "--forward", f"{COME}:all_logits"], tmp_path, capsys)
    assert "the model (through the forward hook) raised" in line


# ---------------------------------------------------------------------------------------------
# Colour PixelCNN at sub-pixel level


def colour_audit(model, **options):
    return properties.audit_model(model, **{**SUBPIXEL, **options})


def test_colour_pixelcnn_is_strict_at_subpixel_level():
    """Masks A/B over channel groups: R sees the past pixels, G also R, B also R and G of its
    own pixel. In raster+channels order the model is strict; its blind spot (the grey
    PixelCNN's, over pixels) and receptive field are measured on the sub-pixel grid."""
    result = colour_audit(
        colour.colour(), order="raster+channels", layout="BCHW->B(SC)HW", **LEVELS
    )
    assert result.mode == "strict" and result.causal, result.violations[:1]
    assert result.loss.holds and result.loss.one_pass_loss is not None  # cross-entropy per value
    assert result.subject.grid == (3, 5, 5)
    assert result.blind_spot is not None and result.blind_spot.size > 0
    assert result.blind_spot.pixels.shape == (5, 5)
    rf = result.receptive_field
    assert rf.size == 3 * 25 - 1  # the last B value sees every value before it
    assert not any("axis 0" in n for n in result.notes)  # the channel axis is never "clipped"


def test_the_five_axis_output_reads_with_s_in_the_output_layout():
    result = colour_audit(colour.five_axes(), order="raster+channels", layout="BCHW->BCSHW")
    assert result.mode == "strict" and result.causal


def test_a_planted_r_sees_g_leak_is_caught_and_blamed_on_g():
    """R's prediction sees the G value of its own pixel: a future input at sub-pixel level.
    Every future violation, from either kind of evidence, is an R output blamed on the G input
    of the same pixel."""
    result = colour_audit(
        colour.r_sees_g(), order="raster+channels", layout="BCHW->B(SC)HW", **LEVELS
    )
    assert result.mode == "none" and not result.causal and not result.loss.holds
    s = result.subject
    future = [v for v in result.violations if v.kind == "future"]
    assert {v.evidence for v in future} >= {"gradient", "perturbation"}
    for v in future:
        (c_out, *pixel_out), (c_in, *pixel_in) = s.position(v.output), s.position(v.input)
        assert (c_out, c_in) == (0, 1) and pixel_out == pixel_in, explain(s, v)


def test_at_pixel_level_the_advice_names_the_subpixel_order():
    """Audited per pixel, G and B see R of their own pixel: inclusive, and the advice says
    how to audit it at sub-pixel level, not only "a missing shift?"."""
    result = colour_audit(colour.colour())
    assert result.mode == "inclusive" and not result.causal
    present = next(v for v in result.violations if v.kind == "present")
    assert "--order raster+channels" in explain(result.subject, present)
    passed = colour_audit(colour.colour(), predicts="auto")  # inclusive passes; still advised
    assert passed.causal and "--order raster+channels" in properties.render_text(passed, "m")


def test_the_order_matters_at_subpixel_level():
    """Channels first (every R, then every G...) is not this model's order: R of a later pixel
    sees G of an earlier one, which comes after it in that order."""
    result = colour_audit(colour.colour(), order="channels+raster", layout="BCHW->B(SC)HW")
    assert result.mode == "none"
    assert result.blind_spot is None  # defined over pixels in raster order only, and said so
    assert "blind spot: defined for raster order only, not computed" in result.notes


def test_any_subpixel_order_as_a_permutation():
    """A permutation of the 75 (channel, pixel) positions is a sub-pixel order too."""
    order = torch.arange(75).reshape(3, 25).T.flatten()  # raster+channels, spelled out
    result = colour_audit(colour.colour(), order=order, layout="BCHW->B(SC)HW")
    assert result.mode == "strict"


def test_subpixel_through_the_cli(tmp_path, capsys):
    base = [f"{COLOUR}:colour", "--shape", "5", "5", "--features", "3", "--predicts", "current"]
    line = error_line([*base, "--layout", "BCHW", "--order", "raster+channels"], tmp_path, capsys)
    assert "12 values per pixel for 3 channels, 4 per sub-pixel" in line
    assert "BCHW->B(SC)HW" in line and "BCHW->B(CS)HW" in line
    argv = [*base, "--layout", "BCHW->B(SC)HW", "--order", "raster+channels"]
    code, data, text, _ = run_cli(argv, tmp_path, capsys)
    assert code == 0 and data["mode"] == "strict"
    line = error_line([f"{COLOUR}:five_axes", *base[1:], "--layout", "BCHW"], tmp_path, capsys)
    assert "5 axes for the 2-D grid (5, 5)" in line and "--layout BCHW->BCSHW" in line


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(layout="BHW", vocab=5, features=1), "tokens have no channel axis"),
        (dict(layout="BHW", features=1), "has no channel axis C"),
        (dict(layout="BCHW->BCHW"), "names the channel axis S"),
        (dict(layout="BCHW->BSWHC"), "orders the grid axes"),
    ],
)
def test_subpixel_layout_errors(options, words):
    with pytest.raises(AdapterError, match=words):
        make_subject(
            colour.colour(), grid=(5, 5), **{"features": 3, **options}, order="raster+channels"
        )
