"""Small models with a cached (stepped) path beside their full pass, for the incremental check;
each one correct, or with one planted bug of a class seen in real code.

Every model has ``forward(x)`` (the full pass) and ``step(chunk, state) -> (predictions, state)``
(the cached path; ``state`` None at the start); :func:`step` is the hook the check calls::

    python -m properties audit tests/targets/incremental_models.py:tiny_lm --layout BT \
        --vocab 11 --length 12 --checks incremental --step tests/targets/incremental_models.py:step

The planted bugs (``bug=``):

- ``rope_restart``: the chunk's positions restart at 0 (transformers#43082: chunked prefill gave
  RoPE the wrong positions from the second chunk on);
- ``window_forgotten``: the cached path attends to every cached key, not the last ``window``;
- ``alibi_query_length``: ALiBi's bias built over the query's length (keras-hub#2861: zero at a
  one-token decode, so generation ran without ALiBi);
- ``unsliced_read``: a static cache read whole, slots not written yet included
  (tt-metal#41215's decode mask): harmless while those slots hold zeros (linear attention),
  caught only when they are poisoned;
- ``drop_buffer``: a streaming convolution that starts every chunk from zeros;
- ``reset_state``: a recurrent state reset at every chunk boundary;
- ``state_in_module``: a streaming convolution that keeps its buffer in the module and returns
  no state: right along one path, wrong after a restore.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 11
FEATURES = 2


def step(model, chunk, state):
    """The step hook of every model here."""
    return model.step(chunk, state)


# ---------------------------------------------------------------------------------------------
# Attention with a KV cache: RoPE or ALiBi, an optional sliding window


class Rotary(nn.Module):
    """``positions (L,) -> (cos, sin)``, each ``(L, dh / 2)``."""

    def __init__(self, head_dim: int):
        super().__init__()
        half = head_dim // 2
        self.register_buffer("freqs", 1.0 / 10000 ** (torch.arange(half) / half), persistent=False)

    def forward(self, positions):
        angles = positions[:, None].to(self.freqs.dtype) * self.freqs[None]
        return angles.cos(), angles.sin()


def rotate(x, cos, sin):  # (B, H, L, dh)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Attention(nn.Module):
    def __init__(self, dim, heads, position, window, bug):
        super().__init__()
        self.heads, self.position, self.window, self.bug = heads, position, window, bug
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rotary = Rotary(dim // heads) if position == "rope" else None
        self.register_buffer("slopes", 2.0 ** -torch.arange(1, heads + 1), persistent=False)

    def forward(self, h, past=None, start=0):
        """``h (B, L, D)`` at positions ``start ..``, after the cached ``past = (k, v)``."""
        b, length, d = h.shape
        q, k, v = self.qkv(h).reshape(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        queries = torch.arange(start, start + length)  # (L,) their true positions
        if self.rotary is not None:
            given = torch.arange(length) if self.bug == "rope_restart" else queries
            cos, sin = self.rotary(given)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        keys = torch.arange(k.shape[2])  # (S,)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, L, S)
        if self.position == "alibi":  # -slope (i - j) == slope j - slope i: per key, up to rows
            over = torch.arange(length) if self.bug == "alibi_query_length" else keys
            bias = F.pad(over.to(h.dtype), (len(keys) - len(over), 0))
            scores = scores + self.slopes[:, None, None] * bias
        allowed = keys[None, :] <= queries[:, None]
        forgotten = past is not None and self.bug == "window_forgotten"
        if self.window is not None and not forgotten:
            allowed &= keys[None, :] > queries[:, None] - self.window
        scores = scores.masked_fill(~allowed, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, d)
        return self.out(y), (k, v)


class Block(nn.Module):
    def __init__(self, dim, heads, position, window, bug):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, position, window, bug)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h, past=None, start=0):
        a, kv = self.attention(self.norm1(h), past, start)
        h = h + a
        return h + self.mlp(self.norm2(h)), kv


@dataclass
class KVCache:
    layers: list = field(default_factory=list)  # (k, v) per layer
    length: int = 0


class TinyLM(nn.Module):
    """Tokens ``(B, T) -> (B, T, VOCAB)`` logits; attention with RoPE or ALiBi."""

    def __init__(self, position="rope", window=None, bug=None, dim=16, heads=2, layers=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(
            Block(dim, heads, position, window, bug) for _ in range(layers)
        )
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, ids):
        return self.step(ids, None)[0]

    def step(self, ids, cache):
        cache = cache or KVCache()
        h, layers = self.embed(ids), []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, cache.layers[i] if cache.layers else None, cache.length)
            layers.append(kv)
        return self.head(h), KVCache(layers, cache.length + ids.shape[1])


def tiny_lm(bug=None, position="rope", window=None):
    torch.manual_seed(0)
    return TinyLM(position, window, bug).eval()


def rope_restart():
    return tiny_lm("rope_restart")


def windowed_lm():
    return tiny_lm(window=4)


def window_forgotten():
    return tiny_lm("window_forgotten", window=4)


def alibi_lm():
    return tiny_lm(position="alibi")


def alibi_query_length():
    return tiny_lm("alibi_query_length", position="alibi")


# ---------------------------------------------------------------------------------------------
# Linear attention over a static cache: unwritten slots are harmless zeros, until poisoned


class StaticKV:
    """Preallocated keys and values of every layer, ``(layers, B, H, slots, dh)``; ``length``
    slots written. ``poison_unwritten`` is the incremental check's hook."""

    def __init__(self, layers, batch, heads, slots, head_dim, dtype):
        self.k = torch.zeros(layers, batch, heads, slots, head_dim, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def poison_unwritten(self, value):
        self.k[..., self.length :, :] = value
        self.v[..., self.length :, :] = value
        return 2 * self.k[..., self.length :, :].numel()


class LinearAttentionLM(nn.Module):
    """``y_t = sum_{s <= t} (q_t . k_s) v_s``, tokens in, logits out; the cached path writes
    keys and values into a static cache of ``slots`` positions."""

    def __init__(self, bug=None, dim=8, heads=2, layers=2, slots=32):
        super().__init__()
        self.bug, self.heads, self.slots = bug, heads, slots
        self.embed = nn.Embedding(VOCAB, dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, ids):
        h = self.embed(ids)
        t = ids.shape[1]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        for qkv in self.qkv:
            q, k, v = self._heads(qkv(h))
            scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0) * self.norm
            h = h + self._merge(scores @ v)
        return self.head(h)

    def step(self, ids, cache):
        b, length = ids.shape
        h = self.embed(ids)
        if cache is None:
            dh = h.shape[-1] // self.heads
            cache = StaticKV(len(self.qkv), b, self.heads, self.slots, dh, h.dtype)
        start = cache.length
        queries = torch.arange(start, start + length)
        slots = torch.arange(self.slots)
        mask = slots[None, :] <= queries[:, None]
        if self.bug == "unsliced_read":  # the mask covers the written slots only
            mask |= slots[None, :] >= start + length
        for i, qkv in enumerate(self.qkv):
            q, k, v = self._heads(qkv(h))
            cache.k[i, :, :, start : start + length] = k
            cache.v[i, :, :, start : start + length] = v
            scores = (q @ cache.k[i].transpose(-1, -2)).masked_fill(~mask, 0.0)
            h = h + self._merge(scores * self.norm @ cache.v[i])
        cache.length = start + length
        return self.head(h), cache

    norm = 0.25  # scales the scores (no softmax to keep them in range)

    def _heads(self, x):  # (B, L, 3D) -> 3 x (B, H, L, dh)
        b, length, _ = x.shape
        return x.reshape(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)

    @staticmethod
    def _merge(y):  # (B, H, L, dh) -> (B, L, D)
        return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)


