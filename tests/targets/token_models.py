"""Token models whose embeddings are used as public code uses them, reduced to a few lines each.

- :class:`PerformerLM` (lucidrains' performer-pytorch): ``x = self.token_emb(x); x +=
  self.pos_emb(x)``, the positional embedding added *in place* to the token embedding's output,
  then causal linear attention (FAVOR+ features, prefix sums over the past). Inclusive.
- :class:`Megabyte` (MEGABYTE, Yu et al. 2023, as its public implementations write it): the
  tokens are cut into patches of ``P``; a global embedding reads them as ``(B, K, P)`` patches, a
  local one as ``(B * K, P)`` (batch and patches folded); the global model sees the patches
  before the current one, the local model the tokens before the current one in its patch.
  Strict (output t predicts token t); ``leak=True`` lets the local model see the next token.

``python -m properties audit tests/targets/token_models.py:performer --layout BT --vocab 11
--length 16 --predicts next``
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 11


class AbsolutePositionalEmbedding(nn.Module):
    def __init__(self, dim: int, block: int):
        super().__init__()
        self.emb = nn.Embedding(block, dim)

    def forward(self, x):
        return self.emb(torch.arange(x.shape[1], device=x.device))


class CausalLinearAttention(nn.Module):
    """FAVOR+ with positive random features; causal by prefix sums of ``phi(k) v^T``."""

    def __init__(self, dim: int, features: int = 16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.register_buffer("projection", torch.randn(features, dim) / dim**0.25)
        self.out = nn.Linear(dim, dim)

    def _features(self, x):
        z = x @ self.projection.T / x.shape[-1] ** 0.25
        return torch.exp(z - x.pow(2).sum(-1, keepdim=True) / (2 * x.shape[-1] ** 0.5))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        q, k = self._features(q), self._features(k)  # (B, T, M)
        kv = torch.cumsum(k[..., :, None] * v[..., None, :], dim=1)  # (B, T, M, D)
        num = torch.einsum("btm,btmd->btd", q, kv)
        den = torch.einsum("btm,btm->bt", q, torch.cumsum(k, dim=1))[..., None]
        return self.out(num / den)


class PerformerLM(nn.Module):
    def __init__(self, dim: int = 16, block: int = 64):
        super().__init__()
        self.token_emb = nn.Embedding(VOCAB, dim)
        self.pos_emb = AbsolutePositionalEmbedding(dim, block)
        self.attn = CausalLinearAttention(dim)
        self.norm = nn.LayerNorm(dim)
        self.to_out = nn.Linear(dim, VOCAB)

    def forward(self, x):
        x = self.token_emb(x)
        x += self.pos_emb(x)  # in place, on the embedding's output
        x = x + self.attn(self.norm(x))
        return self.to_out(x)


class Megabyte(nn.Module):
    """Global and local models over patches of ``patch`` tokens (cumulative means stand in for
    their causal transformers)."""

    def __init__(self, patch: int = 4, dim: int = 8, leak: bool = False):
        super().__init__()
        self.patch, self.leak = patch, leak
        self.global_emb = nn.Embedding(VOCAB, dim)
        self.local_emb = nn.Embedding(VOCAB, dim)
        self.to_local = nn.Linear(patch * dim, patch * dim)
        self.local = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, ids):
        b, t = ids.shape
        k, p = t // self.patch, self.patch
        patches = self.global_emb(ids.reshape(b, k, p)).reshape(b, k, -1)  # (B, K, P * D)
        # the global model: patch k sees the patches before it
        past = F.pad(patches, (0, 0, 1, 0))[:, :-1]
        counts = torch.arange(1, k + 1, dtype=past.dtype, device=ids.device)[None, :, None]
        context = self.to_local(torch.cumsum(past, 1) / counts).reshape(b * k, p, -1)
        h = self.local_emb(ids.reshape(b * k, p))  # (B * K, P, D): batch and patches folded
        # the local model: token i of a patch sees the tokens before it (with leak: after it)
        h = F.pad(h, (0, 0, 0, 1))[:, 1:] if self.leak else F.pad(h, (0, 0, 1, 0))[:, :-1]
        y = self.head(torch.tanh(self.local(torch.cat([h, context], -1))))
        return y.reshape(b, t, -1)


def performer():
    torch.manual_seed(0)
    return PerformerLM()


def megabyte():
    torch.manual_seed(0)
    return Megabyte()


def megabyte_leaky():
    torch.manual_seed(0)
    return Megabyte(leak=True)
