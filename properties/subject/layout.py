"""Tensor layouts: how a model's native tensors map to the canonical ``(B, *grid, C)``.

A layout is a string of axis letters: ``B`` the batch, ``C`` the channels (features on the input,
classes or features on the output), and one letter per grid dimension (``T`` for time, ``H`` and
``W`` for images, any other capital for other grids). ``BCT`` is ``nn.Conv1d``'s layout, ``BTC``
a transformer's, ``BT`` a sequence of tokens (or of scalars), ``BCHW`` ``nn.Conv2d``'s.

The canonical order is ``B``, the grid letters in the order they appear, then ``C``. A layout
without ``C`` has one implicit channel (tokens have none).

Letters in parentheses share one native axis, the last letter varying fastest (C order), as
``reshape`` would lay them out: ``B(TC)`` is a MADE-style ``(B, T * K)`` output whose ``K``
values per position are contiguous, ``B(CT)`` one whose positions are contiguous per output.
The size of ``C`` in a group is inferred (the grid gives the other sizes).
"""

import math
import re
from dataclasses import dataclass

import torch

from properties.errors import AdapterError

__all__ = [
    "KNOWN_EXAMPLES",
    "Layout",
    "default_layout",
    "infer_output_layout",
    "parse_layout",
    "parse_layout_pair",
]

KNOWN_EXAMPLES = "BTC, BCT, BT, BCHW, BHWC"


