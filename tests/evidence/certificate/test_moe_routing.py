"""Dropless mixture-of-experts routing (:mod:`properties.evidence.certificate.routing`): proved
per token where it is per token, refused where it is not. Every case against its brute-force
ground truth (:mod:`ground_truth`, in float32: ``_grouped_mm`` has no float64 on CPU; its rows
do not move with the grouping, checked by the truth itself), on both forms of summary.

Proved: a top-1 and a top-2 router that sorts the (token, expert) pairs, gathers, multiplies
each group with ``_grouped_mm`` at offsets from ``histc`` or ``bincount`` and puts the rows back
(``x[inverse]`` then a sum over k, or ``index_add_``, or ``scatter_add_``, or ``out[P] = R``).
Refused (the ordinary bound stands, and it contains every dependency the truth finds): capacity
limits (a ranking over the sequence, a running count of earlier tokens, offsets clamped to a
capacity, rows zeroed past a capacity), a gate mixing tokens, offsets shifted by one, an inverse
that is not the inverse, a descending sort, the inverse of another sort, and a loop over experts
whose token lists come from ``nonzero`` (a shape read from values)."""

import pytest
import torch
import torch.nn.functional as F
from ground_truth import C, Floats, T, Tokens, V, check

from properties import make_subject
from properties.evidence.certificate import certify, deps

pytestmark = pytest.mark.usefixtures("summary_form")  # every case on both forms (conftest)

E, D, H = 4, 4, 8  # experts, width (16 bytes: _grouped_mm's alignment), expert hidden width
EYE = torch.eye(T, dtype=torch.bool)


def _weights(m):
    g = torch.Generator().manual_seed(5)
    m.register_buffer("w_in", torch.randn(C, D, generator=g))
    m.register_buffer("w_router", torch.randn(D, E, generator=g))
    m.register_buffer("w1", torch.randn(E, D, H, generator=g) / 2)
    m.register_buffer("w2", torch.randn(E, H, D, generator=g) / 3)


def _route(s, x, k, gate_dim=-1):
    h = x[0] @ s.w_in  # (T, D): one row per token
    scores = (h @ s.w_router).softmax(gate_dim)
    weight, expert = scores.topk(k, dim=-1)
    return h, weight, expert


def _offsets(sorted_ids, how="histc"):
    if how == "histc":
        counts = torch.histc(sorted_ids.float(), bins=E, min=0, max=E - 1)
        return torch.cumsum(counts, 0, dtype=torch.int32)
    return torch.cumsum(torch.bincount(sorted_ids, minlength=E), 0).to(torch.int32)


def _experts(rows, offs, s):
    up = torch._grouped_mm(rows.contiguous(), s.w1, offs=offs)
    return torch._grouped_mm(F.silu(up), s.w2, offs=offs)


def _route_by_max(s, x):
    """PhiMoE-style: the best expert by ``max``, the second by ``max`` over the others."""
    h = x[0] @ s.w_in
    scores = (h @ s.w_router).softmax(-1)
    w1, e1 = scores.max(-1, keepdim=True)
    w2, e2 = scores.scatter(-1, e1, -1.0).max(-1, keepdim=True)
    return h, torch.cat([w1, w2], -1), torch.cat([e1, e2], -1)


