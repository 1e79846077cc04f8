"""The pytest plugin, seen from a user's test suite: pytester runs small test files that use
``assert_causal``, the ``causal_audit`` fixture, the ``causal`` marker and the command-line
options, and we read their outcomes and failure output."""

import subprocess
import sys
import textwrap

import pytest

# runpytest_inprocess forgets, after each run, the modules first imported during it; the harness
# must then be imported out here, once, or each run would get its own copy of the Subject class.
import properties.extra.architectures  # noqa: F401
import properties.output.report  # noqa: F401  (imports audit, subject, causality, strategies...)
import properties.testing  # noqa: F401

pytest_plugins = ["pytester"]

# A user's model, the way the README's example imports it: causal dilated convs, BCT -> BTC.
MYWAVENET = """
import torch
import torch.nn.functional as F
from torch import nn


class MyWaveNet(nn.Module):
    def __init__(self, channels=8, dilations=(1, 2, 4, 8)):
        super().__init__()
        torch.manual_seed(0)
        self.dilations = dilations
        self.input = nn.Conv1d(1, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, 2, dilation=d) for d in dilations)
        self.head = nn.Conv1d(channels, 4, 1)

    def forward(self, x):  # (B, 1, T) -> (B, T, 4)
        x = torch.tanh(self.input(F.pad(x, (1, -1))))  # shift: hide the present
        for d, conv in zip(self.dilations, self.convs):
            x = torch.tanh(conv(F.pad(x, (d, 0)))) + x
        return self.head(x).permute(0, 2, 1)
"""

# Small nets from the harness's own controls; each audit takes about a second.
NETS = """
from properties.extra.architectures import Architecture


def net(bug=None):
    return Architecture(1, (2, 2), (1, 2), bug=bug).build()
"""


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(mywavenet=MYWAVENET, nets=NETS)
    return pytester


def test_the_readme_example_passes_verbatim_and_tells_the_receptive_field(suite):
    suite.makepyfile(
        test_readme="""
        from mywavenet import MyWaveNet
        from properties import assert_causal
        def test_my_model_is_causal():
            model = MyWaveNet()
            assert_causal(model, grid=(256,), layout="BCT->BTC", predicts="current")
        """,
        test_result="""
        from mywavenet import MyWaveNet
        from properties.testing import assert_causal
        def test_receptive_field():
            result = assert_causal(MyWaveNet(), grid=(64,), layout="BCT->BTC", max_examples=3)
            assert result.mode == "strict"
            assert (result.receptive_field.size, result.receptive_field.span) == (16, 16)
        """,
    )
    suite.runpytest_inprocess().assert_outcomes(passed=2)


def test_a_leaky_model_fails_with_a_readable_sentence(suite):
    suite.makepyfile(
        test_user="""
        from nets import net
        from properties import assert_causal
        def test_leaky():
            model = net("no_shift")
            assert_causal(model, grid=(64,), layout="BCT", predicts="current", max_examples=10)
        """
    )
    result = suite.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * prediction at position 0 changed by * when positions of rank >= 0 were "
            "replaced: the model sees the present (a missing shift?)",
            "E * Mode: inclusive (predicts='current' needs strict)",
            "E * Violations: * (0 future, * present; evidence: gradient, perturbation)",
            "E * Minimal counterexample (present, inference): positions of rank >= 0 *",
            "E * Evidence: gradients (inference): *",
        ]
    )
    # __tracebackhide__: the traceback ends on the user's line, not inside the harness.
    result.stdout.fnmatch_lines(["> * assert_causal(model, grid=(64,)*"])
    assert "failure_summary" not in result.stdout.str()


def test_causal_train_turns_a_batchnorm_over_time_model_from_pass_to_fail(suite):
    suite.makepyfile(
        test_user="""
        from nets import net
        from properties import assert_causal
        def test_batchnorm():
            model = net("batchnorm_over_time")
            assert_causal(
                model, grid=(64,), layout="BCT", predicts="current", checks=("causality",),
                max_examples=3,
            )
        """
    )
    suite.runpytest_inprocess().assert_outcomes(passed=1)
    result = suite.runpytest_inprocess("--causal-train")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E * the model sees the future in training mode (input *); normalization statistics*"]
    )


