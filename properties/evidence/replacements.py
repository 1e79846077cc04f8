"""Perturbations: what replaces the inputs at and after a cut.

A :class:`Perturbation` replaces, in every sample of a small pool of base inputs, each position
whose rank is at least ``cut``. Values are drawn from a ``torch.Generator`` seeded by the
perturbation's own seed, never from the global RNG, so a perturbation is a value: it can be
printed, shrunk by Hypothesis and replayed.

Kinds (floats): ``add`` (base + magnitude * noise: the smallest change), ``normal`` and
``uniform`` (fresh values of the given magnitude), ``constant`` (one value everywhere),
``levels`` (random class indices, for subjects whose inputs are classes). Kinds (tokens):
``random`` (uniform over the whole vocabulary) and ``constant``.
"""

from dataclasses import dataclass

import torch

from properties.subject.canonical import Subject

__all__ = [
    "FLOAT_KINDS",
    "MAGNITUDES",
    "Perturbation",
    "TOKEN_KINDS",
    "ZEROS",
    "apply",
    "kinds_for",
    "replace_one",
    "replacement_mask",
]

FLOAT_KINDS = ("add", "normal", "uniform", "constant", "levels")
TOKEN_KINDS = ("random", "constant")
# The sweep's kind: the lecture's zeros, the input the synthesis loop feeds for unknown values
# (token 0 for token models). The same forward passes then give the loss equivalence check.
ZEROS = "zeros"
# Magnitudes span 1e-3 .. 1e4: a leak that fires only for large future values must be found,
# and a failure should shrink to the smallest change that still shows it.
MAGNITUDES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass(frozen=True)
class Perturbation:
    cut: int  # rank: positions with rank >= cut are replaced
    kind: str
    magnitude: float
    seed: int
    pool: int = 0  # which pool of base inputs

    def describe(self, vocab: int | None = None) -> str:
        """In words; ``vocab``: the subject's, for token models ("constant" is a kind of both)."""
        if self.kind == ZEROS:
            return f"positions of rank >= {self.cut} were replaced by zeros"
        if self.kind == "random" or (self.kind == "constant" and vocab is not None):
            what = "random tokens" if self.kind == "random" else f"the token {self.seed % vocab}"
            return f"positions of rank >= {self.cut} replaced by {what}"
        what = {
            "add": f"shifted by {self.magnitude:g} x noise",
            "normal": f"replaced by normal values of scale {self.magnitude:g}",
            "uniform": f"replaced by uniform values in +-{self.magnitude:g}",
            "constant": f"replaced by the constant {self.magnitude:g}",
            "levels": "replaced by random class values",
        }[self.kind]
        return f"positions of rank >= {self.cut} {what}"


def kinds_for(subject: Subject) -> tuple[str, ...]:
    if subject.tokens:
        return TOKEN_KINDS
    return FLOAT_KINDS if subject.classes is not None else FLOAT_KINDS[:4]


def replacement_mask(subject: Subject, cut: int) -> torch.Tensor:
    """(N,) bool: the positions a cut replaces."""
    return subject.ranks >= cut


def apply(subject: Subject, pool: torch.Tensor, p: Perturbation) -> torch.Tensor:
    """The pool with every position of rank >= ``p.cut`` replaced, in every sample."""
    mask = replacement_mask(subject, p.cut)
    generator = torch.Generator().manual_seed(p.seed)
    x = pool.clone()
    k = int(mask.sum())
    if k == 0:
        return x
    if p.kind == ZEROS:
        x[:, mask] = 0
        return x
    if subject.tokens:
        size = (x.shape[0], k)
        if p.kind == "constant":
            values = torch.full(size, p.seed % subject.vocab, dtype=x.dtype)
        else:
            values = torch.randint(subject.vocab, size, generator=generator, dtype=x.dtype)
        x[:, mask] = values
        return x
    size = (x.shape[0], k, x.shape[-1])
    noise = torch.randn(size, generator=generator, dtype=x.dtype)
    if p.kind == "add":
        x[:, mask] = x[:, mask] + p.magnitude * noise
    elif p.kind == "normal":
        x[:, mask] = p.magnitude * noise
    elif p.kind == "uniform":
        x[:, mask] = p.magnitude * (2 * torch.rand(size, generator=generator, dtype=x.dtype) - 1)
    elif p.kind == "constant":
        x[:, mask] = p.magnitude
    elif p.kind == "levels":
        levels = torch.randint(subject.classes, size, generator=generator)
        x[:, mask] = levels.to(x.dtype)
    else:
        raise ValueError(f"unknown perturbation kind {p.kind!r}")
    return x


def replace_one(subject: Subject, pool: torch.Tensor, perturbed: torch.Tensor, position: int):
    """The pool with only ``position`` taken from ``perturbed`` (to localize a leak)."""
    x = pool.clone()
    x[:, position] = perturbed[:, position]
    return x
