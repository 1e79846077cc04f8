"""properties/extra/steppers.py: the lecture's cached steppers (causal/incremental.py), found by
the incremental check and proven equal to the full pass on every schedule it runs; and a
stepper planted to read the next input is caught."""

import pytest
import torch

import causal.incremental
from properties import cli
from properties.evidence.incremental import incremental_evidence
from properties.extra import steppers as lecture
from properties.extra import zoo

GRIDS = {
    "nettoy1d": (16,),
    "nettoy1d_dilated": (24,),
    "wavenet": (24,),
    "pixelcnn": (5, 5),
    "pixelcnn_pe": (5, 5),
    "pixelcnn_gated": (5, 5),
    "pixelcnn_masked": (5, 5),
}


def zoo_evidence(name, **options):
    subject = zoo.zoo_subject(name, GRIDS[name])
    subject(subject.draw_inputs(1, torch.Generator().manual_seed(0)))
    return incremental_evidence(subject, max_examples=options.pop("max_examples", 5), **options)


@pytest.mark.parametrize("name", GRIDS)
def test_our_cached_steppers_pass(name):
    """In the model's float32, chunks of any size, prefix reuse and save/restore; images in
    raster order over flat positions. The positions not given yet are NaN in the stepper's
    input, so a stepper that read them would show."""
    report = zoo_evidence(name)
    assert report.holds, report.divergence
    assert report.variants == [lecture.LectureStepper.name]
    assert report.examples == 5  # every draw counted; a repeat of a schedule is not rerun
    assert report.fixed < len(report.tried) <= report.fixed + 5
    assert report.module is None


def test_a_stepper_that_reads_the_next_input_is_caught(monkeypatch):
    """The one-step shift patched to read ``x_{t+1}``: a NaN (an input not given yet) at the end
    of every chunk but the last."""
    shift = causal.incremental.previous_1d

    def peeks(model, x, t):
        return shift(model, x, min(t + 2, x.shape[2]))

    monkeypatch.setattr(causal.incremental, "previous_1d", peeks)
    report = zoo_evidence("nettoy1d")
    d = report.divergence
    assert d is not None and d.position == 0
    # the stepper computes with the weights, outside the model's modules (it calls only the
    # input normalization, one position at a time)
    assert report.module["name"] is None
    assert report.module["reason"].startswith("no submodule's output diverges")


def test_the_cli_checks_a_zoo_model(capsys):
    code = cli.main(["audit", "zoo:nettoy1d", "--length", "16", "--checks", "incremental",
                     "--max-examples", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS: every way of running it gives the full pass's predictions" in out
    assert "through the lecture's cached stepper (causal.incremental)" in out
