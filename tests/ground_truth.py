"""Brute-force ground truth for the certificate's red-team tables: which outputs of a small model
move when one input position is replaced by very different values, in float64.

``Floats(fn)`` and ``Tokens(fn)`` wrap a ``fn(module, x)`` as a model of the canonical shapes
(``(1, T, C)`` floats, ``(1, T)`` tokens); ``check(model)`` certifies it and compares: the bound
must contain every dependency the ground truth finds, and a model whose ground truth sees the
future is never proved.
"""

import copy

import torch
from torch import nn

from properties import make_subject
from properties.evidence.certificate import certify

T, C, V = 6, 2, 7
VALUES = [0.0, 1.0, -1.0, 3.7, -250.0, 1e4, -1e4, 0.01, -0.01]


class Floats(nn.Module):
    def __init__(self, fn, init=None):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(C, C)  # a float dtype and weights
        if init is not None:
            init(self)

    def forward(self, x):  # (B, T, C) -> (B, T, K)
        return self.fn(self, x)


class Tokens(nn.Module):
    def __init__(self, fn, init=None):
        super().__init__()
        self.fn = fn
        self.emb = nn.Embedding(V, 3)
        if init is not None:
            init(self)

    def forward(self, t):  # (B, T) -> (B, T, K)
        return self.fn(self, t)


def _run(model, x, reseed):
    if reseed:  # the same random numbers in every run: only the input may move the output
        torch.manual_seed(1234)
    with torch.no_grad():
        return model(x).reshape(1, T, -1)


def dependence(model: nn.Module, *, tokens: bool = False, reseed: bool = False,
               double: bool = True) -> torch.Tensor:
    """(T out, T in) bool: which outputs move when one input position is replaced."""
    model = copy.deepcopy(model)
    if double and not tokens:
        model = model.double()
    dtype = next((p.dtype for p in model.parameters()), torch.float64) if not tokens else None
    g = torch.Generator().manual_seed(1)
    moved = torch.zeros(T, T, dtype=torch.bool)
    for _ in range(2):
        if tokens:
            x = torch.randint(V, (1, T), generator=g)
        else:
            x = torch.randn(1, T, C, generator=g, dtype=torch.float64).to(dtype)
        y0 = _run(model, x.clone(), reseed)
        for t in range(T):
            for v in range(V) if tokens else VALUES + [None]:
                x2 = x.clone()
                if tokens:
                    x2[0, t] = v
                elif v is None:
                    x2[0, t] = 10 * torch.randn(C, generator=g, dtype=torch.float64).to(dtype)
                else:
                    x2[0, t] = torch.tensor([0.1 - v / 2, v], dtype=dtype)
                y = _run(model, x2, reseed)
                same = (y == y0) | (y.isnan() & y0.isnan())
                moved[:, t] |= ~same[0].all(-1)
    return moved


def check(model: nn.Module, *, tokens: bool = False, reseed: bool = False,
          double: bool = True, truth: torch.Tensor | None = None):
    """Certify ``model`` and compare with its ground truth: 0 dependencies outside the bound,
    never proved while the truth sees the future. Returns (certificate, truth)."""
    torch.manual_seed(0)
    options = dict(layout="BT", vocab=V) if tokens else dict(layout="BTC", features=C)
    cert = certify(make_subject(model, grid=(T,), predicts="next", **options))
    if truth is None:
        truth = dependence(model, tokens=tokens, reseed=reseed, double=double)
    if cert.bound is not None:  # (either form of summary: ``dense_bound`` reads both)
        missing = (truth & ~cert.dense_bound()).nonzero().tolist()
        assert not missing, f"(output, input) pairs outside the bound: {missing[:5]}"
    if bool(truth.triu(1).any()):
        assert not cert.proved, "proved, but the ground truth sees the future"
    return cert, truth
