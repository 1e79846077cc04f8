"""Third-party model patterns as they come in public repositories, reduced to a few lines each.

- ``CachedPadding``: pclucas14's PixelCNN++ builds ``init_padding`` (a ones tensor sized by its
  first input's batch) on its first call and concatenates it to every later input: any other
  batch size fails ("Sizes of tensors must match"). ``CachedBias`` caches a tensor the same way
  but adds it, so a smaller batch broadcasts to the first one's size instead of failing.
- ``LastOnlyGPT``: karpathy's nanoGPT ``GPT.forward(idx, targets=None)``, which returns
  ``(logits[:, [-1], :], None)`` without targets and every position's logits with them.
- ``FoldedWaveNet``: vincentherrmann's pytorch-wavenet, which convolves without padding and
  returns ``(batch * L, classes)``, batch and time folded, with ``L = T - R + 1`` positions.

The forward hooks (``all_logits``, ``unfold``) are the two lines a user writes instead of a
wrapper class: ``--forward tests/targets/as_they_come.py:all_logits``.
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 11
CLASSES = 7


def _mask_a(k: int) -> torch.Tensor:
    mask = torch.zeros(k, k)
    mask[: k // 2] = 1
    mask[k // 2, : k // 2] = 1
    return mask


class CachedPadding(nn.Module):
    """``(B, 1, H, W)`` -> ``(B, CLASSES, H, W)``: a mask-A convolution over the input and a
    ones channel, cached at the first call as PixelCNN++ does (strict: the mask hides the
    present)."""

    def __init__(self, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, CLASSES, k, padding=k // 2)
        self.register_buffer("mask", _mask_a(k))
        self.init_padding = None

    def forward(self, x):
        if self.init_padding is None:
            self.init_padding = torch.ones(x.shape[0], 1, *x.shape[2:], dtype=x.dtype)
        x = torch.cat((x, self.init_padding), 1)
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=1)


class CachedBias(CachedPadding):
    """Adds the cached tensor instead: a smaller batch silently broadcasts to the first's."""

    def forward(self, x):
        if self.init_padding is None:
            self.init_padding = torch.ones(x.shape[0], 1, *x.shape[2:], dtype=x.dtype)
        x = torch.cat((x, torch.zeros_like(x)), 1) + self.init_padding
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=1)


class CachedTokens(nn.Module):
    """Tokens ``(B, T)`` -> ``(B, T, VOCAB)``: the embedding plus the previous position's, with a
    zero row cached at the first call as the shift's padding (inclusive, receptive field 2)."""

    def __init__(self, width=8, leak=False):
        super().__init__()
        torch.manual_seed(0)
        self.leak = leak  # the next position's embedding instead: sees the future
        self.wte = nn.Embedding(VOCAB, width)
        self.head = nn.Linear(width, VOCAB)
        self.padding = None

    def forward(self, idx):
        h = self.wte(idx)
        if self.padding is None:
            self.padding = torch.zeros(idx.shape[0], 1, h.shape[-1])
        if self.leak:
            neighbour = torch.cat([h[:, 1:], self.padding.to(h.dtype)], 1)
        else:
            neighbour = torch.cat([self.padding.to(h.dtype), h[:, :-1]], 1)
        return self.head(torch.tanh(h + neighbour))


class LastOnlyGPT(nn.Module):
    """A two-layer nanoGPT: causal self-attention, ``forward(idx, targets=None)``."""

    def __init__(self, width=16, heads=2, layers=2, block=32, causal=True):
        super().__init__()
        self.causal = causal
        torch.manual_seed(0)
        self.wte = nn.Embedding(VOCAB, width)
        self.wpe = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.head = nn.Linear(width, VOCAB)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=x.dtype)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True) if self.causal else block(x)
        if targets is None:
            return self.head(x[:, [-1], :]), None  # inference: the last position only
        logits = self.head(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-1)
        return logits, loss


class FoldedWaveNet(nn.Module):
    """``(B, 1, T)`` -> ``(B * (T - 3), CLASSES)``: dilations 1 and 2, kernel 2, no padding
    (receptive field 4), output folded batch-major as pytorch-wavenet does."""

    def __init__(self, channels=8):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv1d(1, channels, 2, dilation=1)
        self.second = nn.Conv1d(channels, channels, 2, dilation=2)
        self.out = nn.Conv1d(channels, CLASSES, 1)

    def forward(self, x):
        y = self.out(torch.relu(self.second(torch.relu(self.first(x)))))
        n, c, length = y.shape
        return y.transpose(1, 2).reshape(n * length, c)


class Squeezing(nn.Module):
    """``(B, 1, T)`` -> ``(B, CLASSES, T)`` through ``x.squeeze()``, which also drops a batch of
    one: a causal convolution that runs at any batch size but 1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, CLASSES, 2)

    def forward(self, x):
        h = x.squeeze().unsqueeze(1)  # meant: drop the channel axis, then restore it
        return self.conv(F.pad(h, (2, 0)))[..., :-1]


def all_logits(model, x):
    """nanoGPT returns every position when given targets."""
    return model(x, targets=x)[0]


def unfold(model, x):
    """Left-pad by the receptive field less one (3), then unfold batch and time."""
    y = model(F.pad(x, (3, 0)))
    return y.reshape(x.shape[0], -1, y.shape[-1])


def cached_padding():
    return CachedPadding()


def cached_bias():
    return CachedBias()


def last_only_gpt():
    return LastOnlyGPT()


def last_only_gpt_without_mask():
    """The positive control: the same GPT without its causal mask."""
    return LastOnlyGPT(causal=False)


def cached_tokens():
    return CachedTokens()


def cached_tokens_leaky():
    return CachedTokens(leak=True)


def squeezing():
    return Squeezing()


def folded_wavenet():
    return FoldedWaveNet()
