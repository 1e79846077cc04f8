"""Audits at real sizes: a memory budget, a time budget, progress, small JSON, CLI shards."""

import io
import json
import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from properties import audit, cli, make_subject
from properties import progress as bars
from properties.auditing import time_budget as plan
from properties.auditing.evidence_plan import stratified
from properties.auditing.options import DEFAULT_POLICY, DYNAMIC
from properties.errors import AdapterError
from properties.evidence.perturbation import Runner, chunk_copies
from properties.extra.architectures import Architecture, PlantedLeak
from properties.output.report import coverage_line, render_text, to_dict
from properties.subject import memory

SECONDS_PER_SAMPLE = 0.004


class Slow(nn.Module):
    """A causal net whose forward pass costs a known time per sample (a stand-in for a big
    model: the planner must read the cost, not guess it)."""

    def __init__(self):
        super().__init__()
        self.net = Architecture(1, (2, 2), (1, 2)).build()

    def forward(self, x):
        time.sleep(SECONDS_PER_SAMPLE * x.shape[0])
        return self.net(x)


def test_the_plan_follows_the_measured_cost_per_pass():
    grid = (4000,)  # beyond the exhaustive size: 256 stratified cuts without a budget
    budget = 2.0
    result = audit(make_subject(Slow(), grid=grid, layout="BCT"), budget=budget, max_examples=500,
                   checks=DYNAMIC)  # the sampled plan: no proof to lead
    cov = result.coverage
    assert cov.budget_seconds == budget
    assert cov.forward_seconds >= SECONDS_PER_SAMPLE
    report = result.perturbations["eval"]
    swept = report.cuts_swept
    # the sweep got its share of the time left, at the measured cost per cut (plus first/last)
    assert 2 <= swept <= plan.SWEEP_SHARE * budget / SECONDS_PER_SAMPLE + 2
    assert swept < 256
    # Hypothesis: far fewer than the 500 allowed, at least one forward pass each
    assert report.examples <= budget / SECONDS_PER_SAMPLE
    assert report.examples < 2 * 500
    assert cov.budgeted and cov.cuts_stratified
    line = coverage_line(to_dict(result, "slow")["coverage"])
    assert f"swept {swept} of 4000 cuts, stratified" in line
    assert f"Hypothesis {report.examples} examples" in line
    assert "within a budget of 2 s" in line


def test_without_a_budget_the_policy_is_unchanged():
    subject = make_subject(Architecture(1, (2, 2), (1, 2)).build(), grid=(40,), layout="BCT")
    result = audit(subject, max_examples=10)  # proof first: the confirmation's cuts
    cov = result.coverage
    assert cov.plan == "confirmation" and not cov.budgeted and cov.budget_seconds is None
    assert result.perturbations["eval"].cuts_swept == len(
        stratified(40, DEFAULT_POLICY.confirm_cuts, 1)
    )
    sampled = audit(subject, max_examples=10, policy=replace(DEFAULT_POLICY, proof_first=False))
    assert sampled.coverage.exhaustive and sampled.coverage.budget_seconds is None
    assert sampled.perturbations["eval"].cuts_swept == 40


def test_a_budget_still_catches_a_leak():
    leaky = PlantedLeak(Architecture(1, (2, 2), (1, 2)).build(), "late", start=0)
    result = audit(make_subject(leaky, grid=(3000,), layout="BCT"), budget=3.0, max_examples=50)
    assert result.mode == "none" and not result.passed


def test_bad_budgets_are_one_line_errors():
    subject = make_subject(Architecture(1, (2, 2), (1, 2)).build(), grid=(16,), layout="BCT")
    with pytest.raises(AdapterError, match="positive"):
        audit(subject, budget=0)
    with pytest.raises(AdapterError, match="shards"):
        audit(subject, budget=5, shard=(0, 2))


# ---------------------------------------------------------------------------------------------
# Memory


class Wide(nn.Module):
    """A causal model with a wide output (like a language model's logits over a vocabulary)."""

    def __init__(self, k=2000):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.head = nn.Linear(8, k)

    def forward(self, tokens):
        return self.head(self.emb(tokens))


