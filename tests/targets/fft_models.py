"""Long convolutions computed by FFT, as the S4 / S4D / H3 / Hyena family computes them.

Each layer convolves every channel with a kernel as long as the sequence. Their public code
(state-spaces/s4 ``FFTConv``, HazyResearch's Hyena ``fftconv``) does it in ``O(L log L)``: both
signals zero-padded to ``2L``, ``rfft``, a product, ``irfft``, the first ``L`` outputs kept. The
padding is what makes the product a *linear* convolution (causal: output t sees inputs <= t);
without it the product is circular and output 0 sees the last input. In float64 the future
outputs are not exactly zero, they are the FFTs' rounding (around 1e-17 of the present's
weight): a checker must tell that from dependence.

- :class:`S4DConv`: the diagonal state-space kernel ``K[l] = Re(sum_n C_n B_n exp(dt A_n l))``
  (S4D-Lin initialisation), plus the skip ``D u``, GELU, a pointwise output mixing.
- :class:`HyenaOperator`: input projection, a short causal depthwise convolution, an implicit
  long filter (a sine MLP over positional features, exponentially decaying), data-controlled
  gates, the FFT convolution, output projection.
- :class:`FFTLM`: a token model (embedding, two such layers, a head): ``--vocab`` and
  ``--predicts next``.

The planted bugs, for positive controls: ``padding=False`` (a circular convolution: output t sees
the inputs after it through the wrap-around) and ``bidirectional=True`` (a kernel over negative
lags too, as bidirectional S4 has).

``python -m properties audit tests/targets/fft_models.py:s4d --layout BTC --features 4 --length 32
--predicts next``
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = 4
VOCAB = 13


def fft_conv(u: torch.Tensor, k: torch.Tensor, *, padding: bool = True) -> torch.Tensor:
    """``u`` ``(B, H, L)`` convolved along L with ``k`` ``(H, L)`` (or ``(H, 2L)`` for a
    two-sided kernel, lags ``-L+1 .. L-1`` wrapped as FFT order), by FFT. ``padding``: to ``2L``
    (a linear, causal convolution, the library's); without it, circular."""
    length = u.shape[-1]
    n = 2 * length if padding else length
    k_f = torch.fft.rfft(k, n=n)
    u_f = torch.fft.rfft(u, n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :length]


class S4DKernel(nn.Module):
    """The S4D-Lin kernel: ``A_n = -1/2 + i pi n``, ``dt`` log-uniform, ``C`` random complex."""

    def __init__(self, channels: int, state: int = 8, bidirectional: bool = False):
        super().__init__()
        self.bidirectional = bidirectional
        heads = channels * (2 if bidirectional else 1)
        log_dt = torch.rand(heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)
        self.log_dt = nn.Parameter(log_dt)
        self.c = nn.Parameter(torch.randn(heads, state // 2, 2) * 0.5)
        self.log_a_real = nn.Parameter(torch.log(0.5 * torch.ones(heads, state // 2)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(state // 2).float().repeat(heads, 1))

    def forward(self, length: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)[:, None]
        c = torch.view_as_complex(self.c.contiguous())
        a = -torch.exp(self.log_a_real) + 1j * self.a_imag
        dta = a * dt
        vandermonde = dta[..., None] * torch.arange(length, device=a.device)  # (H, N/2, L)
        c = c * (torch.exp(dta) - 1.0) / a
        k = 2 * torch.einsum("hn,hnl->hl", c, torch.exp(vandermonde)).real  # (H, L)
        if not self.bidirectional:
            return k
        forward_k, backward_k = k.chunk(2, dim=0)
        # lags 0..L-1, then the backward kernel at lags -L..-1 (FFT order): it reads the future
        return torch.cat([forward_k, backward_k.flip(-1)], -1)  # (H, 2L)


class S4DConv(nn.Module):
    """``(B, L, H)`` -> ``(B, L, H)``: one S4D layer (FFT convolution, skip, GELU, mixing)."""

    def __init__(self, channels: int, *, padding: bool = True, bidirectional: bool = False):
        super().__init__()
        self.padding = padding
        self.kernel = S4DKernel(channels, bidirectional=bidirectional)
        self.d = nn.Parameter(torch.randn(channels))
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        u = x.transpose(1, 2)  # (B, H, L)
        k = self.kernel(u.shape[-1])
        y = fft_conv(u, k, padding=self.padding) + u * self.d[:, None]
        return self.mix(F.gelu(y)).transpose(1, 2)


class PositionalFilter(nn.Module):
    """Hyena's implicit long filter: an MLP with sine activations over positional features
    (time, and sines/cosines of it), times an exponential decay, one filter per channel."""

    def __init__(self, channels: int, width: int = 16, bands: int = 3):
        super().__init__()
        self.bands = bands
        self.net = nn.Sequential(
            nn.Linear(1 + 2 * bands, width), Sine(), nn.Linear(width, width), Sine(),
            nn.Linear(width, channels, bias=False),
        )  # fmt: skip
        self.decay = nn.Parameter(torch.linspace(0.5, 3.0, channels))

    def forward(self, length: int) -> torch.Tensor:
        dtype = self.decay.dtype
        t = torch.linspace(0, 1, length, dtype=dtype)[:, None]  # (L, 1)
        freqs = torch.arange(1, self.bands + 1, dtype=dtype)[None] * 2 * math.pi
        z = torch.cat([t, torch.sin(freqs * t), torch.cos(freqs * t)], -1)
        h = self.net(z)  # (L, H)
        return (h * torch.exp(-self.decay * t * length / 8)).T  # (H, L)


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class HyenaOperator(nn.Module):
    """``(B, L, D)`` -> ``(B, L, D)``: Hyena of order 2 (two gates, one long convolution)."""

    def __init__(self, width: int, *, padding: bool = True, bidirectional: bool = False):
        super().__init__()
        self.padding, self.bidirectional = padding, bidirectional
        self.in_proj = nn.Linear(width, 3 * width)
        self.short = nn.Conv1d(3 * width, 3 * width, 3, padding=2, groups=3 * width)
        self.filter = PositionalFilter(width)
        self.bias = nn.Parameter(torch.randn(width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        length = x.shape[1]
        u = self.in_proj(x).transpose(1, 2)  # (B, 3D, L)
        u = self.short(u)[..., :length]  # causal: padding 2 on both sides, the end cut off
        x0, x1, v = u.chunk(3, dim=1)
        k = self.filter(length)
        if self.bidirectional:  # the same filter over negative lags too
            k = torch.cat([k, k.flip(-1)], -1)
        v = fft_conv(v * x1, k, padding=self.padding) + v * x1 * self.bias[:, None]
        return self.out_proj((v * x0).transpose(1, 2))


class FFTLM(nn.Module):
    """Tokens ``(B, L)`` -> logits ``(B, L, VOCAB)``: embedding, two long-convolution layers
    with residuals and layer norms, a head (a next-token predictor)."""

    def __init__(self, layer: str = "hyena", width: int = 16, **bugs):
        super().__init__()
        make = {"hyena": HyenaOperator, "s4d": S4DConv}[layer]
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(make(width, **bugs) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
        self.head = nn.Linear(width, VOCAB)

    def forward(self, idx):
        h = self.embed(idx)
        for norm, layer in zip(self.norms, self.layers, strict=True):
            h = h + layer(norm(h))
        return self.head(h)


class Stack(nn.Module):
    """Two layers of one kind over float inputs ``(B, L, FEATURES)``."""

    def __init__(self, make, **bugs):
        super().__init__()
        self.layers = nn.Sequential(make(FEATURES, **bugs), make(FEATURES, **bugs))

    def forward(self, x):
        return self.layers(x)


def _seeded(build):
    torch.manual_seed(0)
    return build()


def s4d():
    return _seeded(lambda: Stack(S4DConv))


def s4d_circular():
    """No zero padding: the FFT's product is circular, output 0 sees the last inputs."""
    return _seeded(lambda: Stack(S4DConv, padding=False))


def s4d_bidirectional():
    return _seeded(lambda: Stack(S4DConv, bidirectional=True))


def hyena():
    return _seeded(lambda: Stack(HyenaOperator))


def hyena_circular():
    return _seeded(lambda: Stack(HyenaOperator, padding=False))


def hyena_bidirectional():
    return _seeded(lambda: Stack(HyenaOperator, bidirectional=True))


def hyena_lm():
    return _seeded(lambda: FFTLM("hyena"))


def s4d_lm():
    return _seeded(lambda: FFTLM("s4d"))


def hyena_lm_circular():
    return _seeded(lambda: FFTLM("hyena", padding=False))
