"""The time budget: how much of each kind of evidence an audit can afford (``--budget``).

Costs are measured, not assumed: one forward pass of one sample is timed before any evidence is
gathered, and the gradient phase re-plans from the time its probe rows actually took. Each phase
takes its share of the time that is *left* when it starts (so what one phase does not spend
rolls over to the next), in the order the audit runs them:

- the dependency map (gradients): ``MAP_SHARE`` of what is left; its probe rows first (they find
  a leak into the first, middle and last outputs wherever it comes from), then sampled outputs;
- the sweep of cuts: ``SWEEP_SHARE`` of what is left, a stratified sample of cuts (the first
  and the last always in);
- the Hypothesis searches: everything left, and they stop at the deadline.

Without a budget nothing here applies (see the coverage policy in
:mod:`properties.auditing.options`).
"""

import time
from dataclasses import dataclass, field

__all__ = [
    "MAP_SHARE",
    "NOISE_FLOOR_PASSES",
    "Plan",
    "SEARCH_FACTOR",
    "SLACK",
    "SWEEP_SHARE",
    "VJP_FACTOR",
    "measure_forward",
]

MAP_SHARE = 0.3
SWEEP_SHARE = 0.55
VJP_FACTOR = 6.0  # a float64 VJP of one sample, in forward passes of one float32 sample (prior)
SEARCH_FACTOR = 2.0  # forward passes per Hypothesis example (shrinking, localizing, confirming)
SLACK = 0.92  # plan to end a little early: the last pass of a phase runs over its share


@dataclass
class Plan:
    """A deadline and the measured cost of a forward pass of one sample."""

    seconds: float
    forward: float = 0.0  # seconds per forward pass of one sample (measured)
    start: float = field(default_factory=time.perf_counter)

    @property
    def deadline(self) -> float:
        return self.start + SLACK * self.seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def over(self) -> bool:
        return time.perf_counter() >= self.deadline

    def affordable(self, share: float, cost: float, *, overhead: float = 0.0) -> int:
        """How many units of ``cost`` seconds fit in ``share`` of the time left."""
        room = share * self.left() - overhead
        return max(0, int(room // max(cost, 1e-9)))

    def search_examples(self, searches: int) -> int:
        """Hypothesis examples that fit in the time left, for ``searches`` searches: every
        example costs a forward pass or more (shrinking, a float64 confirmation)."""
        return self.affordable(1.0, SEARCH_FACTOR * self.forward * searches)


def measure_forward(run, samples: int) -> float:
    """Seconds per sample of ``run()`` (a forward pass over ``samples`` samples), best of two."""
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best / max(1, samples)


NOISE_FLOOR_PASSES = 6  # forward passes of one sample the noise floor costs before the sweep
