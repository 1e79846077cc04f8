"""The facts read from a dependency map, on hand-made maps whose answers are known exactly:
gradient violations (which pairs are listed, in which order, and their kinds), receptive
fields, blind spots and rank extremes, for raster and non-raster orders."""

import torch
from torch import nn

from properties import make_subject
from properties.evidence import facts
from properties.evidence.gradients import DependencyMap


def hand_map(subject, pairs, rows=None):
    """A map with exactly ``pairs`` (output, input) seen; rows ``rows`` (default: every output,
    in flat order), strengths 1 + input / 8 so that each pair's effect names its input."""
    n = subject.n_positions
    outputs = torch.arange(n) if rows is None else torch.as_tensor(rows)
    seen = torch.zeros(len(outputs), n, dtype=torch.bool)
    row_of = {int(t): i for i, t in enumerate(outputs)}
    for t, s in pairs:
        seen[row_of[t], s] = True
    strength = (seen * (1 + torch.arange(n) / 8)).to(torch.bfloat16)
    return DependencyMap(outputs, seen, strength, passes=len(outputs), method="plain")


def reversed_line(n):
    """A length-``n`` sequence generated from its last position to its first."""
    return make_subject(nn.Identity(), grid=(n,), layout="BTC", order=list(range(n - 1, -1, -1)))


def test_listed_pairs_are_the_first_in_rank_order_for_a_reversed_order():
    """2100 outputs each seeing itself, generated last position first: the LISTED pairs kept
    are those of the first-generated outputs (positions 2099, 2098, ...), not the first rows
    of the map's storage (positions 0, 1, ...)."""
    n = 2100
    subject = reversed_line(n)
    dmap = hand_map(subject, [(t, t) for t in range(n)])
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n
    assert [(v.output, v.input) for v in listed] == [
        (t, t) for t in range(n - 1, n - 1 - facts.LISTED, -1)
    ]
    assert {v.kind for v in listed} == {"present"}


def test_listed_pairs_of_a_column_major_order_are_the_first_generated(monkeypatch):
    """A 3 x 4 image generated column by column, read in blocks of 2 rows and capped at 3
    pairs: the pairs kept are those of the first-generated outputs (column 0: positions 0, 4,
    8), in rank order, whatever the order of the map's rows; the count covers them all."""
    column_major = [r * 4 + c for c in range(4) for r in range(3)]
    subject = make_subject(nn.Identity(), grid=(3, 4), layout="BHWC", order=column_major)
    monkeypatch.setattr(facts, "ROWS_AT_ONCE", 2)
    monkeypatch.setattr(facts, "LISTED", 3)
    pairs = [(t, t) for t in range(12)] + [(4, 1)]  # output (1, 0) sees (0, 1): rank 3 > 1
    for rows in (None, [11, 3, 7, 0, 8, 4, 1, 5, 9, 2, 6, 10]):
        listed, total = facts.gradient_violations(subject, hand_map(subject, pairs, rows))
        assert total == 13
        assert [(v.output, v.input, v.kind) for v in listed] == [
            (0, 0, "present"),
            (4, 4, "present"),
            (4, 1, "future"),
        ]
        assert [v.effect for v in listed] == [1.0, 1.5, 1.125]  # each pair's own strength
