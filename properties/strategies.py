"""Hypothesis strategies for auditing causal models.

Following Hypothesis' API style: keyword-only arguments with defaults, ``min_*``/``max_*``
names, :class:`~hypothesis.errors.InvalidArgument` for bad arguments. Tensors are built from a
drawn seed through a ``torch.Generator``; no strategy touches the global torch RNG.

- :func:`cuts`, :func:`perturbations`, :func:`inputs`: for a :class:`~properties.Subject`
  (:mod:`properties.evidence.strategies`).
- :func:`schedules`: ways of cutting a sequence of ``n`` positions into the calls of a cached
  or streamed run (:mod:`properties.evidence.schedules`, the incremental check's search).
- :func:`causal_architectures`, :func:`planted_bugs`: random causal conv nets (1D and 2D) that
  know their analytic receptive field, and the same nets with one classic leak planted
  (:mod:`properties.extra.strategies`; they build the lecture's layers, so they are imported on
  first use: the audit itself never loads them).
"""

import importlib

from properties.evidence.schedules import schedules
from properties.evidence.strategies import cuts, inputs, perturbations

# causal_architectures and planted_bugs are defined on first use, by __getattr__ below
__all__ = [  # noqa: F822
    "causal_architectures", "cuts", "inputs", "perturbations", "planted_bugs", "schedules",
]

_EXTRA = ("causal_architectures", "planted_bugs")


def __getattr__(name: str):
    if name in _EXTRA:
        return getattr(importlib.import_module("properties.extra.strategies"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