def linear_lm(bug=None):
    torch.manual_seed(0)
    return LinearAttentionLM(bug).eval()


def unsliced_read():
    return linear_lm("unsliced_read")


# ---------------------------------------------------------------------------------------------
# A streaming causal convolution (BCT -> BCT) and a recurrent net (BTC -> BTC)


class StreamingConv(nn.Module):
    """Causal dilated convolutions (kernel 3, dilations 1, 2), each keeping the last
    ``(k - 1) * d`` inputs of the previous chunk in its buffer."""

    def __init__(self, bug=None, channels=6):
        super().__init__()
        self.bug = bug
        self.convs = nn.ModuleList([
            nn.Conv1d(FEATURES, channels, 3, dilation=1),
            nn.Conv1d(channels, channels, 3, dilation=2),
        ])
        self.head = nn.Conv1d(channels, 3, 1)
        self.kept = None  # state_in_module: the buffers live here

    def forward(self, x):  # (B, C, T)
        for conv in self.convs:
            x = torch.relu(conv(F.pad(x, ((conv.kernel_size[0] - 1) * conv.dilation[0], 0))))
        return self.head(x)

    def step(self, x, state):
        buffers = state
        if self.bug == "state_in_module":  # the state only says that it is not a fresh start
            buffers = None if state is None else self.kept
        if buffers is None or self.bug == "drop_buffer":
            buffers = [x.new_zeros(len(x), c.in_channels, 2 * c.dilation[0]) for c in self.convs]
        kept = []
        for conv, buffer in zip(self.convs, buffers, strict=True):
            padded = torch.cat([buffer, x], -1)
            kept.append(padded[..., -buffer.shape[-1] :])
            x = torch.relu(conv(padded))
        if self.bug == "state_in_module":
            self.kept = kept
            return self.head(x), {"started": True}
        return self.head(x), kept


def streaming_conv(bug=None):
    torch.manual_seed(0)
    return StreamingConv(bug).eval()


def drop_buffer():
    return streaming_conv("drop_buffer")


def state_in_module():
    return streaming_conv("state_in_module")


class Recurrent(nn.Module):
    """A GRU over ``(B, T, FEATURES)``, a linear head per position."""

    def __init__(self, bug=None, hidden=8):
        super().__init__()
        self.bug = bug
        self.gru = nn.GRU(FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.head(self.gru(x)[0])

    def step(self, x, h):
        out, h = self.gru(x, None if self.bug == "reset_state" else h)
        return self.head(out), h


def recurrent(bug=None):
    torch.manual_seed(0)
    return Recurrent(bug).eval()


def reset_state():
    return recurrent("reset_state")
