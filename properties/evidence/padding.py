"""Padding: a sample's real positions do not change when it is padded, with the attention mask.

The contract's :class:`~properties.contracts.Padding` clause. A probe (:class:`PaddingPerturbation`)
pads the samples of a batch of sequences on one side, each by its own length (a real prefix of
``N - p`` positions and ``p`` padding positions, filled with zeros, random or constant values),
calls the model with the attention mask (1 at the real positions, 0 at the padding; passed as
the clause's keyword), and compares each sample's real predictions with the same real prefix
run alone, unpadded, with an all-ones mask. Any difference breaks the clause: the padding's
contents are seen (a mask that does not reach the attention), or its length (absolute
positions that are not shifted, one cache position shared by a left-padded batch: a sample is
then moved by another sample's padding).

- a *sweep* over a few layouts per side (one sample padded by 1 and by ``N // 2``, and two
  samples of which only one is padded);
- a *Hypothesis search* over the side, the batch (1..3 samples), each sample's padding length,
  the fill and the seeds; it shrinks to the smallest batch and the shortest padding.

The padded and the unpadded runs have different shapes, so float32 kernels round differently:
a change counts when it exceeds ``SHAPE_ROUNDING`` machine epsilons of the outputs' scale (and
the noise floor), and, below 1% of that scale, only if it survives on a float64 copy. Inference
only (dropout would draw other masks for another shape); sequences (1D grids) only. A model
whose samples interact in inference (measured by the noise floor) is checked one sample at a
time, so that the batch's interaction is not charged to the padding.
"""

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from properties import progress
from properties.evidence.batch import SampleFindings, Samples
from properties.evidence.searching import search
from properties.verdict import Kind, Source, Violation

__all__ = ["PaddingPerturbation", "padding_evidence", "padding_perturbations"]

SHAPE_ROUNDING = 64  # machine epsilons of the outputs' scale that a change of shape may round
FILLS = ("zeros", "random", "constant")


@dataclass(frozen=True)
class PaddingPerturbation:
    """Pad sample ``i`` of a batch (pool ``pool``) by ``lengths[i]`` positions on ``side``."""

    side: str
    lengths: tuple[int, ...]
    fill: str = "zeros"
    seed: int = 0
    pool: int = 0
    family: str = "padding"

    def describe(self, vocab: int | None = None) -> str:
        fills = {
            "zeros": "zeros",
            "random": "random tokens" if vocab else "random values",
            "constant": f"the token {self.seed % vocab}" if vocab else "the constant 1",
        }
        return (
            f"{self.side} padding of lengths {list(self.lengths)} ({fills[self.fill]}), "
            "with the attention mask"
        )