def sort_router(k, back="inverse", counts="histc", gate_dim=-1, shift=0, descending=False,
                wrong_inverse=None, capacity=None, zero_past=None, by_max=False):
    """transformers' ``grouped_mm_experts_forward``, and the variants the controls need."""
    def fn(s, x):
        h, weight, expert = _route_by_max(s, x) if by_max else _route(s, x, k, gate_dim)
        if capacity is not None:  # a running count of earlier tokens' assignments
            taken = F.one_hot(expert, E).sum(1).cumsum(0)  # (T, E): slots taken so far
            weight = weight * (taken.gather(1, expert) <= capacity)
        ids = expert.reshape(-1)
        ids_sorted, perm = torch.sort(ids, descending=descending)
        rows = h[perm // k]
        offs = _offsets(ids if counts == "bincount" else ids_sorted, counts)
        if counts == "other ids":  # the counts of other ids than the sorted ones
            offs = _offsets((ids + 1) % E, "bincount")
        if shift:
            offs = torch.cat([(offs[:-1] - shift).clamp(min=0), offs[-1:]]).to(torch.int32)
        if zero_past is not None:  # each expert keeps its first rows in the sorted order
            start = torch.cat([offs.new_zeros(1), offs[:-1]])[ids_sorted]
            rows = rows.clone()
            rows[torch.arange(T * k) - start >= zero_past] = 0.0
        out = _experts(rows, offs, s) * weight.reshape(-1)[perm].unsqueeze(-1)
        if back == "inverse":
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(perm.shape[0])
            if wrong_inverse == "perm":
                inv = perm
            elif wrong_inverse == "other":
                inv = torch.argsort(torch.argsort(ids * 7 % 5))
            elif wrong_inverse == "descending":
                inv = torch.argsort(perm, descending=True)
            return out[inv].view(T, k, D).sum(1).unsqueeze(0)
        if back == "argsort":
            return out[torch.argsort(perm)].view(T, k, D).sum(1).unsqueeze(0)
        if back == "put":
            undone = torch.empty_like(out)
            undone[perm] = out
            return undone.view(T, k, D).sum(1).unsqueeze(0)
        final = torch.zeros(T, D)
        if back == "index_add":
            final.index_add_(0, perm // k, out)
        elif back == "index_add_by_table":  # each slot's token from a constant, by P
            final.index_add_(0, torch.arange(T).repeat_interleave(k)[perm], out)
        else:  # scatter_add along the rows
            final.scatter_add_(0, (perm // k).unsqueeze(-1).expand(-1, D), out)
        return final.unsqueeze(0)
    return Floats(fn, _weights)


def capacity_by_rank(s, x):
    """GShard-style: each expert keeps the 2 best-scored tokens of the sequence."""
    h, weight, expert = _route(s, x, 1)
    scores = (h @ s.w_router).softmax(-1)
    chosen = F.one_hot(expert[:, 0], E).bool()
    ranked = torch.where(chosen, scores, torch.full_like(scores, -1.0))
    rank = ranked.argsort(0, descending=True).argsort(0)
    kept = (chosen & (rank < 2)).any(1, keepdim=True)
    ids_sorted, perm = torch.sort(expert.reshape(-1))
    out = _experts(h[perm], _offsets(ids_sorted), s) * (weight * kept)[perm]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(T)
    return out[inv].unsqueeze(0)


def capacity_by_offsets(s, x):
    """Each expert's group clamped to 1 row (stable order: the earliest token); the rest of
    the rows go through no expert and are zeroed."""
    h, weight, expert = _route(s, x, 1)
    ids_sorted, perm = torch.sort(expert.reshape(-1), stable=True)
    counts = torch.bincount(expert.reshape(-1), minlength=E).clamp(max=1)
    offs = counts.cumsum(0).to(torch.int32)
    rows = h[perm]
    out = torch._grouped_mm(rows.contiguous(), s.w1, offs=offs)[:, :D] * weight[perm]
    out = torch.where(torch.arange(T).unsqueeze(1) < offs[-1], out, torch.zeros_like(out))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(T)
    return out[inv].unsqueeze(0)


def loop_over_experts(s, x):
    """The eager experts loop: token lists by ``nonzero``, ``index_add_`` back."""
    h, weight, expert = _route(s, x, 2)
    final = h.new_zeros(T, D)
    mask = F.one_hot(expert, E).permute(2, 1, 0)  # (E, k, T)
    for e in range(E):
        slot, token = torch.where(mask[e])
        y = F.silu(h[token] @ s.w1[e]) @ s.w2[e]
        final.index_add_(0, token, y * weight[token, slot, None])
    return final.unsqueeze(0)


def dense_loop(s, x):
    """Every expert on every token, weighted where chosen: per token without any permutation
    (the ordinary rules prove it)."""
    h, weight, expert = _route(s, x, 2)
    final = torch.zeros(T, D)
    for e in range(E):
        w = (weight * (expert == e)).sum(1, keepdim=True)
        final = final + w * (F.silu(h @ s.w1[e]) @ s.w2[e])
    return final.unsqueeze(0)


PROVED = {  # per token: proved, with the exact bound (each output its own token)
    "top1_inverse": sort_router(1),
    "top2_inverse": sort_router(2),
    "top2_bincount": sort_router(2, counts="bincount"),
    "top2_argsort_inverse": sort_router(2, back="argsort"),
    "top2_put_back": sort_router(2, back="put"),
    "top2_index_add": sort_router(2, back="index_add"),
    "top2_index_add_by_table": sort_router(2, back="index_add_by_table", counts="bincount"),
    "top1_scatter_add": sort_router(1, back="scatter_add"),
    "top2_by_two_max": sort_router(2, by_max=True),
    "dense_loop": Floats(dense_loop, _weights),
}

SEES_FUTURE = {  # refused, and the truth shows why
    "capacity_by_rank": Floats(capacity_by_rank, _weights),
    "gate_mixes_tokens": sort_router(2, gate_dim=0),
    "offsets_shifted_by_one": sort_router(2, shift=1),
    "inverse_is_perm": sort_router(2, wrong_inverse="perm"),
    "inverse_of_another_sort": sort_router(2, wrong_inverse="other"),
    "descending_sort": sort_router(2, descending=True),
    "inverse_by_a_descending_argsort": sort_router(2, wrong_inverse="descending"),
    "offsets_of_other_ids": sort_router(2, counts="other ids"),
}

NOT_PER_TOKEN = {  # causal but not per token: the bound keeps the earlier tokens
    "capacity_by_running_count": sort_router(1, capacity=1),
    "capacity_by_clamped_offsets": Floats(capacity_by_offsets, _weights),
    "capacity_by_zeroed_rows": sort_router(1, counts="bincount", zero_past=1),
}


@pytest.mark.parametrize("name", sorted(PROVED))
def test_a_dropless_router_is_proved_per_token(name):
    cert, truth = check(PROVED[name], double=False)
    assert cert.proved, cert.reason
    assert torch.equal(cert.dense_bound(), EYE), cert.dense_bound().int()
    assert torch.equal(truth, EYE)  # the truth: each output moves with its own token only


@pytest.mark.parametrize("name", sorted(SEES_FUTURE))
def test_a_router_that_sees_the_future_is_not_proved(name):
    cert, truth = check(SEES_FUTURE[name], double=False)  # sound: the bound holds the truth
    assert bool(truth.triu(1).any()), "the adversary does not work: no future dependency"
    assert not cert.proved


@pytest.mark.parametrize("name", sorted(NOT_PER_TOKEN))
def test_a_capacity_limit_keeps_the_earlier_tokens_in_the_bound(name):
    cert, truth = check(NOT_PER_TOKEN[name], double=False)
    assert bool(truth.tril(-1).any()), "the adversary does not work: no earlier token matters"
    assert not torch.equal(cert.dense_bound(), EYE)


def test_a_loop_over_experts_by_nonzero_reads_shapes_from_values():
    # per token in exact arithmetic (the truth also shows rounding: matmuls of another number
    # of rows round differently), but its token lists' lengths reach Python
    cert, truth = check(Floats(loop_over_experts, _weights))  # (no grouped_mm: float64)
    assert not cert.proved and cert.path_dependent
    assert any("shape computed from values" in r for r in cert.reads), cert.reads


def _hash_weights(m):
    _weights(m)
    g = torch.Generator().manual_seed(6)
    m.register_buffer("w_emb", torch.randn(3, D, generator=g))
    m.register_buffer("table", torch.randint(E, (V, 2), generator=g))  # token -> its experts


def hash_router(s, t):
    """DeepSeek-V4's hash layers: each token's experts from a constant table of token ids."""
    h = s.emb(t[0]) @ s.w_emb  # (T, D)
    ids = s.table[t[0]].reshape(-1)  # (T * 2,): values of the table, in [0, E)
    weight = (h @ s.w_router).softmax(-1).gather(1, s.table[t[0]]).reshape(-1)
    ids_sorted, perm = torch.sort(ids)
    out = _experts(h[perm // 2], _offsets(ids_sorted), s) * weight[perm].unsqueeze(-1)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.shape[0])
    return out[inv].view(T, 2, D).sum(1).unsqueeze(0)


def test_a_hash_router_from_a_constant_table_is_proved_per_token():
    cert, truth = check(Tokens(hash_router, _hash_weights), tokens=True)
    assert cert.proved, cert.reason
    assert torch.equal(cert.dense_bound(), EYE) and torch.equal(truth, EYE)


def test_a_write_into_the_permuted_rows_ends_the_proof():
    def fn(s, x):
        h, weight, expert = _route(s, x, 1)
        ids_sorted, perm = torch.sort(expert.reshape(-1))
        rows = h[perm]
        rows[0] = h[T - 1]  # the first sorted row becomes the last token
        out = _experts(rows, _offsets(ids_sorted), s) * weight[perm]
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(T)
        return out[inv].unsqueeze(0)

    cert, truth = check(Floats(fn, _weights), double=False)
    assert bool(truth.triu(1).any()) and not cert.proved


def test_both_forms_give_the_same_bound():
    for name, model in sorted(PROVED.items()) + sorted(SEES_FUTURE.items()):
        found = []
        for form in deps.FORMS:
            subject = make_subject(model, grid=(T,), predicts="next", layout="BTC", features=C)
            found.append(certify(subject, form=form).dense_bound())
        assert torch.equal(*found), name


def test_rows_past_the_last_offset_are_of_unknown_origin():
    # the kernel leaves them uninitialized: whatever was in that memory (no ground truth: the
    # values are garbage); a constant that ends at the rows is not
    def short(s, x):
        h = x[0] @ s.w_in
        return torch._grouped_mm(h, s.w1, offs=s.offs)[:, :D].unsqueeze(0)

    def init(ends):
        def run(m):
            _weights(m)
            m.register_buffer("offs", torch.tensor(ends, dtype=torch.int32))
        return run

    for ends, unknown in (([2, 3, 4, 4], True), ([2, 3, 4, T], False)):
        subject = make_subject(Floats(short, init(ends)), grid=(T,), predicts="next",
                               layout="BTC", features=C)
        cert = certify(subject)
        assert any("uninitialized" in u for u in cert.unknown) == unknown, cert.unknown
        assert cert.proved != unknown, cert.reason
