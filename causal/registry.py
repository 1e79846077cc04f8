"""The built-in models by name, with what each one *declares* about itself.

A :class:`ModelSpec` holds a constructor, the grid the model is audited on by default, the number
of classes, the tensor layouts it reads and writes, and its declared facts: the causality mode
(all ours are ``strict``: output ``t`` predicts ``x_t`` from ``x_{<t}``), the analytic receptive
field where a formula applies, and whether a 2D model should have a blind spot. The audit measures
these facts and compares; the registry never tells the audit what to find.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from . import models


@dataclass(frozen=True)
class Declared:
    """What a model claims. ``None`` means "no claim" (no formula applies)."""

    mode: str = "strict"
    span: int | None = None  # how far back, in raster ranks, the furthest visible input is
    size: int | None = None  # number of inputs an interior output depends on
    holes: int | None = None  # positions inside the span that are not seen (1D)
    blind_spot: bool | None = None  # 2D only


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    build: Callable[..., nn.Module]  # build(nb_classes=..., grid=...) -> module
    grid: tuple[int, ...]  # default grid for audits and sampling: (T,) or (H, W)
    nb_classes: int
    layout: str  # "input->output", e.g. "BCT->BTC"
    declare: Callable[[tuple[int, ...]], Declared] = field(default=lambda grid: Declared())

    @property
    def dims(self) -> int:
        return len(self.grid)

    def make(self, nb_classes: int | None = None, grid: tuple[int, ...] | None = None):
        return self.build(nb_classes=nb_classes or self.nb_classes, grid=tuple(grid or self.grid))

    def declared(self, grid: tuple[int, ...] | None = None) -> Declared:
        return self.declare(tuple(grid or self.grid))


def _two_stack_declared(ks: int = 5, layers: int = 2):
    """Two-stack PixelCNN: ``layers * (ks//2)`` rows above (+1 for the shift) over
    ``2 * layers * (ks//2) + 1`` columns, and ``layers * (ks//2) + 1`` pixels to the left."""
    reach = layers * (ks // 2)

    def declare(grid):
        _, width = grid
        return Declared(
            size=(reach + 1) * (2 * reach + 1) + reach + 1,
            span=(reach + 1) * width + reach,
            blind_spot=False,
        )

    return declare


def _wavenet_declared(grid):
    span = 1 + sum(models.WaveNetConfig().dilations)
    return Declared(span=span, size=span, holes=0)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "nettoy1d",
            "lecture NetToy1d: shift, 4 causal convs (ks=2), 1x1 head",
            lambda nb_classes, grid: models.NetToy1d(nb_classes),
            grid=(64,),
            nb_classes=32,
            layout="BCT->BTC",
            declare=lambda grid: Declared(span=5, size=5, holes=0),
        ),
        ModelSpec(
            "nettoy1d_dilated",
            "lecture NetToy1dWithDilation: dilations 2, 4, 8, 16 (no dilation 1)",
            lambda nb_classes, grid: models.NetToy1dWithDilation(nb_classes),
            grid=(64,),
            nb_classes=32,
            layout="BCT->BTC",
            declare=lambda grid: Declared(span=31, size=16, holes=15),
        ),
        ModelSpec(
            "wavenet",
            "WaveNet: gated residual stack, dilations 1..512, 256 mu-law classes",
            lambda nb_classes, grid: models.WaveNet(nb_classes=nb_classes),
            grid=(1100,),
            nb_classes=256,
            layout="BCT->BTC",
            declare=_wavenet_declared,
        ),
        ModelSpec(
            "pixelcnn",
            "lecture two-stack PixelCNN: vertical + horizontal stacks, merged by 1x1 convs",
            lambda nb_classes, grid: models.PixelCNN(nb_classes),
            grid=(28, 28),
            nb_classes=17,
            layout="BCHW->BHWC",
            declare=_two_stack_declared(),
        ),
        ModelSpec(
            "pixelcnn_masked",
            "original masked PixelCNN (mask A, then mask B): has the blind spot",
            lambda nb_classes, grid: models.MaskedPixelCNN(nb_classes),
            grid=(28, 28),
            nb_classes=17,
            layout="BCHW->BHWC",
            declare=lambda grid: Declared(blind_spot=True),
        ),
        ModelSpec(
            "pixelcnn_gated",
            "Gated PixelCNN: vertical stack feeds horizontal stack, residuals, no blind spot",
            lambda nb_classes, grid: models.GatedPixelCNN(nb_classes),
            grid=(28, 28),
            nb_classes=17,
            layout="BCHW->BHWC",
            declare=lambda grid: Declared(blind_spot=False),
        ),
        ModelSpec(
            "pixelcnn_pe",
            "two-stack PixelCNN with Boolean positional encoding channels",
            lambda nb_classes, grid: models.PixelCNNWithPositionalEncoding(nb_classes, grid),
            grid=(28, 28),
            nb_classes=17,
            layout="BCHW->BHWC",
            declare=_two_stack_declared(),
        ),
    ]
}


def get(name: str) -> ModelSpec:
    """The spec of a built-in model, or a ``KeyError`` that lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