def test_causal_exact_reaches_the_coverage(suite):
    # 1100 positions: more than the audit sweeps exhaustively unless asked to.
    user_test = """
        from nets import net
        def test_coverage(causal_audit):
            result = causal_audit(
                net(), grid=(1100,), layout="BCT", checks=("causality",), max_examples=3
            )
            assert result.exact is {exact}
            assert result.coverage.exhaustive is {exact}
            assert (result.perturbations["eval"].cuts_swept == 1100) is {exact}
        """
    suite.makepyfile(test_user=user_test.format(exact=False))
    suite.runpytest_inprocess().assert_outcomes(passed=1)
    suite.makepyfile(test_user=user_test.format(exact=True))
    suite.runpytest_inprocess("--causal-exact").assert_outcomes(passed=1)


def test_the_marker_sets_per_test_defaults_and_calls_override_them(suite):
    suite.makepyfile(
        test_user="""
        import pytest
        from nets import net

        pytestmark = pytest.mark.causal(layout="BCT", checks=("causality",), max_examples=3)

        @pytest.mark.causal(grid=(64,), predicts="current")
        class TestMarked:
            def test_causal(self, causal_audit):
                assert causal_audit(net()).subject.grid == (64,)

            def test_sees_the_present(self, causal_audit):
                with pytest.raises(AssertionError, match="sees the present"):
                    causal_audit(net("no_shift"))

            def test_the_call_wins(self, causal_audit):
                result = causal_audit(net("no_shift"), predicts="next", checks=("causality",))
                assert result.mode == "inclusive"

            @pytest.mark.causal(train=True)
            def test_the_closest_marker_adds(self, causal_audit):
                with pytest.raises(AssertionError, match="in training mode"):
                    causal_audit(net("batchnorm_over_time"))
        """
    )
    suite.runpytest_inprocess().assert_outcomes(passed=4)


def test_the_marker_takes_keywords_only(suite):
    suite.makepyfile(
        test_user="""
        import pytest
        @pytest.mark.causal((6,))
        def test_positional(causal_audit):
            pass
        """
    )
    result = suite.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*takes keywords only*"])


def test_the_options_reach_xdist_workers(suite, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on a small machine
    suite.makepyfile(
        test_user="""
        import os
        import pytest
        from properties.testing import DEFAULTS

        @pytest.mark.parametrize("i", range(4))
        def test_defaults_on_every_worker(i):
            assert os.environ["PYTEST_XDIST_WORKER"].startswith("gw")
            assert DEFAULTS == {"train": True, "exact": True}

        def test_an_audit_in_a_worker():
            from nets import net  # torch: only on the worker that runs this test
            from properties import assert_causal
            model = net("batchnorm_over_time")
            assert_causal(model, grid=(64,), layout="BCT", predicts="current", max_examples=5)
        """
    )
    result = suite.runpytest_subprocess("-n", "2", "--causal-train", "--causal-exact")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["E * the model sees the future in training mode*"])


def test_help_lists_the_options_without_importing_torch(pytester):
    script = textwrap.dedent(
        """
        import sys
        import pytest
        pytest.main(["--help"])
        print("torch imported:", "torch" in sys.modules)
        print("plugin loaded:", "properties.plugin" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "--causal-train" in out and "--causal-exact" in out
    assert "plugin loaded: True" in out
    assert "torch imported: False" in out


def test_the_marker_is_registered(pytester):
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.causal(**kwargs): per-test defaults*"])


def test_assert_causal_prove_needs_a_proof():
    from properties import assert_causal
    from properties.extra.architectures import Architecture

    arch = Architecture(1, (2, 2), (1, 2), seed=1)
    result = assert_causal(arch.build(), grid=arch.grid, layout=arch.layout, prove=True)
    assert result.certificate.proved and result.checks == ("certificate",)
    leak = Architecture(1, (2, 5), (1, 1), bug="same_padding")
    with pytest.raises(AssertionError, match="certificate does not prove it"):
        assert_causal(leak.build(), grid=leak.grid, layout=leak.layout, prove=True)