class _Padder(Samples):
    def __init__(self, runner, seed: int):
        super().__init__(runner, seed)
        self.padding = self.subject.contract.padding
        self.n = self.subject.n_positions
        self._alone: dict = {}

    def fill(self, p: PaddingPerturbation, i: int, count: int, like: torch.Tensor):
        generator = torch.Generator().manual_seed(p.seed + 7919 * i)
        shape = (count,) + like.shape[1:]
        if p.fill == "zeros":
            return torch.zeros(shape, dtype=like.dtype)
        s = self.subject
        if s.tokens:
            if p.fill == "constant":
                return torch.full(shape, p.seed % s.vocab, dtype=like.dtype)
            return torch.randint(s.vocab, shape, generator=generator, dtype=like.dtype)
        if p.fill == "constant":
            return torch.ones(shape, dtype=like.dtype)
        return torch.randn(shape, generator=generator, dtype=like.dtype)

    def mask_keywords(self, mask: torch.Tensor) -> dict:
        return {self.padding.keyword: mask} if self.padding.keyword else {}

    def changes(self, p: PaddingPerturbation, subject=None):
        """(B, N) the change of every real prediction (padded frame; 0 at the padding), and the
        padded outputs' scale."""
        x = self.draw(len(p.lengths), 300 + 10 * p.pool + len(p.lengths))
        padded = x.clone()
        for i, length in enumerate(p.lengths):
            real = x[i, : self.n - length]
            pad = self.fill(p, i, length, x[i])
            padded[i] = torch.cat([pad, real] if p.side == "left" else [real, pad])
        mask = self.padding.mask(list(p.lengths), self.n, p.side)
        y = self.run(padded, self.mask_keywords(mask), subject=subject)
        changes = torch.zeros(len(p.lengths), self.n, dtype=torch.float64)
        from properties.evidence.perturbation import _changes

        for i, length in enumerate(p.lengths):
            n = self.n - length
            alone = self.alone(x[i, :n], subject)
            where = slice(length, self.n) if p.side == "left" else slice(0, n)
            changes[i, where] = _changes(alone, y[i : i + 1, where])
        return changes, float(y.abs().max())

    def alone(self, real: torch.Tensor, subject=None) -> torch.Tensor:
        """The real prefix run alone at its own length, with an all-ones mask."""
        subject = subject or self.subject
        n = real.shape[0]
        key = (id(subject), n)
        if key not in self._alone:
            self._alone[key] = (subject, subject.at_length(n))
        short = self._alone[key][1]
        ones = torch.ones(1, n, dtype=torch.long)
        return self.run(real[None], self.mask_keywords(ones), subject=short)

    def violations(self, p: PaddingPerturbation, source: Source, detail: str = ""):
        from properties.evidence.perturbation import SAFETY

        changes, scale = self.changes(p)
        eps = torch.finfo(self.subject.dtype).eps if self.subject.dtype.is_floating_point else 0
        tolerance = max(SAFETY * self._floor(p), SHAPE_ROUNDING * eps * scale)
        moved = self.genuine(changes, tolerance, lambda s: self.changes(p, s)[0])
        out = []
        for i in moved.any(1).nonzero().flatten().tolist():
            t = int(moved[i].nonzero()[0])
            j = i if p.lengths[i] else max(range(len(p.lengths)), key=lambda k: p.lengths[k])
            length = p.lengths[j]
            nearest = length - 1 if p.side == "left" else self.n - length
            out.append(Violation(t, nearest, Kind.PADDING, source, float(changes[i, t]),
                                 detail or p.describe(self.subject.vocab), False,
                                 samples=(j, i)))
        return out

    def _floor(self, p: PaddingPerturbation) -> float:
        x = self.draw(len(p.lengths), 300 + 10 * p.pool + len(p.lengths))
        mask = self.padding.mask(list(p.lengths), self.n, p.side)
        return self.floor(x, self.mask_keywords(mask))


def padding_evidence(
    runner, *, max_examples: int, seed: int, train: bool, over=None, independent: bool = True
):
    """The sweep, then the search, for the padding clause (see the module's text)."""
    padder = _Padder(runner, seed)
    findings = SampleFindings()
    n, sides = padder.n, padder.padding.sides
    if n < 2:
        return findings
    layouts = [(1,), (n // 2,)] + ([(0, n // 2), (n // 2, 0)] if independent else [])
    probes = [PaddingPerturbation(side, lengths) for side in sides for lengths in layouts]
    progress.phase("sweep: padding", len(probes))
    for p in probes:
        found = padder.violations(p, Source.SWEEP)
        findings.violations.extend(found[:1])
        progress.advance()
        if found:
            break  # one layout that moves real positions is the sweep's example
    findings.swept = len(probes)
    if max_examples > 0:
        _search(padder, findings, max_examples, seed, over, independent)
    return findings


def padding_perturbations(n: int, sides, *, max_batch: int = 3):
    """Paddings of 1..``max_batch`` samples of an ``n``-position sequence, at least one padded:
    shrinks to one sample, padded by one, with zeros."""
    lengths = st.lists(st.integers(0, n - 1), min_size=1, max_size=max_batch).filter(any)
    return st.builds(
        PaddingPerturbation,
        side=st.sampled_from(tuple(sides)),
        lengths=lengths.map(tuple),
        fill=st.sampled_from(FILLS),
        seed=st.integers(0, 2**31 - 1),
        pool=st.integers(0, 3),
    )


def _search(padder: _Padder, findings, max_examples, seed, over, independent):
    progress.phase("hypothesis: padding", max_examples)
    calls = [0]

    def shows(p: PaddingPerturbation) -> bool:
        if over is not None and over():
            return False
        calls[0] += 1
        progress.advance()
        return bool(padder.violations(p, Source.SEARCH))

    strategy = padding_perturbations(padder.n, padder.padding.sides,
                                     max_batch=3 if independent else 1)
    p = search(strategy, shows, max_examples=max_examples, seed=seed)
    findings.examples += calls[0]
    if p is None:
        return
    found = padder.violations(p, Source.SEARCH)
    if found:
        findings.violations.insert(0, found[0])
        findings.counterexamples[Kind.PADDING] = p
