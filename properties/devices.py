"""Devices: where an audit runs (``--device``, ``--causal-device``, ``assert_causal(device=)``).

A bare ``cuda`` under ``pytest -n`` (xdist) is planned per worker: worker ``gwI`` runs on
``cuda:{I % device_count}``, so N workers share the GPUs evenly instead of all crowding
``cuda:0``. A device that is asked for and missing (no CUDA, an index past the last GPU, no MPS)
is an error of one line, exit code 2 on the command line and in pytest: never a silent run on
the CPU, never a skip.
"""

import os
import re

import torch

from properties.errors import AuditError

__all__ = ["DeviceError", "plan", "require", "worker_index"]


class DeviceError(AuditError):
    """A requested device that this machine does not have."""


def worker_index(worker: str | None = None) -> int | None:
    """The xdist worker's index (``gw3`` -> 3), None outside xdist."""
    worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER")
    match = re.fullmatch(r"gw(\d+)", worker or "")
    return int(match.group(1)) if match else None


def plan(requested, worker: str | None = None) -> torch.device:
    """The device to run on for ``requested`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``...), in
    this xdist worker; a :class:`DeviceError` when it is missing."""
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(
            f"unknown device {requested!r}", "use cpu, cuda, cuda:1, mps..."
        ) from None
    if device.type == "cuda" and device.index is None:
        index = worker_index(worker)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index is not None and count:
            device = torch.device("cuda", index % count)
    require(device, str(requested))
    return device


def require(device: torch.device, asked: str | None = None) -> None:
    asked = asked or str(device)
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {asked} asked for, but CUDA is not available on this "
                              "machine", "run where a GPU is, or ask for the cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {asked} asked for, but this machine has {count} CUDA "
                              f"device(s) (cuda:0..cuda:{count - 1})", "ask for one it has")
        return
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {asked} asked for, but MPS is not available",
                              "ask for the cpu")
        return
    try:
        torch.empty(1, device=device)
    except Exception:  # xpu, hpu...: whatever torch says, in one line
        raise DeviceError(f"device {asked} asked for, but this machine cannot allocate on it",
                          "ask for one it has") from None
