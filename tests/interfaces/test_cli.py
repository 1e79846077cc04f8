"""The audit CLI's contract: exit codes, JSON keys, one-line errors."""

import json
import subprocess
import sys

import pytest
from paths import TARGETS

from properties import cli

LEAKY = TARGETS / "leaky.py"
KEYS = {
    "target",
    "grid",
    "predicts",
    "train",
    "mode",
    "causal",
    "violations",
    "receptive_field",
    "blind_spot",
    "loss_equivalence",
    "coverage",
    "seconds",
}


def run(argv, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--max-examples", "10", "--json", str(out)])
    captured = capsys.readouterr()
    data = json.loads(out.read_text()) if out.exists() else None
    return code, data, captured


def test_zoo_model_passes_with_its_facts(tmp_path, capsys):
    code, data, captured = run(["zoo:nettoy1d_dilated"], tmp_path, capsys)
    assert code == 0
    assert KEYS <= set(data)
    assert (data["mode"], data["causal"], data["blind_spot"]) == ("strict", True, None)
    rf = data["receptive_field"]
    assert (rf["size"], rf["span"], rf["holes"]) == (16, 31, 15)
    assert data["loss_equivalence"]["holds"]
    assert all(d["ok"] for d in data["declared"].values())
    assert captured.out.splitlines()[1].startswith("PASS")


def test_leaky_file_target_fails_with_violations(tmp_path, capsys):
    target = f"{LEAKY}:same_padding"
    code, data, captured = run([target, "--layout", "BCT->BCT", "--length", "20"], tmp_path, capsys)
    assert code == 1
    assert (data["mode"], data["causal"]) == ("none", False)
    assert all(set(v) >= {"output", "input", "evidence", "effect"} for v in data["violations"])
    assert any(v["input"] > v["output"] for v in data["violations"])
    assert "sees the future" in captured.out


@pytest.mark.parametrize("predicts, code", [("current", 1), ("next", 0), ("auto", 0)])
def test_predicts_decides_what_passes(predicts, code, tmp_path, capsys):
    argv = [f"{LEAKY}:no_shift", "--layout", "BCT->BCT", "--length", "16", "--predicts", predicts]
    got, data, _ = run(argv, tmp_path, capsys)
    assert (got, data["mode"]) == (code, "inclusive")


def test_train_flag_catches_batchnorm_over_time(tmp_path, capsys):
    argv = [f"{LEAKY}:batchnorm_over_time", "--layout", "BCT->BCT", "--length", "16"]
    assert run(argv, tmp_path, capsys)[0] == 0
    code, data, _ = run([*argv, "--train"], tmp_path, capsys)
    assert (code, data["train"], data["mode"]) == (1, True, "none")


def test_checks_not_run_are_null(tmp_path, capsys):
    argv = [f"{LEAKY}:masked_2d", "--shape", "7", "9", "--layout", "BCHW->BCHW"]
    code, data, _ = run([*argv, "--checks", "blind_spot"], tmp_path, capsys)
    assert code == 0
    assert data["mode"] is None and data["causal"] is None
    assert data["receptive_field"] is None and data["loss_equivalence"] is None
    assert data["blind_spot"]["size"] > 0
    assert isinstance(data["blind_spot"]["position"], list)  # [row, column] in 2D


def test_exact_covers_everything(tmp_path, capsys):
    argv = [f"{LEAKY}:causal", "--layout", "BCT->BCT", "--length", "12", "--exact"]
    code, data, _ = run(argv, tmp_path, capsys)
    cov = data["coverage"]
    assert code == 0 and cov["exhaustive"]
    assert cov["perturbation"]["eval"]["cuts_swept"] == 12
    assert cov["gradient"]["inference"]["outputs_mapped"] == 12


@pytest.mark.parametrize(
    "argv, words",
    [
        (["zoo:nope"], "unknown model"),
        ([f"{LEAKY}:causal"], "--length"),
        ([f"{LEAKY}:causal", "--length", "8", "--checks", "speed"], "unknown check"),
        ([f"{LEAKY}:missing", "--length", "8"], "no attribute"),
        (["no_such_module_xyz:model", "--length", "8"], "no module"),
        (["justaname", "--length", "8"], "names no attribute"),
        ([f"{LEAKY}:causal", "--length", "0"], "positive"),
        ([f"{LEAKY}:causal", "--length", "8", "--layout", "BCHW"], "grid axes"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, words, tmp_path, capsys):
    code, _, captured = run(argv, tmp_path, capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in captured.err


def test_zoo_runs_every_model_and_prints_a_table(tmp_path, capsys, monkeypatch):
    from properties.extra import zoo

    monkeypatch.setattr(zoo, "names", lambda: ["nettoy1d", "nettoy1d_dilated"])
    code, data, captured = run(["zoo", "--checks", "causality,receptive_field"], tmp_path, capsys)
    assert code == 0
    assert [d["target"] for d in data] == ["zoo:nettoy1d", "zoo:nettoy1d_dilated"]
    assert "zoo:nettoy1d_dilated" in captured.out.splitlines()[-1]


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "properties", "audit", "zoo:nettoy1d", "--max-examples", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout
