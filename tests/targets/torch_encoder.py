"""``torch.nn.TransformerEncoder`` wrapped to take ``(B, T, F)`` and return ``(B, T, K)``.

How the causal structure is asked for is the point:

- ``encoder_mask``: an explicit ``nn.Transformer.generate_square_subsequent_mask(T)``;
- ``encoder_mask_hint``: the mask and the ``is_causal=True`` hint;
- ``encoder_hint``: only the ``is_causal=True`` hint, no mask. In torch 2.13 the eval + no_grad
  fast path (``torch._transformer_encoder_layer_fwd``) ignores the hint and attends to the
  future; with autograd on, or in training mode, ``MultiheadAttention`` raises "Need attn_mask
  if specifying the is_causal hint";
- ``encoder_hint_seq_first``: the same with ``batch_first=False``: no fast path, so it raises
  in every mode (the audit's answer is that one-line error);
- ``encoder_nomask``: neither (bidirectional).
"""

import torch
from torch import nn

FEATURES = 2
CLASSES = 3


class Encoder(nn.Module):
    def __init__(
        self,
        causal: str,
        d_model: int = 16,
        layers: int = 2,
        dropout: float = 0.1,
        batch_first: bool = True,
    ):
        super().__init__()
        self.causal = causal
        self.batch_first = batch_first
        self.embed = nn.Linear(FEATURES, d_model)
        self.position = nn.Parameter(0.1 * torch.randn(64, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=2, dim_feedforward=32, dropout=dropout, batch_first=batch_first
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, CLASSES)

    def forward(self, x):  # (B, T, F) -> (B, T, K)
        t = x.shape[1]
        h = self.embed(x) + self.position[:t]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device, dtype=h.dtype)
        if not self.batch_first:
            h = h.transpose(0, 1)  # (T, B, D)
        if self.causal == "mask":
            h = self.encoder(h, mask=mask)
        elif self.causal == "mask_hint":
            h = self.encoder(h, mask=mask, is_causal=True)
        elif self.causal == "hint":
            h = self.encoder(h, is_causal=True)
        else:
            h = self.encoder(h)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h)


def _build(causal: str, **options) -> Encoder:
    torch.manual_seed(0)
    return Encoder(causal, **options)


def encoder_mask() -> Encoder:
    return _build("mask")


def encoder_mask_hint() -> Encoder:
    return _build("mask_hint")


def encoder_hint() -> Encoder:
    return _build("hint")


def encoder_hint_seq_first() -> Encoder:
    return _build("hint", batch_first=False)


def encoder_nomask() -> Encoder:
    return _build("none")
