"""Models for the contracts besides causality: each correct one, and its planted bug.

Documents reach the models as Hugging Face's padding-free ``position_ids`` (restarting at 0 in
each document); padding as an ``attention_mask`` (1 real, 0 padding). All are tiny and float64
unless said, and ``predicts="next"`` (they see their own position).

``python -m properties audit tests/targets/contracts.py:packed_attention --layout BTC
--features 2 --length 12 --predicts next --documents 4,3,5 --documents-as position_ids``
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


def documents_of(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids from positions that restart at 0."""
    return (position_ids == 0).long().cumsum(-1)


def _seeded(module: nn.Module) -> nn.Module:
    return module.double().eval()


class PackedAttention(nn.Module):
    """One causal self-attention layer over ``(B, T, F)`` values. ``documents``: the mask is
    block-diagonal by document (from ``position_ids``); ``window``: a query sees at most
    ``window`` keys, its own included. The planted bugs: documents ignored, the window
    replaced by full causal attention (``full``), or off by one (``slack=1``: ``window + 1``
    keys; ``slack=-1``: ``window - 1``, a window that shrank)."""

    def __init__(self, features=2, width=8, documents=True, window=None, full=False, slack=0):
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = (nn.Linear(features, width) for _ in range(3))
        self.out = nn.Linear(width, 3)
        self.documents, self.window, self.full, self.slack = documents, window, full, slack

    def forward(self, x, position_ids=None):
        t = x.shape[1]
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        allowed = (j <= i)[None]
        if self.window is not None and not self.full:
            allowed = allowed & (i - j < self.window + self.slack)[None]
        if self.documents and position_ids is not None:
            doc = documents_of(position_ids)
            allowed = allowed & (doc[:, :, None] == doc[:, None, :])
        scores = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(self.q.out_features)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return self.out(weights @ self.v(x))


class PackedConv(nn.Module):
    """A causal convolution (kernel 3) over ``(B, T, F)``: its taps that reach into an earlier
    document are cut (``documents``), or not (the planted bug: state carried across)."""

    def __init__(self, features=2, documents=True):
        super().__init__()
        torch.manual_seed(0)
        self.taps = nn.ModuleList(nn.Linear(features, 3, bias=k == 0) for k in range(3))
        self.documents = documents

    def forward(self, x, position_ids=None):
        doc = documents_of(position_ids) if position_ids is not None else None
        y = 0
        for k, tap in enumerate(self.taps):
            shifted = F.pad(x, (0, 0, k, 0))[:, : x.shape[1]]
            if self.documents and doc is not None:
                same = doc == F.pad(doc, (k, 0), value=-1)[:, : x.shape[1]]
                shifted = shifted * same[..., None]
            y = y + tap(shifted)
        return y


class PackedScan(nn.Module):
    """A linear recurrence ``h_t = a h_{t-1} + W x_t`` (a state-space scan). Its state restarts
    at each document (``restart="documents"``), or at fixed chunks of ``chunk`` positions (the
    planted bug, vllm#23279's: the decay restarted at the chunk, not the sequence, start)."""

    def __init__(self, features=2, restart="documents", chunk=4):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(features, 4)
        self.out = nn.Linear(4, 3)
        self.register_buffer("decay", torch.tensor([0.9, 0.5, 0.7, 0.3]))
        self.restart, self.chunk = restart, chunk

    def forward(self, x, position_ids=None):
        u = self.inp(x)
        h = torch.zeros_like(u[:, 0])
        states = []
        for t in range(x.shape[1]):
            if self.restart == "documents" and position_ids is not None:
                fresh = (position_ids[:, t] == 0)[:, None]
            else:
                fresh = torch.full_like(h[:, :1], t % self.chunk == 0, dtype=torch.bool)
            h = torch.where(fresh, torch.zeros_like(h), self.decay * h) + u[:, t]
            states.append(h)
        return self.out(torch.stack(states, 1))


def packed_attention():
    return _seeded(PackedAttention())


def attention_ignoring_documents():
    return _seeded(PackedAttention(documents=False))


def packed_conv():
    return _seeded(PackedConv())


def conv_across_documents():
    return _seeded(PackedConv(documents=False))


def packed_scan():
    return _seeded(PackedScan())


def scan_restarting_per_chunk():
    return _seeded(PackedScan(restart="chunks"))


# ---------------------------------------------------------------------------------------------
# Windows (W = 4)

WINDOW = 4


def sliding_attention():
    return _seeded(PackedAttention(window=WINDOW))


def sliding_window_made_full():
    """accelerate PR#4177's bug: the sliding window's mask replaced by plain causal attention."""
    return _seeded(PackedAttention(window=WINDOW, full=True))


