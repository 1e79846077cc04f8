"""Targets that are wrong in one way each, for the audit's bad-input handling.

Every model here is small and causal unless its name says otherwise: a one-layer causal
convolution over ``(B, T)`` scalar sequences (``--layout BT``) or tokens.
"""

import torch
from torch import nn

NOT_A_MODEL = 42


def raising_factory():
    raise ValueError("the checkpoint is missing")


def needs_arguments(width):
    return nn.Linear(width, width)


def returns_a_string():
    return "a model"


class CausalConv(nn.Module):
    """``(B, T)`` -> ``(B, T, 4)``: output t sees inputs t-2..t (inclusive, predicts next)."""

    def __init__(self, channels: int = 1, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, 4, kernel)

    def features(self, x):  # (B, C, T) -> (B, T, 4)
        x = nn.functional.pad(x, (self.kernel - 1, 0))
        return self.conv(x).transpose(1, 2)

    def forward(self, x):
        return self.features(x[:, None])


def causal_conv():
    torch.manual_seed(0)
    return CausalConv()


def double_model():
    """float64 weights: the adapter casts its inputs (whatever their dtype) to float64."""
    return causal_conv().double()


def meta_model():
    """Built on the meta device: shapes without values."""
    with torch.device("meta"):
        return CausalConv()


class Structured(CausalConv):
    """Returns a dict: the audit must be told which field holds the predictions."""

    def forward(self, x):
        y = super().forward(x)
        return {"logits": y, "hidden": y.detach(), "aux_loss": y.sum()}


def structured():
    torch.manual_seed(0)
    return Structured()


class NaNModel(CausalConv):
    def forward(self, x):
        y = super().forward(x)
        return torch.where(torch.arange(y.shape[1])[None, :, None] == 3, torch.nan, y)


class InfModel(CausalConv):
    def forward(self, x):
        return super().forward(x) / (x[:, :, None] > 1e9).float()  # 1/0 everywhere


class InPlace(CausalConv):
    """Scales its input in place before using it (causal all the same)."""

    def forward(self, x):
        x.mul_(2.0)
        return super().forward(x)


def in_place_double():
    """The same, in float64: the adapter's cast makes no copy there."""
    torch.manual_seed(0)
    return InPlace().double()


class TokenModel(nn.Module):
    """Tokens ``(B, T)`` -> ``(B, T, 4)`` through an embedding of ``vocab`` entries."""

    def __init__(self, vocab: int = 30):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 3)
        self.body = CausalConv(channels=3)

    def forward(self, tokens):
        return self.body.features(self.embedding(tokens).transpose(1, 2))


def small_vocab():
    torch.manual_seed(0)
    return TokenModel(vocab=30)


class Rounded(CausalConv):
    """Rounds its outputs: zero gradient everywhere, perturbations still see everything.
    ``leak=True`` adds the next input (rounded too): not causal, seen only by perturbations."""

    def __init__(self, leak: bool = False):
        super().__init__()
        self.leak = leak

    def forward(self, x):
        y = super().forward(x)
        if self.leak:
            y = y + torch.roll(x, -1, dims=1)[:, :, None]
        return torch.round(4 * y)


def rounded():
    torch.manual_seed(0)
    return Rounded()


def rounded_leak():
    torch.manual_seed(0)
    return Rounded(leak=True)


class IntegerPath(CausalConv):
    """Quantizes its input to integers first: no gradient reaches the input at all."""

    def forward(self, x):
        return super().forward((10 * x).long().to(x.dtype))


class Float32Inside(CausalConv):
    """Casts to float32 inside whatever the input's dtype: its float64 copy cannot run."""

    def forward(self, x):
        return super().forward(x.float())


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("this op has no backward")


class BackwardRaises(CausalConv):
    def forward(self, x):
        return super().forward(_NoBackward.apply(x))


def backward_raises():
    torch.manual_seed(0)
    return BackwardRaises()


class TrainOnly(CausalConv):
    """Raises in training mode: only inference can be audited."""

    def forward(self, x):
        if self.training:
            raise RuntimeError("training needs a mask")
        return super().forward(x)


class Symmetric(CausalConv):
    """``padding='same'``: output t sees t+1 (not causal)."""

    def features(self, x):
        x = nn.functional.pad(x, (1, 1))
        return self.conv(x).transpose(1, 2)


class WrongPolarityAttention(torch.nn.Module):
    """Attention whose boolean mask keeps what it should hide: the last row has every key
    masked, so its softmax is NaN (the other rows see the future)."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(1, 12)

    def forward(self, x):  # (B, T) -> (B, T, 4)
        q, k, v = self.qkv(x[..., None]).chunk(3, dim=-1)
        t = x.shape[1]
        keep = torch.tril(torch.ones(t, t, dtype=torch.bool))
        scores = (q @ k.transpose(1, 2)).masked_fill(keep, float("-inf"))  # wrong: fills keep
        return torch.softmax(scores, -1) @ v


class NoPredictions(CausalConv):
    """Per-position outputs with zero values each (a head sliced to nothing)."""

    def forward(self, x):
        return super().forward(x)[..., :0]