def test_chunks_shrink_with_the_memory_budget():
    subject = make_subject(Wide(), grid=(256,), layout="BT", vocab=50, predicts="next")
    sizes = []
    for gigabytes in (1.0, 0.1, 0.02):
        with memory.limited(gigabytes):
            runner = Runner(subject, seed=0, pool_size=1)
            sizes.append(chunk_copies(runner, 10_000))
            per_copy = runner.cost.per_copy
    output = 256 * 2000 * 4
    assert per_copy >= output  # the measured cost holds at least the output
    assert sizes[0] > sizes[1] > sizes[2] >= 1
    assert sizes[2] * per_copy <= 0.02 * memory.GIB


def test_an_impossible_budget_is_one_line_error():
    subject = make_subject(Wide(), grid=(256,), layout="BT", vocab=50, predicts="next")
    with pytest.raises(AdapterError) as info:
        audit(subject, memory=0.001, max_examples=5)
    message = str(info.value)
    assert "\n" not in message
    assert "over the memory budget" in message and "--memory" in message


def test_a_memory_budget_keeps_the_verdict():
    subject = make_subject(Wide(200), grid=(64,), layout="BT", vocab=50, predicts="next")
    roomy = audit(subject, max_examples=10)
    tight = audit(subject, max_examples=10, memory=0.003)
    assert roomy.mode == tight.mode == "inclusive"
    assert roomy.perturbations["eval"].sweep.keys() == tight.perturbations["eval"].sweep.keys()


# ---------------------------------------------------------------------------------------------
# Progress and JSON


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal_or_when_asked():
    assert not bars.wanted(None, io.StringIO())
    assert bars.wanted(None, TTY())
    assert bars.wanted(True, io.StringIO())
    assert not bars.wanted(False, TTY())


@pytest.mark.parametrize("asked, shown", [(True, True), (None, False), (False, False)])
def test_progress_shows_phases_when_asked(asked, shown, monkeypatch):
    stream = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(bars, "DELAY", 0.0)
    subject = make_subject(Slow(), grid=(64,), layout="BCT")
    audit(subject, max_examples=5, progress=asked)
    text = stream.getvalue()
    assert ("sweep" in text and "pass" in text) == shown


def test_cli_progress_off_when_stderr_is_not_a_terminal(tmp_path, capsys):
    code = cli.main(["audit", "zoo:nettoy1d", "--max-examples", "5"])
    assert code == 0
    assert capsys.readouterr().err == ""


def test_json_summarizes_per_position_lists(tmp_path, capsys):
    small, full = tmp_path / "small.json", tmp_path / "full.json"
    argv = ["audit", "zoo:nettoy1d", "--max-examples", "5", "--quiet", "--exact"]  # 64 rows
    assert cli.main([*argv, "--json", str(small)]) == 0
    assert cli.main([*argv, "--json", str(full), "--json-full"]) == 0
    a = json.loads(small.read_text())["loss_equivalence"]
    b = json.loads(full.read_text())["loss_equivalence"]
    assert a["positions_total"] == b["positions_total"] == len(b["positions"]) == 64
    assert len(a["positions"]) == 20 and a["positions_listed"] == "worst"
    worst = max(r["max_abs_diff"] for r in b["positions"])
    assert a["positions"][0]["max_abs_diff"] == worst
    assert "over 64 positions" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Shards on the command line


def _report(path):
    data = json.loads(path.read_text())
    data.pop("seconds")
    if data.get("certificate"):  # the proof travels whole from shard 0; its time is its own
        data["certificate"].pop("seconds")
    return data


