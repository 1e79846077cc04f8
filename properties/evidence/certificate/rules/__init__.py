"""Rules: the summary of an ATen op's outputs from the summaries (and values) of its inputs.

Every rule is an upper bound: an output element gets at least every input position that can
change it for some input values, along the control-flow path taken. Values are read only from
constants (no dependency at all): a weight that is exactly zero, a mask filled with -inf, a
condition that does not depend on the input. A value computed from the input is never used to
drop a dependency (zero at this run is not zero at every run).

Each rule takes ``(ctx, args, kwargs, outs)`` (``outs``: the op's tensor outputs, whose values a
rule must not read: in-place ops are ruled before they run) and returns one summary per output.
The tracer runs a rule only when some input of the op depends on the model's input: the rule of
a one-input op takes that input's summary as given (a rule that raises gets the fallback).
Ops without a rule get :func:`fallback` (every output element may depend on everything any
input depends on), and the tracer names them in the certificate's ``lost_precision``.

Summaries come in two forms (:mod:`..deps`: dense bits, or runs of input positions). A rule
registered with ``runs=True`` is written with ``deps``' helpers and takes either; any other
rule is given dense summaries and its results are turned back into runs (:func:`through_dense`),
so a new rule is correct on both forms before it is fast on the second.
"""

from . import (  # noqa: F401 (registers)
    attention,
    contractions,
    elementwise,
    moves,
    recurrent,
    reductions,
    sampling,
    selection,
    spectral,
    strides,
)
from .base import DEAD_FRACTION, HIGHER_ORDER, RULES, fallback, knows_runs, through_dense
from .elementwise import pointwise

__all__ = [
    "DEAD_FRACTION", "HIGHER_ORDER", "RULES", "fallback", "knows_runs", "pointwise",
    "through_dense",
]
