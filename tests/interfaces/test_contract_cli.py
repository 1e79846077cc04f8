"""The contracts on the command line (``--documents``, ``--documents-as``, ``--window``,
``--window-exact``, ``--window-module``, ``--batch-independent``, ``--padding``), their exit codes
and one-line errors, and the plugin's ``--causal-batch-independent``."""

import json

import pytest
from paths import TARGETS

from properties import cli

pytest_plugins = ["pytester"]

MODELS = str(TARGETS / "contracts.py")
FLOATS = ["--layout", "BTC", "--features", "2", "--length", "12", "--predicts", "next",
          "--checks", "causality", "--max-examples", "5", "--quiet"]


def run(argv, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["audit", *argv, "--json", str(out)])
    captured = capsys.readouterr()
    return code, (json.loads(out.read_text()) if out.exists() else None), captured


@pytest.mark.parametrize(
    "target, documents, code",
    [
        ("packed_attention", "4,3,5", 0),
        ("packed_attention", "position_ids:0,1,2,3,0,1,2,0,1,2,3,4", 0),
        ("packed_attention", "cu_seqlens:0,4,7,12", 0),
        ("attention_ignoring_documents", "4,3,5", 1),
    ],
)
def test_documents_on_the_command_line(target, documents, code, tmp_path, capsys):
    argv = [f"{MODELS}:{target}", *FLOATS, "--documents", documents,
            "--documents-as", "position_ids"]
    got, data, _ = run(argv, tmp_path, capsys)
    assert got == code and data["contract"]["documents"]["lengths"] == [4, 3, 5]
    assert data["contracts"]["documents"]["passed"] is (code == 0)


def test_a_window_on_the_command_line(tmp_path, capsys):
    argv = [f"{MODELS}:sliding_window_shrunk", *FLOATS, "--window", "4"]
    assert run(argv, tmp_path, capsys)[0] == 0
    code, data, captured = run(argv + ["--window-exact"], tmp_path, capsys)
    assert code == 1 and data["contracts"]["window"]["passed"] is False
    assert "the window shrank" in captured.out


def test_per_module_windows_on_the_command_line(tmp_path, capsys):
    argv = [f"{MODELS}:two_sliding_layers", *FLOATS, "--window", "4",
            "--window-module", "layers.0", "--window-module", "layers.1=4"]
    code, data, captured = run(argv, tmp_path, capsys)
    assert code == 0 and data["contract"]["window"]["model_bound"] == 7
    assert set(data["modules"]) == {"layers.0", "layers.1"}
    assert "module layers.0 (window 4): PASS" in captured.out


def test_batch_and_padding_on_the_command_line(tmp_path, capsys):
    router = [f"{MODELS}:capacity_router", *FLOATS, "--batch-independent"]
    assert run(router, tmp_path, capsys)[0] == 1
    padded = [f"{MODELS}:shared_cache_position", "--layout", "BT", "--vocab", "20", "--length",
              "10", "--predicts", "next", "--checks", "causality", "--max-examples", "10",
              "--quiet", "--padding", "left"]
    code, data, _ = run(padded, tmp_path, capsys)
    assert code == 1 and data["contracts"]["padding"]["passed"] is False


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["--documents", "4,4"], "the documents cover 8 positions, the grid has 12"),
        (["--documents-as", "position_ids"], "none are declared"),
        (["--window-exact"], "window_exact needs a window"),
        (["--window", "2", "--window-module", "attn"], "matches no module"),
        (["--documents", "6,6", "--padding", "left"], "cannot be checked together"),
        (["--window", "0"], "expected a positive integer"),
    ],
)
def test_bad_contract_flags_are_one_line_errors(extra, problem, tmp_path, capsys):
    code, _, captured = run([f"{MODELS}:packed_attention", *FLOATS, *extra], tmp_path, capsys)
    assert code == 2 and problem in captured.err and len(captured.err.strip().splitlines()) == 1


def test_the_plugin_holds_every_model_to_batch_independence(pytester):
    pytester.makepyfile(
        test_user=f"""
        import sys
        sys.path.insert(0, {str(TARGETS)!r})
        import pytest
        import contracts as T
        from properties import assert_causal

        def test_router():
            with pytest.raises(AssertionError, match="batch contract"):
                assert_causal(T.capacity_router(), grid=(8,), layout="BTC", features=2,
                              predicts="next", checks=("causality",), max_examples=5)
        """
    )
    pytester.runpytest_inprocess("--causal-batch-independent").assert_outcomes(passed=1)