@pytest.mark.parametrize(
    "target",
    [
        ["zoo:nettoy1d"],
        ["tests/targets/leaky.py:same_padding", "--layout", "BCT->BCT", "--length", "24"],
        # a sub-pixel subject: its blind spot and clipping note read the subject's channel axis
        [
            "tests/targets/colour_pixelcnn.py:colour",
            *("--shape", "5", "5", "--features", "3", "--predicts", "current"),
            *("--layout", "BCHW->B(SC)HW", "--order", "raster+channels"),
        ],
        # tokens: the counterexample names its token
        [
            "tests/targets/hf_models.py:gpt2", "--layout", "BT", "--vocab", "50",
            *("--length", "12", "--output", "logits", "--predicts", "current"),
        ],
    ],
)
def test_cli_shards_merge_into_the_unsharded_report(target, tmp_path, capsys):
    # --exact: the sweep and the map split over the shards (a proof-first plan is gathered
    # whole by shard 0: tests/auditing/test_proof_first.py)
    argv = ["audit", *target, "--max-examples", "10", "--quiet", "--exact"]
    whole = tmp_path / "whole.json"
    code = cli.main([*argv, "--json", str(whole)])
    parts = [tmp_path / f"part{i}.json" for i in range(3)]
    for i, part in enumerate(parts):
        cli.main([*argv, "--shard", f"{i}/3", "--json", str(part)])
        # every shard has work of its own: the chunks are spread
        assert json.loads(part.read_text())["shard_evidence"]["perturbations"]["eval"]["sweep"] or (
            json.loads(part.read_text())["coverage"]["perturbation"]["eval"]["cuts_swept"] > 0
        )
    capsys.readouterr()
    merged = tmp_path / "merged.json"
    assert cli.main(["merge", *map(str, parts), "--json", str(merged)]) == code
    text = capsys.readouterr().out
    assert _report(merged) == _report(whole)
    assert text.splitlines()[1].startswith("PASS" if code == 0 else "FAIL")


def test_merge_refuses_incomplete_or_foreign_parts(tmp_path, capsys):
    argv = ["audit", "zoo:nettoy1d", "--max-examples", "5", "--quiet"]
    part = tmp_path / "part0.json"
    cli.main([*argv, "--shard", "0/2", "--json", str(part)])
    plain = tmp_path / "plain.json"
    cli.main([*argv, "--json", str(plain)])
    capsys.readouterr()
    assert cli.main(["merge", str(part)]) == 2
    assert "shards 0..N-1" in capsys.readouterr().err
    assert cli.main(["merge", str(plain)]) == 2
    assert "--shard" in capsys.readouterr().err
    assert cli.main(["audit", "zoo:nettoy1d", "--shard", "2/2"]) == 2
    assert "I/N" in capsys.readouterr().err


def test_report_line_names_the_coverage():
    subject = make_subject(Architecture(1, (2, 2), (1, 2)).build(), grid=(24,), layout="BCT")
    text = render_text(audit(subject, max_examples=5), "net")
    swept = len(stratified(24, DEFAULT_POLICY.confirm_cuts, 1))
    assert f"coverage: proved by the certificate; confirmed by: swept {swept} of 24 cuts, " in text
    text = render_text(audit(subject, max_examples=5, checks=DYNAMIC), "net")  # no proof
    assert "coverage: swept 24 of 24 cuts; Hypothesis" in text
    assert torch.is_tensor(subject.ranks)


def test_assert_causal_takes_a_memory_budget():
    from properties import assert_causal

    with pytest.raises(AdapterError, match="--memory"):
        assert_causal(Wide(), grid=(256,), layout="BT", vocab=50, predicts="next", memory=0.001)
    result = assert_causal(
        Wide(200), grid=(64,), layout="BT", vocab=50, predicts="next", memory=0.01, max_examples=5
    )
    assert result.mode == "inclusive"


class FaintLeak(Wide):
    """Sees the next token, faintly: a change far below 1% of the outputs' scale, which only a
    float64 confirmation can tell from rounding."""

    def forward(self, tokens):
        ahead = self.emb(tokens.roll(-1, 1)).sum(-1, keepdim=True)
        return self.head(self.emb(tokens)) + 1e-5 * ahead


def test_a_float64_confirmation_that_does_not_fit_is_said():
    subject = make_subject(FaintLeak(), grid=(256,), layout="BT", vocab=50, predicts="next")
    with memory.limited(1.0):
        runner = Runner(subject, seed=0, pool_size=1)
        runner.pool(0)
    between = 1.5 * runner.cost.per_copy / memory.GIB  # float32 fits, float64 (twice) does not
    result = audit(subject, memory=between, max_examples=5, checks=["causality"])
    assert result.mode == "none"
    assert any("without a float64 confirmation" in n for n in result.notes)
    # nor does a float64 VJP: said without building the copy and probing it
    assert any("float64 VJP pass (1 input) needs at least" in n for n in result.notes)
    roomy = audit(subject, max_examples=5, checks=["causality"])
    assert roomy.mode == "none"
    assert not any("without a float64 confirmation" in n for n in roomy.notes)
