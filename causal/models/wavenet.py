"""WaveNet (van den Oord et al., 2016a): a stack of dilated causal convolutions with gated
activations, residual and skip connections, predicting 256 mu-law classes per sample.

Each block has dilations 1, 2, 4, ..., 512; blocks repeat. As in the lecture's toy nets, the input
is shifted right by one step first, so output ``t`` is the distribution of ``x_t`` given ``x_{<t}``
(the paper's "output t predicts t+1" convention, moved one step). With kernel size ``k`` the span
is ``1 + blocks * (k - 1) * 1023`` and every position inside it is seen (no holes).

Input ``(B, 1, T)`` raw class values (mu-law codes), output ``(B, T, nb_classes)`` logits.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CausalConv1d, Normalize, gated, receptive_field_1d, shift_right


@dataclass
class WaveNetConfig:
    nb_classes: int = 256
    blocks: int = 1  # each block: dilations 1, 2, ..., 2**(layers_per_block - 1)
    layers_per_block: int = 10  # 10 layers: dilations 1 .. 512
    kernel_size: int = 2
    residual_channels: int = 16
    skip_channels: int = 32

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.layers_per_block)] * self.blocks


class ResidualLayer(nn.Module):
    """``h = tanh(W_f * x) . sigmoid(W_g * x)``; ``x + W_r h`` goes up, ``W_s h`` to the skips."""

    def __init__(self, channels, skip_channels, kernel_size, dilation):
        super().__init__()
        self.dilated = CausalConv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, kernel_size=1)
        self.skip = nn.Conv1d(channels, skip_channels, kernel_size=1)

    def forward(self, x):  # (B, C, T) -> (B, C, T), (B, S, T)
        h = gated(self.dilated(x))
        return x + self.residual(h), self.skip(h)


class WaveNet(nn.Module):
    def __init__(self, config: WaveNetConfig | None = None, **overrides):
        super().__init__()
        config = config or WaveNetConfig(**overrides)
        self.config = config
        c, s = config.residual_channels, config.skip_channels
        self.normalize = Normalize()
        self.input = nn.Conv1d(1, c, kernel_size=1)
        self.layers = nn.ModuleList(
            ResidualLayer(c, s, config.kernel_size, d) for d in config.dilations
        )
        self.head1 = nn.Conv1d(s, s, kernel_size=1)
        self.head2 = nn.Conv1d(s, config.nb_classes, kernel_size=1)
        self.span = receptive_field_1d(
            [config.kernel_size] * len(config.dilations), config.dilations
        )

    def forward(self, x):  # (B, 1, T) -> (B, T, nb_classes)
        x = self.input(shift_right(self.normalize(x)))
        skips = 0
        for layer in self.layers:
            x, skip = layer(x)
            skips = skips + skip
        out = self.head2(F.relu(self.head1(F.relu(skips))))
        return out.permute(0, 2, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# mu-law companding (ITU-T G.711), the paper's 8-bit quantization of audio


def mu_law_encode(audio: torch.Tensor, nb_classes: int = 256) -> torch.Tensor:
    """Values in ``[-1, 1]`` -> integer codes in ``[0, nb_classes)``."""
    mu = nb_classes - 1
    audio = audio.clamp(-1.0, 1.0)
    compressed = torch.sign(audio) * torch.log1p(mu * audio.abs()) / math.log1p(mu)
    return ((compressed + 1) / 2 * mu + 0.5).long().clamp(0, mu)


def mu_law_decode(codes: torch.Tensor, nb_classes: int = 256) -> torch.Tensor:
    """Integer codes in ``[0, nb_classes)`` -> values in ``[-1, 1]`` (inverse of the encoder)."""
    mu = nb_classes - 1
    compressed = 2 * codes.double() / mu - 1
    return torch.sign(compressed) * torch.expm1(compressed.abs() * math.log1p(mu)) / mu
