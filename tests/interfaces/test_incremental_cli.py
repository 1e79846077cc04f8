"""``--checks incremental`` on the command line: its exit codes (0 every stepped run equals the
full pass, 1 one diverges, 2 the model cannot be stepped), ``--step``, its JSON section, its
picture, the default checks, the budget; and the plugin's ``incremental_audit`` fixture."""

import json

import incremental_models as im
import pytest
from paths import TARGETS

from properties import cli
from properties.output.report import dumps

pytest_plugins = ["pytester"]

MODELS = f"{TARGETS}/incremental_models.py"
STEP = f"{MODELS}:step"
TOKENS = ["--layout", "BT", "--vocab", str(im.VOCAB), "--length", "12"]


def run(argv, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--max-examples", "4", "--json", str(out)])
    captured = capsys.readouterr()
    return code, json.loads(out.read_text()) if out.exists() else None, captured


def test_exit_0_when_every_stepped_run_equals_the_full_pass(tmp_path, capsys):
    code, data, captured = run(
        [f"{MODELS}:tiny_lm", *TOKENS, "--checks", "incremental", "--step", STEP],
        tmp_path, capsys,
    )
    assert code == 0 and data["passed"] and data["mode"] is None
    section = data["incremental"]
    assert section["holds"] and section["divergence"] is None
    assert section["adapter"] == "HookStepper" and section["variants"] == ["the step hook step"]
    assert section["schedules"][0]["description"] == "one chunk [12]"
    assert section["hypothesis_examples"] == 4
    assert "PASS: every way of running it gives the full pass's predictions" in captured.out
    assert "incremental: holds:" in captured.out


def test_exit_1_names_the_minimal_schedule(tmp_path, capsys):
    code, data, captured = run(
        [f"{MODELS}:window_forgotten", *TOKENS, "--checks", "incremental", "--step", STEP],
        tmp_path, capsys,
    )
    assert code == 1 and not data["passed"]
    d = data["incremental"]["divergence"]
    assert d["schedule"]["description"] == "chunks [1, 11]" and d["position"] == 4
    assert d["module"]["name"] == "blocks.0.attention.out"
    assert "FAIL: a stepped (cached, chunked or streamed) run diverges" in captured.out
    assert "at position 4 on chunks [1, 11] (minimal)" in captured.out


def test_exit_2_for_a_model_that_cannot_be_stepped(tmp_path, capsys):
    code, data, captured = run(
        [f"{TARGETS}/leaky.py:same_padding", "--layout", "BCT->BCT", "--length", "12",
         "--checks", "incremental"], tmp_path, capsys,
    )
    assert code == 2 and data is None
    line = captured.err.strip()
    assert "\n" not in line and "has no step interface" in line and "--step" in line


@pytest.mark.parametrize(
    "step, problem",
    [(f"{MODELS}:VOCAB", "--step tests"), (f"{MODELS}:nope", "no attribute 'nope'")],
)
def test_a_bad_step_is_one_line(step, problem, tmp_path, capsys):
    code, _, captured = run([f"{MODELS}:tiny_lm", *TOKENS, "--checks", "incremental",
                             "--step", step], tmp_path, capsys)
    assert code == 2 and captured.err.count("\n") == 1
    assert problem.split()[-1] in captured.err


def test_shards_do_not_run_it(tmp_path, capsys):
    code, _, captured = run([f"{MODELS}:tiny_lm", *TOKENS, "--checks", "incremental",
                             "--step", STEP, "--shard", "0/2"], tmp_path, capsys)
    assert code == 2 and "does not run in shards" in captured.err


def test_a_step_hook_adds_it_to_the_default_checks(tmp_path, capsys):
    with_hook = run([f"{MODELS}:tiny_lm", *TOKENS, "--step", STEP, "--checks",
                     "causality,incremental"], tmp_path, capsys)[1]
    assert with_hook["incremental"]["holds"] and with_hook["causal"]
    from properties import make_subject
    from properties.auditing.options import AuditOptions

    subject = make_subject(im.tiny_lm(), grid=(12,), layout="BT", vocab=im.VOCAB, step=im.step)
    assert "incremental" in AuditOptions().checked(12, stepping=subject.step is not None).checks
    assert "incremental" not in AuditOptions().checked(12).checks


def test_a_failure_with_an_error_is_valid_json(tmp_path, capsys):
    code, data, _ = run([f"{TARGETS}/incremental_models.py:recurrent", "--layout", "BTC",
                         "--features", "2", "--length", "12", "--checks", "incremental",
                         "--step", f"{TARGETS}/incremental_steps.py:no_pairs"], tmp_path, capsys)
    assert code == 1
    d = data["incremental"]["divergence"]
    assert d["error"] == "ValueError: no chunk of two" and d["diff"]["dtype"] == "inf"
    dumps(data)  # allow_nan=False: every infinity is written as a string


def test_the_picture_is_drawn(tmp_path, capsys):
    pictures = tmp_path / "pictures"
    code, data, captured = run(
        [f"{MODELS}:drop_buffer", "--layout", "BCT->BCT", "--features", "2", "--length", "12",
         "--checks", "incremental", "--step", STEP, "--pictures", str(pictures)],
        tmp_path, capsys,
    )
    assert code == 1
    name = "incremental_models_drop_buffer-incremental.png"
    assert [p.name for p in pictures.iterdir()] == [name]
    assert data["pictures"] == [str(pictures / name)]


def test_a_budget_bounds_it(tmp_path, capsys):
    code, data, _ = run([f"{MODELS}:tiny_lm", *TOKENS, "--checks", "incremental", "--step",
                         STEP, "--budget", "0.001"], tmp_path, capsys)
    assert code == 0 and data["incremental"]["budgeted"]
    assert data["coverage"]["budgeted"]


def test_the_plugin_fixture(pytester):
    pytester.makepyfile(
        test_user=f"""
import sys
sys.path.insert(0, {str(TARGETS)!r})
import incremental_models as im
import pytest

pytestmark = pytest.mark.causal(grid=(10,), layout="BTC", features=2, step=im.step,
                                max_examples=3)


def test_streams(incremental_audit):
    assert incremental_audit(im.recurrent()).holds


def test_forgets(incremental_audit):
    incremental_audit(im.reset_state())
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the stepped run diverges from the full pass at position 1 on "
                                 "chunks [[]1, 9[]] (minimal)*"])
