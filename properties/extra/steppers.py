"""The lecture's cached steppers (:mod:`causal.incremental`) as steppers of the incremental
check, registered with :func:`properties.subject.steppers.register` when this module is imported
(the interfaces import it; the core never imports :mod:`causal`).

A lecture stepper is called as ``step(x, t) -> (N, K)`` for ``t = 0, 1, 2, ...`` and reads from
``x`` only the positions before ``t``. The adapter keeps the input seen so far in its state, the
positions not given yet poisoned with NaN (a stepper that reads them gives NaN), and runs a chunk
``[a, b)`` as the calls ``t = a .. b - 1``; a saved state is a deep copy of the stepper and the
input. In 2D (the PixelCNNs) positions are flat, in raster order.
"""

import copy

import torch

from causal.incremental import STEPPERS, cached_stepper
from properties.subject import steppers
from properties.subject.canonical import Subject

__all__ = ["LectureStepper", "lecture_steppers"]


class LectureStepper(steppers.Stepper):
    name = "the lecture's cached stepper (causal.incremental)"

    def start(self):
        s = self.subject
        shape = (1, s.n_positions) + (() if s.tokens else (s.features,))
        return {"stepper": cached_stepper(s.module), "x": torch.full(shape, float("nan"))}

    def step(self, x, begin, state):
        s, length = self.subject, x.shape[1]
        state["x"][:, begin : begin + length] = x.to(state["x"].dtype)
        native = s.native_input(state["x"].to(s.device)).to(s.dtype)  # (1, C, *grid)
        ys = [state["stepper"](native, t) for t in range(begin, begin + length)]  # (1, K) each
        return torch.stack(ys, 1), state

    def save(self, state):
        return copy.deepcopy(state)


def lecture_steppers(subject: Subject) -> list[steppers.Stepper] | None:
    """A lecture model's cached stepper, looked up by its exact type (as
    :func:`causal.incremental.cached_stepper` does), or None."""
    if subject.module is None or type(subject.module) not in STEPPERS:
        return None
    return [LectureStepper(subject)]


steppers.register(lecture_steppers)
