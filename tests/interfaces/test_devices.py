"""Devices planned per xdist worker (``cuda`` -> ``cuda:{worker % GPUs}``) and refused when
missing; the GPUs are pretended here (torch.cuda's answers patched), so this runs anywhere."""

import pytest
import torch
from torch import nn

from properties import assert_causal, devices


@pytest.fixture
def gpus(monkeypatch):
    def have(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return have


@pytest.mark.parametrize("worker, count, expected", [
    ("gw0", 2, "cuda:0"), ("gw1", 2, "cuda:1"), ("gw2", 2, "cuda:0"), ("gw7", 3, "cuda:1"),
    ("", 2, "cuda"),  # outside xdist: torch's current device
])
def test_a_bare_cuda_is_planned_per_worker(gpus, worker, count, expected):
    gpus(count)
    assert str(devices.plan("cuda", worker=worker)) == expected


def test_the_worker_comes_from_xdists_environment(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw6")
    assert str(devices.plan("cuda")) == "cuda:2"
    assert str(devices.plan("cuda:3")) == "cuda:3"  # an index given is kept
    assert str(devices.plan("cpu")) == "cpu"


@pytest.mark.parametrize("asked, count, words", [
    ("cuda", 0, "CUDA is not available"),
    ("cuda:1", 0, "CUDA is not available"),
    ("cuda:2", 2, "has 2 CUDA device(s) (cuda:0..cuda:1)"),
    ("warp", 2, "unknown device 'warp'"),
])
def test_a_missing_device_is_one_line(gpus, asked, count, words):
    gpus(count)
    with pytest.raises(devices.DeviceError) as raised:
        devices.plan(asked, worker="gw0")
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_assert_causal_never_runs_elsewhere_than_asked(gpus):
    gpus(0)
    model = nn.Conv1d(1, 1, 1)
    with pytest.raises(devices.DeviceError):
        assert_causal(model, grid=(4,), layout="BCT", device="cuda")
    assert next(model.parameters()).device.type == "cpu"  # untouched, and no audit ran