@dataclass(frozen=True)
class Layout:
    letters: str  # as written, e.g. "BCT" or "B(TC)"

    @property
    def flat(self) -> str:
        """The axis letters without grouping: ``B(TC)`` -> ``BTC``."""
        return self.letters.replace("(", "").replace(")", "")

    @property
    def groups(self) -> tuple[str, ...]:
        """The native axes, each a string of the letters it holds: ``B(TC)`` -> ``(B, TC)``."""
        return tuple(g or a for g, a in re.findall(r"\(([A-Z]*)\)|([A-Z])", self.letters))

    @property
    def grouped(self) -> bool:
        return "(" in self.letters

    @property
    def grid_letters(self) -> str:
        return "".join(a for a in self.flat if a not in "BC")

    @property
    def has_channels(self) -> bool:
        return "C" in self.flat

    @property
    def canonical(self) -> str:
        return "B" + self.grid_letters + ("C" if self.has_channels else "")

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical ``(B, *grid, C)`` (or ``(B, *grid)`` without C) -> native."""
        x = x.permute([self.canonical.index(a) for a in self.flat])
        if self.grouped:
            sizes = dict(zip(self.flat, x.shape, strict=True))
            x = x.reshape([math.prod(sizes[a] for a in g) for g in self.groups])
        return x

    def to_canonical(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """Native -> canonical ``(B, *grid, C)`` (or ``(B, *grid)`` without C).

        ``grid`` is needed to split grouped axes (``B(TC)``)."""
        if x.dim() != len(self.groups):
            raise AdapterError(
                f"the model's output has shape {tuple(x.shape)}, {x.dim()} axes, but output "
                f"layout {self} has {len(self.groups)}",
                "pass the layout the model really uses (--layout IN->OUT)",
            )
        if self.grouped:
            x = x.reshape(self.split_shape(tuple(x.shape), grid))
        return x.permute([self.flat.index(a) for a in self.canonical])

    def split_shape(self, shape: tuple[int, ...], grid: tuple[int, ...] | None):
        """The ungrouped shape (one size per letter of :attr:`flat`) of a native ``shape``."""
        if grid is None:
            raise ValueError("a grouped layout needs the grid to split its axes")
        known = dict(zip(self.grid_letters, grid, strict=True))
        sizes = []
        for group, size in zip(self.groups, shape, strict=True):
            if len(group) == 1:
                sizes.append(size)
                continue
            rest = math.prod(known[a] for a in group if a != "C")
            channels = size // rest if "C" in group else 1
            if rest * channels != size:
                raise AdapterError(
                    f"axis ({group}) of layout {self} has size {size}, which is not "
                    f"{'a multiple of ' if 'C' in group else ''}{rest} (grid {tuple(grid)})",
                    "check the layout's grouping and --length/--shape",
                )
            sizes.extend(channels if a == "C" else known[a] for a in group)
        return tuple(sizes)

    def native_shape(self, batch: int, grid: tuple[int, ...], channels: int) -> tuple[int, ...]:
        sizes = dict(zip(self.grid_letters, grid, strict=True), B=batch, C=channels)
        return tuple(math.prod(sizes[a] for a in g) for g in self.groups)

    def __str__(self) -> str:
        return self.letters


def parse_layout(text: str, grid_dims: int, what: str = "layout") -> Layout:
    """Validate one layout string against the number of grid dimensions."""
    letters = text.strip().upper()
    flat = letters.replace("(", "").replace(")", "")
    problem = None
    if not flat.isascii() or not flat.isalpha():
        problem = f"{what} {text!r} has characters other than axis letters"
    elif not re.fullmatch(r"(?:[A-Z]|\([A-Z]{2,}\))+", letters):
        problem = (
            f"{what} {text!r} has unbalanced, nested or one-letter groups "
            "(a group is two or more letters in parentheses, e.g. B(TC))"
        )
    elif len(set(flat)) != len(flat):
        problem = f"{what} {text!r} repeats an axis letter"
    elif flat[0] != "B" or letters[0] != "B":
        problem = f"{what} {text!r} must start with the batch axis B, on its own"
    elif len(Layout(letters).grid_letters) != grid_dims:
        problem = (
            f"{what} {text!r} has {len(Layout(letters).grid_letters)} grid axes but the grid has "
            f"{grid_dims}"
        )
    if problem:
        raise AdapterError(
            problem, f"use letters B, C and one per grid axis, e.g. {KNOWN_EXAMPLES}"
        )
    return Layout(letters)


def parse_layout_pair(text: str, grid_dims: int) -> tuple[Layout, Layout | None]:
    """``"BCT"`` (output layout inferred later) or ``"BCT->BTC"`` (both given)."""
    if "->" in text:
        left, right = text.split("->", 1)
        return parse_layout(left, grid_dims), parse_layout(right, grid_dims, "output layout")
    return parse_layout(text, grid_dims), None


def default_layout(grid_dims: int, tokens: bool) -> str:
    if tokens:
        return "BT" if grid_dims == 1 else "B" + "HWD"[:grid_dims]
    return {1: "BTC", 2: "BCHW"}.get(grid_dims, "BC" + "HWDEFG"[:grid_dims])


def infer_output_layout(
    shape: tuple[int, ...], batch: int, grid: tuple[int, ...], input_layout: Layout
) -> Layout:
    """Pick the output layout that fits ``shape``, or explain why none (or several) do.

    Candidates: the input's layout, channels-last, channels-first, and no channel axis. Several
    candidates that fit *differently* (a grid of 32 positions and 32 classes: ``(B, 32, 32)``)
    are ambiguous: we refuse to guess, since a wrong guess gives a wrong verdict.
    """
    grid_letters = input_layout.grid_letters
    candidates = [
        input_layout.flat,  # without C, the same as the last candidate
        "B" + grid_letters + "C",
        "BC" + grid_letters,
        "B" + grid_letters,
    ]
    fitting = []
    for letters in dict.fromkeys(candidates):
        layout = Layout(letters)
        if len(shape) != len(letters) or shape[0] != batch:
            continue
        sizes = dict(zip(layout.grid_letters, grid, strict=True))
        if all(shape[i] == sizes[a] for i, a in enumerate(letters) if a in sizes):
            fitting.append(layout)
    if not fitting:
        channels_last = "(" + ", ".join(map(str, (batch, *grid, "K"))) + ")"
        channels_first = "(" + ", ".join(map(str, (batch, "K", *grid))) + ")"
        fix = (
            "pass the output layout explicitly (--layout IN->OUT, e.g. BCT->BTC), or check "
            "--length/--shape and --output"
        )
        n = math.prod(grid)
        if len(shape) == 2 and shape[0] == batch and shape[1] % n == 0:
            g = grid_letters
            fix = (
                "if the model flattens positions and outputs into one axis, say in which order "
                f"(--layout {input_layout}->B({g}C) or {input_layout}->B(C{g})), or check "
                "--length/--shape and --output"
            )
        raise AdapterError(
            f"the model's output has shape {tuple(shape)}, which does not fit grid {grid} "
            f"(expected e.g. {channels_last} or {channels_first})",
            fix,
        )
    if len(fitting) > 1:
        names = " or ".join(f"{input_layout}->{f}" for f in fitting)
        raise AdapterError(
            f"the model's output shape {tuple(shape)} fits several layouts for grid {grid}",
            f"say which one with --layout ({names}), or use a grid size that differs from the "
            "number of output channels",
        )
    return fitting[0]
