"""The certificate at lengths where ``positions x inputs`` bits do not fit: the run form proves a
causal model with no tensor anywhere near ``N x N`` (every tensor any op creates is counted,
the rules' own included), and its conclusions from a bound (mode, forbidden pairs, receptive
field) are those of the dense form, on random bounds and orders."""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from properties import make_subject
from properties.evidence import certificate
from properties.evidence.certificate import bound as bounds
from properties.evidence.certificate import certify, deps
from properties.evidence.certificate import runs as R
from properties.subject import memory

V, D = 11, 8


class TinyDecoder(nn.Module):
    """Embedding, a causal convolution, causal attention, a head: what a long-context model is
    made of, at a width that keeps its forward pass cheap. ``by_hand``: a query that is not
    contiguous, for which SDPA takes its math kernel (``q @ k^T``, a mask, a softmax, ``@ v``:
    hand-written attention, with its ``L x S`` scores)."""

    def __init__(self, leak: bool = False, by_hand: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(V, D)
        self.conv = nn.Conv1d(D, D, 3, dilation=2)
        self.head = nn.Linear(D, V)
        self.leak, self.by_hand = leak, by_hand

    def forward(self, tokens):  # (B, T) -> (B, T, V)
        h = self.emb(tokens).transpose(1, 2)  # (B, D, T)
        h = self.conv(F.pad(h, (4, 0))).transpose(1, 2)  # (B, T, D): 0, 2, 4 back
        q = h.unsqueeze(1) if self.by_hand else h.unsqueeze(1).contiguous()  # (B, 1, T, D)
        a = F.scaled_dot_product_attention(q, q, q, is_causal=not self.leak).squeeze(1)
        return self.head(h + a)


def subject_of(n, **options):
    return make_subject(TinyDecoder(**options), grid=(n,), vocab=V, layout="BT",
                        predicts="next")


def largest(run) -> int:
    """The bytes of the largest tensor any op creates while ``run()`` runs (the tracer's rules
    included: a tally under the tracer sees their ops too)."""
    tally = memory._tally()
    with tally:
        run()
    return tally.largest


def test_a_long_causal_model_is_proved_with_no_positions_x_inputs_tensor():
    n = 8192
    subject = subject_of(n)
    certify(subject_of(8))  # one-time imports
    found = {}
    size = largest(lambda: found.setdefault("cert", certify(subject)))
    cert = found["cert"]
    assert deps.is_runs(cert.bound)  # the automatic form above DENSE_LIMIT
    assert (cert.status, cert.mode) == ("proved", "inclusive"), cert.reason
    assert cert.receptive_field.size == n and not cert.lost_precision
    assert size < 256 * n, size  # linear in the length (a dense bound alone: n * n bytes)
    # the rows asked for are the dense ones: output t sees every input up to t
    rows = cert.rows(torch.tensor([0, 5, n - 1]))
    assert rows.sum(1).tolist() == [1, 6, n] and not rows[0, 1:].any()


def test_hand_written_attention_costs_no_more_than_its_own_scores():
    """Scores ``L x S`` are the forward pass's own; their summaries are kept factored (a
    query's runs, a key's runs, a mask), never ``L x S`` runs."""
    n = 4096
    subject = subject_of(n, by_hand=True)
    certify(subject_of(8, by_hand=True))
    tokens = torch.randint(V, (1, n))
    with torch.no_grad():
        forward = largest(lambda: subject.module(tokens))
    found = {}
    size = largest(lambda: found.setdefault("cert", certify(subject)))
    assert found["cert"].proved, found["cert"].reason
    assert forward >= 4 * n * n and size <= forward, (size, forward)  # float32 scores


def test_a_long_leak_is_not_proved_and_its_first_pairs_are_listed():
    n = 4096
    cert = certify(subject_of(n, leak=True))
    assert deps.is_runs(cert.bound) and cert.mode == "none" and not cert.proved
    assert cert.forbidden_count == n * (n - 1) // 2  # every output sees every later input
    assert [(f.output, f.input) for f in cert.forbidden[:3]] == [(0, 1), (0, 2), (0, 3)]
    assert "scaled_dot_product" in cert.forbidden[0].op


def _bound(seed: int, n: int, density: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g) < density


class Grid:
    """A stand-in subject: the conclusions read the ranks, the grid and positions only."""

    def __init__(self, n, ranks, predicts):
        self.ranks, self.n_positions, self.grid, self.predicts = ranks, n, (n,), predicts
        self.contract = SimpleNamespace(only_causal=True, names=("causality",))

    def position(self, i):
        return i


@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.02, 0.2, 0.9]), st.booleans(),
       st.sampled_from(["current", "next"]), st.booleans())
def test_conclusions_from_a_run_form_bound_are_the_dense_ones(seed, density, shuffled,
                                                              predicts, lower):
    n = 37
    dense = _bound(seed, n, density)
    if lower:  # mostly causal bounds: the verdicts that pass
        dense &= torch.ones(n, n, dtype=torch.bool).tril(-1 if predicts == "current" else 0)
    ranks = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffled \
        else torch.arange(n)
    grid = Grid(n, ranks, predicts)
    a = certificate._conclude(grid, dense, None)
    b = certificate._conclude(grid, R.from_dense(dense), None)
    assert (a.status, a.mode, a.forbidden_count, a.forbidden) == \
        (b.status, b.mode, b.forbidden_count, b.forbidden)
    if a.receptive_field is None:
        assert b.receptive_field is None
    else:
        ra, rb = a.receptive_field, b.receptive_field
        assert (ra.size, ra.span, ra.holes, ra.position, ra.max_span) == \
            (rb.size, rb.span, rb.holes, rb.position, rb.max_span)
        assert torch.equal(ra.sizes, rb.sizes) and torch.equal(ra.spans, rb.spans)
    assert torch.equal(bounds.dense(b.bound), dense)
