"""Batch independence: the outputs of sample ``i`` never depend on the inputs of sample ``j``.

The contract's :class:`~properties.contracts.BatchIndependence` clause, checked three ways:

- a *sweep*: a batch of ``SWEEP_BATCH`` samples, each sample in turn replaced by another one,
  every other sample watched;
- a *Hypothesis search* (:class:`BatchPerturbation`) over the batch size (2..4), the sample
  replaced, the kind and size of the change and the seeds, which shrinks a failure to the
  smallest batch and the gentlest change;
- *gradients* (:func:`gradient_violations`): one VJP per sample, from its outputs to every
  sample's inputs (float64, at the embedding for tokens); a sample's gradient on another sample
  is a dependency, and a bisection over its outputs names one that has it.

Every forward pass runs with the RNG reset to the same seed, so dropout draws the same masks for
batches of the same shape: dropout is no dependence; training-mode BatchNorm (statistics over
the batch) is, and so is a router whose experts have a capacity per batch (which token is
dropped depends on the others: only a perturbation sees that, the gradient of a discrete
decision is zero). A change counts as the perturbation evidence counts one: above ``SAFETY``
times the noise floor, and, when small, still there on a float64 copy.

The certificate runs one sample: it says nothing about this contract.
"""

from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

from properties import progress
from properties.evidence.replacements import MAGNITUDES, Perturbation, kinds_for, replace_where
from properties.evidence.searching import search
from properties.subject.calls import forward
from properties.subject.canonical import Subject
from properties.verdict import Kind, Source, Violation

__all__ = [
    "BatchPerturbation",
    "SampleFindings",
    "Samples",
    "batch_evidence",
    "batch_perturbations",
    "gradient_violations",
]

SWEEP_BATCH = 3  # samples in the sweep's batch
MAX_BATCH = 4  # the search's largest batch
LOCALIZE_LIMIT = 64  # positions of the replaced sample tried one by one


@dataclass
class SampleFindings:
    """What a batch or padding check found, for the perturbation report."""

    violations: list[Violation] = field(default_factory=list)
    counterexamples: dict = field(default_factory=dict)
    examples: int = 0
    swept: int = 0


@dataclass(frozen=True)
class BatchPerturbation:
    """Replace every input of sample ``replaced`` of a batch of ``size`` samples (from pool
    ``pool``) as a :class:`~properties.evidence.replacements.Perturbation` of ``kind`` says."""

    size: int
    replaced: int
    kind: str
    magnitude: float
    seed: int
    pool: int = 0
    family: str = "batch"

    def as_replacement(self) -> Perturbation:
        return Perturbation(0, self.kind, self.magnitude, self.seed)

    def describe(self, vocab: int | None = None) -> str:
        what = self.as_replacement().describe(vocab).removeprefix("positions of rank >= 0 ")
        return f"every input of sample {self.replaced} of a batch of {self.size} {what}"