def sliding_window_off_by_one():
    return _seeded(PackedAttention(window=WINDOW, slack=1))


def sliding_window_shrunk():
    return _seeded(PackedAttention(window=WINDOW, slack=-1))


class TwoSlidingLayers(nn.Module):
    """Two sliding-window attention layers with residuals: each sees ``window`` positions, the
    model ``2 (window - 1) + 1``. ``global_second``: the second layer attends to the whole past
    (a local/global mix)."""

    def __init__(self, window=WINDOW, global_second=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(2, 8)
        self.layers = nn.ModuleList(
            [PackedAttention(8, 8, window=window), PackedAttention(8, 8, window=window,
                                                                  full=global_second)]
        )
        for layer in self.layers:
            layer.out = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = h + layer(h)
        return self.head(h)


def two_sliding_layers():
    return _seeded(TwoSlidingLayers())


def local_then_global():
    return _seeded(TwoSlidingLayers(global_second=True))


# ---------------------------------------------------------------------------------------------
# Batch independence


def batchnorm_net():
    """BatchNorm between two causal convolutions: batch statistics in training mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4),
        nn.ConstantPad1d((1, 0), 0.0), nn.Conv1d(4, 3, 2),
    ).double()


def dropout_net():
    """Dropout between two causal convolutions: no dependence between samples."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(2, 4, 3), nn.Dropout(0.3),
        nn.ConstantPad1d((1, 0), 0.0), nn.Conv1d(4, 3, 2),
    ).double()


class CapacityRouter(nn.Module):
    """A top-1 mixture of experts over ``(B, T, F)`` with a capacity per expert per batch (a
    fraction of the batch's tokens): tokens are served in order, batch first, and those over
    an expert's capacity get no expert output. Whether a token of sample 1 is served depends on
    sample 0's tokens; within a sample, only on earlier tokens (causal). ``capacity=None``: no
    limit (independent samples)."""

    def __init__(self, features=2, experts=2, capacity=0.5):
        super().__init__()
        torch.manual_seed(0)
        self.gate = nn.Linear(features, experts)
        self.experts = nn.ModuleList(nn.Linear(features, 3) for _ in range(experts))
        self.skip = nn.Linear(features, 3)
        self.capacity = capacity

    def forward(self, x):
        b, t, f = x.shape
        tokens = x.reshape(b * t, f)
        choice = self.gate(tokens).argmax(-1)
        one_hot = F.one_hot(choice, len(self.experts))
        served = torch.ones(b * t, dtype=torch.bool)
        if self.capacity is not None:
            limit = max(1, int(self.capacity * b * t / len(self.experts)))
            queue = (one_hot.cumsum(0) * one_hot).sum(-1)  # 1-based place in its expert's queue
            served = queue <= limit
        out = self.skip(tokens)
        for e, expert in enumerate(self.experts):
            use = (choice == e) & served
            out = out + torch.where(use[:, None], expert(tokens), torch.zeros_like(out))
        return out.reshape(b, t, 3)


def capacity_router():
    return CapacityRouter().double().eval()


def unlimited_router():
    return CapacityRouter(capacity=None).double().eval()


# ---------------------------------------------------------------------------------------------
# Padding


class PaddedLM(nn.Module):
    """A token model with absolute position embeddings and one causal attention layer that
    takes an ``attention_mask``: positions count the real tokens of each row (the left-padding
    convention). The planted bug, unsloth#3699's: one position vector (row 0's) for the whole
    batch. ``ignore_mask``: the mask never reaches the attention."""

    def __init__(self, vocab=20, width=8, shared_positions=False, ignore_mask=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width)
        self.where = nn.Embedding(64, width)
        self.attention = PackedAttention(width, width, documents=False)
        self.attention.out = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)
        self.shared, self.ignore = shared_positions, ignore_mask

    def forward(self, tokens, attention_mask=None):
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.shared:
            positions = positions[:1].expand_as(positions)
        h = self.embed(tokens) + self.where(positions)
        t = tokens.shape[1]
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        allowed = (j <= i)[None]
        if not self.ignore:  # real keys only (and its own, so that no row is empty)
            allowed = allowed & ((mask[:, None, :] > 0) | (i == j)[None])
        a = self.attention
        scores = a.q(h) @ a.k(h).transpose(1, 2) / math.sqrt(a.q.out_features)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return self.head(h + a.out(weights @ a.v(h)))


def padded_lm():
    return PaddedLM().double().eval()


def shared_cache_position():
    return PaddedLM(shared_positions=True).double().eval()


def mask_ignored():
    return PaddedLM(ignore_mask=True).double().eval()
