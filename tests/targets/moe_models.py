"""A small mixture-of-experts language model, dropless or capacity-limited.

Each token's hidden state goes to its top-2 of 4 experts (a router, softmax weights), the token
slots are sorted by expert and each expert's rows multiplied at once with ``torch._grouped_mm``,
as transformers 5 does by default: on CPU that kernel has no float64, so no float64 copy of the
model runs, and the regrouping that a change of the future causes can move other tokens' sums in
their last bits.

- *dropless* (``capacity=None``): every token gets its experts; per token, hence causal (a
  next-token predictor: ``inclusive``).
- *capacity-limited* (GShard / Switch Transformer style): each expert takes at most ``capacity``
  token slots of a sequence, the ones the router scores highest; the others are dropped (the
  residual carries them). A later token that scores higher takes a slot from an earlier one: the
  earlier prediction then depends on the future.

``python -m properties audit tests/targets/moe_models.py:moe_capacity --layout BT --vocab 13
--length 16 --predicts next``
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 13


class GroupedMM(torch.autograd.Function):
    """``torch._grouped_mm`` forward (float32 on CPU); the backward one matmul per group."""

    @staticmethod
    def forward(ctx, x, w, offs):
        ctx.save_for_backward(x, w, offs)
        return torch._grouped_mm(x, w, offs=offs)

    @staticmethod
    def backward(ctx, grad):
        x, w, offs = ctx.saved_tensors
        gx, gw = torch.zeros_like(x), torch.zeros_like(w)
        start = 0
        for e, end in enumerate(offs.tolist()):
            gx[start:end] = grad[start:end] @ w[e].T
            gw[e] = x[start:end].T @ grad[start:end]
            start = end
        return gx, gw, None


class Experts(nn.Module):
    """Top-2 routing over 4 two-layer experts, computed with grouped matmuls."""

    def __init__(self, width: int = 16, hidden: int = 32, experts: int = 4, capacity=None):
        super().__init__()
        self.capacity = capacity  # slots per expert and sequence (None: dropless)
        self.router = nn.Linear(width, experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(experts, width, hidden) / width**0.5)
        self.w2 = nn.Parameter(torch.randn(experts, hidden, width) / hidden**0.5)

    def forward(self, h):
        b, t, d = h.shape
        scores = self.router(h).softmax(-1)  # (B, T, E)
        weight, expert = scores.topk(2, dim=-1)  # (B, T, 2)
        if self.capacity is not None:
            weight = weight * self._kept(scores, expert)
        flat_expert = expert.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)  # token slots grouped by expert
        token = torch.arange(b * t, device=h.device).repeat_interleave(2)[order]
        counts = torch.bincount(flat_expert, minlength=self.w1.shape[0])
        offs = torch.cumsum(counts, 0).to(torch.int32)
        rows = h.reshape(b * t, d)[token]
        out = GroupedMM.apply(F.gelu(GroupedMM.apply(rows, self.w1, offs)), self.w2, offs)
        mixed = torch.zeros_like(h.reshape(b * t, d))
        mixed.index_add_(0, token, out * weight.reshape(-1)[order, None])
        return mixed.reshape(b, t, d)

    def _kept(self, scores, expert) -> torch.Tensor:
        """1 for the slots each expert keeps (its ``capacity`` best-scored ones in the sequence),
        0 for the dropped."""
        b, t, e = scores.shape
        chosen = F.one_hot(expert, e).sum(2).bool()  # (B, T, E): the token routed there
        ranked = torch.where(chosen, scores, torch.full_like(scores, -1.0))
        best = ranked.argsort(dim=1, descending=True).argsort(dim=1)  # rank in the sequence
        keep = chosen & (best < self.capacity)  # (B, T, E)
        return torch.gather(keep.to(scores.dtype), 2, expert)


class MoELM(nn.Module):
    """Tokens ``(B, T)`` -> logits ``(B, T, VOCAB)``: embedding, positions, causal attention,
    an experts layer, a head."""

    def __init__(self, capacity=None, width: int = 16, block: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Embedding(block, width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.experts = Experts(width, capacity=capacity)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, idx):
        t = idx.shape[1]
        h = self.embed(idx) + self.position(torch.arange(t, device=idx.device))
        mask = torch.triu(torch.full((t, t), float("-inf"), dtype=h.dtype), 1)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        h = h + a
        h = h + self.experts(self.norm(h))
        return self.head(h)


def moe_dropless():
    torch.manual_seed(0)
    return MoELM()


def moe_capacity():
    """Each expert keeps 4 of a sequence's token slots: tokens compete, the future wins some."""
    torch.manual_seed(0)
    return MoELM(capacity=4)
