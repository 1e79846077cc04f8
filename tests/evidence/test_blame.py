"""Blame without a certificate: forward hooks on the failing counterexample find the first module
whose output shows the dependency while none of its inputs does, at the line that called it
(or at its own ``forward`` when the model's own code holds the leak). And the frames a blame
keeps: the model's code only, never torch's, the harness's, or the test that ran the audit."""

import linecache
import os

import pytest
import torch
import torch.nn.functional as F
import wild_leaks
from torch import nn

from properties import make_subject
from properties.auditing.locate import base_pool
from properties.evidence import blame
from properties.evidence.perturbation import Runner
from properties.evidence.replacements import ZEROS, Perturbation, apply
from properties.extra import architectures
from properties.extra.architectures import Architecture


def hooks_blame(model, options, kind, cut, predicts="current", train=False, seed=0):
    subject = make_subject(model, predicts=predicts, **options)
    x = base_pool(subject, seed, 0, 2 if train else 1)
    x1 = apply(subject, x, Perturbation(cut, ZEROS, 0.0, seed=cut))
    return blame.by_modules(subject, x, x1, kind=kind, cut=cut, train=train, seed=seed)


def line(b) -> str:
    return linecache.getline(b.file, b.line)


ARCH = {"grid": (12,), "layout": "BCT->BCT"}


def test_a_same_padded_layer_is_found_at_the_line_that_calls_it():
    arch = Architecture(1, (2, 5), (1, 1), bug="same_padding")
    b = hooks_blame(arch.build(), ARCH, "future", cut=6)
    assert (b.source, b.module, b.module_type, b.op) == ("modules", "layers.1", "Conv1d", None)
    assert "x = torch.tanh(layer(x))" in line(b)


def test_a_missing_shift_is_found_at_the_first_layer_the_input_reaches():
    arch = Architecture(1, (2, 2), (1, 2), bug="no_shift")
    b = hooks_blame(arch.build(), ARCH, "present", cut=6)
    assert b.module == "input" and "x = self.input(x)" in line(b)


def test_batchnorm_over_time_is_found_in_training_mode_only():
    arch = Architecture(1, (2, 2), (1, 2), bug="batchnorm_over_time")
    assert hooks_blame(arch.build(), ARCH, "future", cut=6) is None  # eval: no leak to show
    b = hooks_blame(arch.build(), ARCH, "future", cut=6, train=True)
    assert b.module == "norm" and "x = self.norm(x)" in line(b)


def test_a_leak_in_the_models_own_code_is_put_on_its_forward():
    factory, options = wild_leaks.LEAKS["mean_over_time"]
    b = hooks_blame(factory(), options, "future", cut=4, predicts="next")
    assert (b.module, b.module_type) == ("", "MeanOverTime")
    assert line(b).strip().startswith("def forward(self, x)")


def test_a_leak_between_modules_is_put_on_the_module_that_shows_it():
    # module granularity: the reflect padding is plain code, its convolution shows the leak
    factory, options = wild_leaks.LEAKS["reflect_padding"]
    b = hooks_blame(factory(), options, "future", cut=1, predicts="next")
    assert b.module == "conv" and "self.conv(x)" in line(b)


def test_a_causal_model_has_nothing_to_blame():
    arch = Architecture(1, (2, 2), (1, 2))
    assert hooks_blame(arch.build(), ARCH, "future", cut=6) is None
    assert hooks_blame(arch.build(), ARCH, "present", cut=6) is None


class Drifting(nn.Module):
    """A strict conv whose output drifts by 1e-6 a call at every position (a counter no seed
    resets), plus, with ``leak``, ``leak * x_{t+1}``."""

    def __init__(self, leak: float = 0.0):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 2)
        self.leak, self.calls = leak, 0

    def forward(self, x):
        self.calls += 1
        y = self.conv(F.pad(x, (2, -1))) + 1e-6 * self.calls
        return y + self.leak * F.pad(x, (0, 1))[..., 1:]


def test_a_change_within_the_modules_own_drift_is_no_dependency():
    options = {"grid": (8,), "layout": "BCT"}
    assert hooks_blame(Drifting(), options, "future", cut=4) is None  # 2e-6 < 4 x 1e-6
    b = hooks_blame(Drifting(leak=1e-3), options, "future", cut=4)
    assert (b.module, b.module_type) == ("", "Drifting")


def test_the_base_inputs_are_the_perturbation_evidences():
    subject = make_subject(Architecture(1, (2,), (1,)).build(), **ARCH)
    for pool, size in ((0, 1), (3, 2)):
        runner = Runner(subject, seed=5, pool_size=size)
        assert torch.equal(base_pool(subject, 5, pool, size), runner.pool(pool)[0])


def test_model_code_is_neither_torch_nor_the_harness_nor_the_stdlib():
    assert not blame.is_model_code(torch.nn.functional.__file__)
    assert not blame.is_model_code(blame.__file__)
    assert not blame.is_model_code(os.__file__)
    assert not blame.is_model_code("<frozen importlib._bootstrap>")
    assert blame.is_model_code(architectures.__file__)  # the planted bugs are models
    assert blame.is_model_code(wild_leaks.__file__)
    assert blame.is_model_code(__file__)


def test_the_frames_stop_at_the_harness_call_of_the_model():
    # this test file is model code too: its frames below the harness's call must not be kept
    factory, options = wild_leaks.LEAKS["group_norm_over_time"]
    b = hooks_blame(factory(), options, "future", cut=4, predicts="next")
    assert [f.file for f in b.chain] == [wild_leaks.__file__]
    assert b.where() == f"{blame.relative(wild_leaks.__file__)}:{b.line}"


def test_a_blame_survives_its_dict():
    arch = Architecture(1, (2, 5), (1, 1), bug="same_padding")
    b = hooks_blame(arch.build(), ARCH, "future", cut=6)
    assert blame.Blame.from_dict(b.as_dict()) == b


@pytest.mark.parametrize("shape, grid, axes", [
    ((1, 4, 12), (12,), [2]),
    ((1, 12, 12), (12,), None),  # attention scores: ambiguous
    ((1, 4, 13), (12,), None),  # a padded sequence: no position axis
    ((1, 3, 4, 5), (4, 5), [2, 3]),
    ((1, 20, 8), (4, 5), [1]),  # flattened positions
])
def test_position_axes(shape, grid, axes):
    assert blame.position_axes(shape, grid) == axes


def test_an_installed_librarys_file_is_named_from_its_import_root(tmp_path):
    assert blame.relative(torch.nn.functional.__file__) == os.path.join("torch", "nn",
                                                                         "functional.py")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert blame.relative(__file__, root=repo) == os.path.join("tests", "evidence",
                                                               "test_blame.py")
    assert blame.relative(__file__, root=str(tmp_path)) == os.path.abspath(__file__)


def test_a_library_in_a_virtual_environment_inside_the_project_is_named_from_its_import_root(
    tmp_path, monkeypatch
):
    """CI's ``.venv`` lies under the working directory; its libraries are still libraries."""
    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    module = site / "pkg" / "layers.py"
    module.parent.mkdir(parents=True)
    module.write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [str(tmp_path), str(site)])
    assert blame.relative(str(module)) == os.path.join("pkg", "layers.py")
    own = tmp_path / "model.py"  # the project's own file: relative to the project
    assert blame.relative(str(own)) == "model.py"
