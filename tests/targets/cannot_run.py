"""Causal models the audit cannot run in one way each: what could not run must say so (exit code
2, one line), never "sees the future" (exit code 1).

- ``tracer_shy``: raises under any ``TorchDispatchMode`` (as a model that guards its fast path
  does): the certificate is unavailable.
- ``zero_shy``: raises on an input that holds an exact zero (the sweep's and the loss check's
  masked inputs): the perturbation evidence, and with it the loss check, are unavailable.
- ``bad.py:rounded``: no gradient anywhere: a receptive field cannot be measured.

Every one is the causal convolution of ``bad.py`` (``--layout BT``, inclusive).
"""

import torch
from bad import CausalConv
from torch.utils._python_dispatch import _get_current_dispatch_mode


class TracerShy(CausalConv):
    def forward(self, x):
        if _get_current_dispatch_mode() is not None:
            raise RuntimeError("this model does not run under a dispatch mode")
        return super().forward(x)


class ZeroShy(CausalConv):
    def forward(self, x):
        if bool((x == 0).any()):
            raise ValueError("zeros are padding, and this model takes no padding")
        return super().forward(x)


def tracer_shy():
    torch.manual_seed(0)
    return TracerShy()


def zero_shy():
    torch.manual_seed(0)
    return ZeroShy()