class Samples:
    """Forward passes of whole batches, and per-sample comparisons with float64 confirmation
    (the rule of :class:`~properties.evidence.perturbation.Runner`)."""

    def __init__(self, runner, seed: int):
        self.runner = runner
        self.subject: Subject = runner.subject
        self.seed = seed

    def run(self, x: torch.Tensor, keywords=None, subject=None) -> torch.Tensor:
        subject = subject or self.subject
        return forward(subject, x, seed=self.seed, keywords=keywords).detach()

    def draw(self, size: int, salt: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1000 + 500 + salt)
        return self.subject.draw_inputs(size, generator, integral=True)

    @staticmethod
    def per_sample(y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """(B, N) largest change per sample and position (NaN-aware)."""
        from properties.evidence.perturbation import _changes

        return torch.stack([_changes(y0[i : i + 1], y1[i : i + 1]) for i in range(len(y0))])

    def floor(self, x: torch.Tensor, keywords=None) -> float:
        """Twice the same batch, same RNG state: what rounding alone moves."""
        return float(self.per_sample(self.run(x, keywords), self.run(x, keywords)).max())

    def genuine(self, changes, tolerance: float, redo) -> torch.Tensor:
        """The entries of ``changes`` (B, N) above ``tolerance`` that survive in float64:
        ``redo(subject)`` recomputes the changes on another subject (the float64 copy)."""
        from properties.evidence.perturbation import CONFIRM_RATIO, OBVIOUS

        moved = changes > tolerance
        runner = self.runner
        if not moved.any() or not runner._confirm:
            return moved
        scale = max(runner.scale, 1e-30)
        if bool((changes[moved] > OBVIOUS * scale).all()):
            return moved
        double = runner._float64()
        if double is None:
            return moved
        changes64 = redo(double.subject)
        keep = changes64 > torch.maximum(
            torch.full_like(changes64, double.tolerance), CONFIRM_RATIO * changes
        )
        keep |= torch.isinf(changes64)
        runner.rounding += int((moved & ~keep).sum())
        return moved & keep


def batch_evidence(runner, *, max_examples: int, seed: int, train: bool, over=None):
    """The sweep, then the search, for the batch-independence clause (see the module's text)."""
    samples = Samples(runner, seed)
    findings = SampleFindings()
    x = samples.draw(SWEEP_BATCH, 0)
    tolerance = _tolerance(samples, x)
    progress.phase("sweep: batch", SWEEP_BATCH)
    for j in range(SWEEP_BATCH):
        x1 = x.clone()
        x1[j] = samples.draw(1, 1 + j)[0]  # another sample in slot j
        found = _violations(samples, x, x1, j, tolerance, Source.SWEEP, train,
                            f"sample {j} of a batch of {SWEEP_BATCH} was replaced by another")
        findings.violations.extend(found[:1])  # one example per sample replaced
        progress.advance()
    findings.swept = SWEEP_BATCH
    if max_examples > 0:
        _search(samples, findings, max_examples, seed, train, over)
    return findings


def _tolerance(samples: Samples, x: torch.Tensor) -> float:
    from properties.evidence.perturbation import SAFETY

    return SAFETY * samples.floor(x)


def _violations(samples, x, x1, j, tolerance, source, train, detail) -> list[Violation]:
    """Violations where an output of a sample other than ``j`` moved from ``x`` to ``x1``
    (they differ in sample ``j`` only): the first such output of each sample."""
    y0, y1 = samples.run(x), samples.run(x1)
    changes = samples.per_sample(y0, y1)
    changes[j] = 0  # sample j was replaced: its own outputs may move

    def redo(subject):
        y0, y1 = samples.run(x, subject=subject), samples.run(x1, subject=subject)
        again = samples.per_sample(y0, y1)
        again[j] = 0
        return again

    moved = samples.genuine(changes, tolerance, redo)
    out = []
    ranks = samples.subject.ranks
    for i in moved.any(1).nonzero().flatten().tolist():
        outputs = moved[i].nonzero().flatten()
        t = int(outputs[torch.argmin(ranks[outputs])])
        s = _localize(samples, x, x1, j, i, t, tolerance)
        out.append(Violation(t, s, Kind.SAMPLE, source, float(changes[i, t]), detail, train,
                             samples=(j, i)))
    return out


def _localize(samples, x, x1, j, i, t, tolerance) -> int:
    """The first position of sample ``j`` (nearest ``t`` in rank) whose lone replacement moves
    output ``t`` of sample ``i``; ``t`` itself when none does alone."""
    ranks = samples.subject.ranks
    y0 = samples.run(x)
    order = torch.argsort((ranks - ranks[t]).abs() * len(ranks) + ranks)[:LOCALIZE_LIMIT]
    for s in order.tolist():
        one = x.clone()
        one[j, s] = x1[j, s]
        if float(samples.per_sample(y0, samples.run(one))[i, t]) > tolerance:
            return s
    return t


def _search(samples: Samples, findings: SampleFindings, max_examples, seed, train, over):
    subject = samples.subject
    progress.phase("hypothesis: sample", max_examples)
    calls = [0]
    tolerances: dict = {}

    def batch_of(p: BatchPerturbation):
        x = samples.draw(p.size, 100 + 10 * p.pool + p.size)
        x1 = x.clone()
        x1[p.replaced : p.replaced + 1] = replace_where(
            subject, x[p.replaced : p.replaced + 1], p.as_replacement(),
            torch.ones(subject.n_positions, dtype=torch.bool),
        )
        if (p.size, p.pool) not in tolerances:
            tolerances[(p.size, p.pool)] = _tolerance(samples, x)
        return x, x1, tolerances[(p.size, p.pool)]

    def shows(p: BatchPerturbation) -> bool:
        if over is not None and over():
            return False
        calls[0] += 1
        progress.advance()
        x, x1, tol = batch_of(p)
        return bool(_violations(samples, x, x1, p.replaced, tol, Source.SEARCH, train, ""))

    p = search(batch_perturbations(subject), shows, max_examples=max_examples, seed=seed)
    findings.examples += calls[0]
    if p is None:
        return
    x, x1, tol = batch_of(p)
    found = _violations(samples, x, x1, p.replaced, tol, Source.SEARCH, train,
                        p.describe(subject.vocab))
    if found:
        findings.violations.insert(0, found[0])
        findings.counterexamples[Kind.SAMPLE] = p


def batch_perturbations(subject: Subject):
    """Batches of 2..4 samples with one sample's inputs replaced: shrinks to 2 samples, the
    first replaced, the gentlest kind, the smallest magnitude."""

    def of_size(size: int):
        return st.builds(
            BatchPerturbation,
            size=st.just(size),
            replaced=st.integers(0, size - 1),
            kind=st.sampled_from(kinds_for(subject)),
            magnitude=st.sampled_from(MAGNITUDES),
            seed=st.integers(0, 2**31 - 1),
            pool=st.integers(0, 3),
        )

    return st.integers(2, MAX_BATCH).flatmap(of_size)


# ---------------------------------------------------------------------------------------------
# Gradients


def gradient_violations(subject: Subject, inputs: torch.Tensor, *, seed: int, train: bool):
    """Per sample ``i``, one VJP of its outputs (random directions) to the inputs of the whole
    batch ``inputs``: a non-zero gradient on another sample ``j`` is a dependency; a bisection
    over ``i``'s outputs then names one output that has it. At most one violation per sample."""
    from properties.evidence.gradients import DifferentiableInput, GradientUnavailable

    if len(inputs) < 2:
        return []
    source = DifferentiableInput(subject, inputs, seed=seed)
    leaf, y = source.run(1)
    generator = torch.Generator().manual_seed(seed + 11)
    u = torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.dtype)
    n = subject.n_positions
    out = []

    def others(i: int, outputs: torch.Tensor) -> torch.Tensor:
        cot = torch.zeros_like(y)
        cot[i, outputs] = u[i, outputs]
        (g,) = torch.autograd.grad(y, leaf, cot, retain_graph=True, allow_unused=True)
        if g is None:
            raise GradientUnavailable("no gradient path from the outputs to the inputs")
        g = g.detach().reshape(len(inputs), n, -1).abs().amax(-1)  # (B, N)
        g[i] = 0
        return g

    for i in range(len(inputs)):
        outputs = torch.arange(n)
        g = others(i, outputs)
        if not bool((g > 0).any()):
            continue
        while len(outputs) > 1:  # bisect to one output that has a cross-sample gradient
            half = outputs[: len(outputs) // 2]
            outputs = half if bool((others(i, half) > 0).any()) else outputs[len(half) :]
        g = others(i, outputs)
        j, s = (int(v) for v in (g > 0).nonzero()[0])
        out.append(Violation(int(outputs[0]), s, Kind.SAMPLE, Source.GRADIENT, float(g[j, s]),
                             "non-zero gradient across samples", train, samples=(j, i)))
    return out
