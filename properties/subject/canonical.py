"""The subject: any model, seen through one canonical form.

Every check in this package speaks to a :class:`Subject` and never to a model directly::

    x: (B, N, F) floats   or   (B, N) long tokens      N = prod(grid), flattened in C order
    y = subject(x): (B, N, K)                           one prediction per position

plus the grid, an *order* (``ranks[n]`` is the generation rank of flat position ``n``: raster
order by default, any permutation for MADE-style models) and a *convention* for what output ``t``
predicts: ``current`` (``x_t`` from ``x_{<t}``, the lecture's), ``next`` (``x_{t+1}`` from
``x_{<=t}``, GPT's and most TCNs') or ``auto`` (either is fine).

The adapter does the rest: layouts (``BCT``, ``BTC``, ``BT`` tokens, ``BCHW``, ``BHWC``...),
structured outputs (``output.logits``, ``out["logits"]``, ``out[0]``) and the embedding of token
models (gradients are taken at its output), a user's ``forward(model, x)`` hook for models
whose call is not one prediction per position (:mod:`properties.subject.adapters`), models that run
at one batch size only (:mod:`properties.subject.batching`), and sub-pixel orders, where the input's
channel axis is a grid axis ``S`` (a colour PixelCNN's R -> G -> B). No check knows which model it
is looking at.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from properties.errors import AdapterError, AuditError, ModelError, describe
from properties.subject import adapters, batching
from properties.subject.layout import (
    Layout,
    default_layout,
    infer_output_layout,
    parse_layout,
    parse_layout_pair,
)

__all__ = [
    "CONVENTIONS",
    "NAMED_ORDERS",
    "SUBPIXEL",
    "Subject",
    "make_subject",
    "named_order",
    "output_fields",
    "ranks_from_order",
    "raster_ranks",
    "select_output",
]

CONVENTIONS = ("current", "next", "auto")


# ---------------------------------------------------------------------------------------------
# Structured outputs


def output_fields(out: Any) -> list[str]:
    """The names a user could pass to ``--output`` for this value."""
    if isinstance(out, dict):
        return [str(k) for k in out]
    if hasattr(out, "keys") and callable(out.keys):  # transformers' ModelOutput
        return [str(k) for k in out.keys()]
    if isinstance(out, (tuple, list)):
        return [str(i) for i in range(len(out))]
    if hasattr(out, "__dataclass_fields__"):
        return list(out.__dataclass_fields__)
    return [k for k in vars(out) if not k.startswith("_")] if hasattr(out, "__dict__") else []


def select_output(out: Any, path: str | None) -> torch.Tensor:
    """Follow ``path`` ("logits", "0", "hidden_states.-1") into a structured output."""
    if path is None:
        if isinstance(out, torch.Tensor):
            return out
        fields = output_fields(out)
        example = "logits" if "logits" in fields or not fields else fields[0]
        raise AdapterError(
            f"the model returns a {type(out).__name__}, not a tensor (fields: "
            f"{', '.join(fields) or 'none'})",
            f"say which field holds the predictions with --output (e.g. --output {example})",
        )
    value = out
    for step in path.split("."):
        value = _step_into(value, step, path)
    if not isinstance(value, torch.Tensor):
        raise AdapterError(
            f"--output {path} selects a {type(value).__name__}, not a tensor",
            f"pick a tensor field of the output (fields: {', '.join(output_fields(value))})",
        )
    return value


def _step_into(value: Any, step: str, path: str) -> Any:
    if isinstance(value, (tuple, list)) and step.lstrip("-").isdigit():
        if -len(value) <= int(step) < len(value):
            return value[int(step)]
    elif isinstance(value, dict) or (hasattr(value, "keys") and callable(value.keys)):
        if step in value.keys():
            return value[step]
    elif hasattr(value, step):
        return getattr(value, step)
    raise AdapterError(
        f"the model's output has no field {step!r} (in --output {path}; fields: "
        f"{', '.join(output_fields(value)) or 'none'})",
        "pass one of the listed fields to --output",
    )


# ---------------------------------------------------------------------------------------------
# Orders


def raster_ranks(n: int) -> torch.Tensor:
    return torch.arange(n)


def ranks_from_order(order: Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    """``order[i]`` is the flat position generated i-th; return ``ranks[position]``."""
    order = torch.as_tensor(order).flatten()
    if order.is_floating_point() or order.is_complex():
        if not torch.equal(order, order.real.round()):
            raise AdapterError(
                "the order has values that are not whole numbers",
                "pass the positions in generation order, as integers",
            )
        order = order.real
    order = order.long()
    if order.numel() != n or not torch.equal(order.sort().values, torch.arange(n)):
        raise AdapterError(
            f"the order must be a permutation of the {n} positions of the grid "
            f"(got {order.numel()} values)",
            "pass the positions in generation order, each exactly once",
        )
    ranks = torch.empty(n, dtype=torch.long)
    ranks[order] = torch.arange(n)
    return ranks


# ---------------------------------------------------------------------------------------------
# The subject


@dataclass
class Subject:
    """A model in canonical form. Build one with :func:`make_subject`."""

    model: Callable[..., Any]
    grid: tuple[int, ...]
    layout_in: Layout
    layout_out: Layout | None = None  # inferred from the first call when None
    features: int = 1  # F of float inputs; ignored for tokens
    vocab: int | None = None  # tokens in [0, vocab) when set
    output: str | None = None  # field of a structured output
    ranks: torch.Tensor = field(default=None)  # (N,) generation rank of each flat position
    predicts: str = "auto"
    classes: int | None = None  # float inputs are class indices and outputs logits over them
    name: str = "model"
    value_range: tuple[float, float] | None = None  # where random float inputs are drawn
    notes: list[str] = field(default_factory=list)
    forward: Callable[[Any, torch.Tensor], Any] | None = None  # (model, x) -> predictions
    batch: int | None = None  # run the model at this batch size only (slices, padding)
    first_batch: int | None = None  # the batch size of the first call that worked
    subpixel_axis: int | None = None  # grid axis of the input's channels, when they are ordered

    def __post_init__(self):
        if self.ranks is None:
            self.ranks = raster_ranks(self.n_positions)

    # -- shape facts ---------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        return math.prod(self.grid)

    @property
    def tokens(self) -> bool:
        return self.vocab is not None

    @property
    def module(self) -> nn.Module | None:
        return self.model if isinstance(self.model, nn.Module) else None

    @property
    def is_raster(self) -> bool:
        return torch.equal(self.ranks, raster_ranks(self.n_positions))

    @property
    def pixel_grid(self) -> tuple[int, ...]:
        """The grid without the sub-pixel (channel) axis, when the channels are ordered."""
        if self.subpixel_axis is None:
            return self.grid
        return self.grid[: self.subpixel_axis] + self.grid[self.subpixel_axis + 1 :]

    @property
    def pixel_of(self) -> torch.Tensor:
        """(N,) the flat pixel (in :attr:`pixel_grid`) of each flat position."""
        if self.subpixel_axis is None:
            return torch.arange(self.n_positions)
        pixels = torch.arange(math.prod(self.pixel_grid)).reshape(self.pixel_grid)
        return pixels.unsqueeze(self.subpixel_axis).expand(self.grid).flatten()

    @property
    def is_pixel_raster(self) -> bool:
        """Raster order over pixels (and a pixel's channels one after another, when ordered):
        where blind spots and clipped receptive fields are defined."""
        if self.subpixel_axis is None:
            return self.is_raster
        order = named_order("raster+channels", self.grid, self.subpixel_axis)
        return torch.equal(self.ranks, ranks_from_order(order, self.n_positions))

    @property
    def device(self) -> torch.device:
        for t in _tensors_of(self.module):
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in _tensors_of(self.module):
            if t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    def position(self, flat: int) -> int | list[int]:
        """A flat position as the user sees it: an int in 1D, ``[i, j]`` in 2D."""
        if len(self.grid) == 1:
            return int(flat)
        coords, flat = [], int(flat)
        for g in reversed(self.grid):
            flat, coord = divmod(flat, g)
            coords.append(coord)
        return coords[::-1]

    def with_model(self, model) -> "Subject":
        return replace(self, model=model)  # every other field shared, the notes list included

    # -- inputs -------------------------------------------------------------------------------
    def draw_inputs(
        self, n: int, generator: torch.Generator, *, integral: bool = False
    ) -> torch.Tensor:
        """Random canonical inputs: tokens over the whole vocabulary, floats in
        ``value_range`` (standard normal without one). ``integral`` rounds class inputs."""
        shape = (n, self.n_positions)
        if self.tokens:
            return torch.randint(self.vocab, shape, generator=generator)
        if self.value_range is not None:
            lo, hi = self.value_range
            x = lo + (hi - lo) * torch.rand(shape + (self.features,), generator=generator)
            x = x.double()
        else:
            x = torch.randn(shape + (self.features,), generator=generator, dtype=torch.float64)
        if integral and self.classes is not None:
            x = x.round().clamp(0, self.classes - 1)
        return x

    def targets(self, x: torch.Tensor, convention: str) -> torch.Tensor | None:
        """Class targets per output position, ``-1`` where there is none (the last position of
        a ``next`` model); ``None`` when the subject has no class targets."""
        if self.tokens:
            classes = x
        elif self.classes is not None and self.features == 1:
            classes = x[..., 0].round().long().clamp(0, self.classes - 1)
        else:
            return None
        if convention != "next":
            return classes
        # next: output at rank r predicts the position of rank r + 1.
        by_rank = torch.argsort(self.ranks)  # by_rank[r] = position of rank r
        out = torch.full_like(classes, -1)
        out[:, by_rank[:-1]] = classes[:, by_rank[1:]]
        return out

    # -- the call -----------------------------------------------------------------------------
    def native_input(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical flat ``(B, N, F)`` / ``(B, N)`` -> the tensor the model takes."""
        b = x.shape[0]
        if self.tokens:
            return self.layout_in.to_native(x.reshape(b, *self.grid))
        x = x.reshape(b, *self.grid, self.features)
        if not self.layout_in.has_channels:
            if self.features != 1:
                raise AdapterError(
                    f"layout {self.layout_in} has no channel axis but --features is "
                    f"{self.features}",
                    "add C to the layout (e.g. BTC) or drop --features",
                )
            x = x[..., 0]
        return self.layout_in.to_native(x)

    def canonical_output(self, y_native: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """The model's output -> ``(B, N, K)``. ``batch``: the input's batch size."""
        if batch is None:
            batch = y_native.shape[0] if y_native.dim() else 1
        try:
            if self.layout_out is None:
                self.layout_out = infer_output_layout(
                    tuple(y_native.shape), batch, self.grid, self.layout_in
                )
            y = self.layout_out.to_canonical(y_native, self.grid)
        except AdapterError as exc:
            # a model whose output is not one prediction per position: say what it is
            raise adapters.story(tuple(y_native.shape), batch, self) or exc from None
        if not self.layout_out.has_channels:
            y = y.unsqueeze(-1)
        if y.shape[0] != batch or tuple(y.shape[1:-1]) != self.grid:
            raise AdapterError(
                f"the model's output has shape {tuple(y_native.shape)}, which does not fit "
                f"output layout {self.layout_out} and grid {self.grid}",
                "pass the right output layout with --layout IN->OUT",
            )
        if y.shape[-1] == 0:  # nothing to compare: every check would pass vacuously
            raise AdapterError(
                f"the model's output has shape {tuple(y_native.shape)}: no prediction values "
                "at its positions",
                "return the predictions (logits or values) per position, or select them with "
                "--output / --forward",
            )
        return y.reshape(y.shape[0], self.n_positions, y.shape[-1])

    def call_native(self, x_native: torch.Tensor) -> torch.Tensor:
        """Run the model (through the ``forward`` hook when there is one) on a native input and
        select the predictions. At a fixed :attr:`batch`, in slices of that many samples."""
        b = x_native.shape[0]
        try:
            if self.batch is not None and b != self.batch:
                y = self._in_slices(x_native, self.batch)
            else:
                y = self._invoke(x_native)
                if y.dim() and y.shape[0] != b and y.shape[0] == self.first_batch:
                    raise batching.BatchMismatch(y.shape[0])  # a cached tensor broadcast
        except AuditError:
            raise
        except Exception as exc:  # the user's model raised: say on what input, and what to try
            y = self._at_first_batch(x_native, exc)
            if y is None:
                raise self._model_error(x_native, exc) from exc
        if self.first_batch is None:
            self.first_batch = b
        return y

    def _invoke(self, x_native: torch.Tensor) -> torch.Tensor:
        if self.forward is None:
            out = self.model(x_native)
        else:
            out = self.forward(self.model, x_native)
        return select_output(out, self.output)

    def _in_slices(self, x_native: torch.Tensor, size: int) -> torch.Tensor:
        outputs = []
        for part, keep in batching.slices(x_native, size):
            y = self._invoke(part)
            if y.dim() == 0 or y.shape[0] != size:
                raise batching.BatchMismatch(y.shape[0] if y.dim() else 0)
            outputs.append(y[:keep])
        return torch.cat(outputs)

    def _at_first_batch(self, x_native: torch.Tensor, exc: Exception) -> torch.Tensor | None:
        """A model that ran at one batch size and fails at another: run it at the first one
        from now on (a cached tensor sized by its first call), and say so. ``None`` when the
        batch size is not the cause."""
        b, first = x_native.shape[0], self.first_batch
        if first is None or first == b or self.batch is not None:
            return None
        try:
            y = self._in_slices(x_native, first)
        except Exception:
            return None
        self.batch = first
        if not any(n.startswith(batching.NOTE_START) for n in self.notes):  # once, not per copy
            self.notes.append(batching.note(first, b, exc))
        return y

    def _model_error(self, x_native: torch.Tensor, exc: Exception) -> AdapterError:
        known = self._diagnose(x_native)
        if known is not None:
            return known
        kind = "tokens" if self.tokens else f"{x_native.dtype} values"
        grad = " with autograd on" if torch.is_grad_enabled() else ""
        hook = " (through the forward hook)" if self.forward is not None else ""
        return ModelError(
            f"the model{hook} raised {describe(exc)} on {kind} of shape "
            f"{tuple(x_native.shape)}{grad} (layout {self.layout_in}, grid {self.grid})",
            "check --layout, --features, --vocab and --length/--shape against what the "
            "model expects",
        )

    def _diagnose(self, x_native: torch.Tensor) -> AdapterError | None:
        """After the model raised: a cause we can name, with its fix (or None).

        Two are common and otherwise surface as an ``IndexError`` or a dtype error from deep in
        torch: tokens beyond the embedding that reads them (``--vocab`` too large), and float
        values fed to an embedding (a token model audited without ``--vocab``). Models spread
        over several devices are named too."""
        module = self.module
        if module is None:
            return None
        devices = sorted({str(t.device) for t in _tensors_of(module)})
        if len(devices) > 1:
            return AdapterError(
                f"the model's parameters and buffers are on several devices ({', '.join(devices)})"
                ", and it raised on its input",
                "move the whole model to one device (model.to(device)) before auditing it",
            )
        readers = _embeddings_reading(module, x_native)
        if not readers:
            return None
        name, emb = readers[0]
        if self.tokens and emb.num_embeddings < self.vocab:
            return AdapterError(
                f"--vocab is {self.vocab} but the nn.Embedding {name!r} that reads the "
                f"tokens has {emb.num_embeddings} entries (tokens >= {emb.num_embeddings} "
                "are out of its range)",
                f"pass --vocab {emb.num_embeddings} (or less)",
            )
        if not self.tokens:  # every caller casts non-token inputs to the model's float dtype
            return AdapterError(
                f"the model feeds its input to the nn.Embedding {name!r} ({emb.num_embeddings} "
                "entries): it reads tokens, but the audit gave it floats",
                f"pass --vocab {emb.num_embeddings} (and a token layout such as BT)",
            )
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical flat input -> canonical flat output ``(B, N, K)``.

        The model always gets a tensor of its own (a copy, never a view of ``x``): a model that
        changes its input in place must not change the audit's inputs, nor a leaf of autograd."""
        x_native = self.native_input(x.to(self.device))
        if not self.tokens:
            x_native = x_native.to(self.dtype)
        x_native = x_native.clone()
        return self.canonical_output(self.call_native(x_native), x.shape[0])


class _Stop(Exception):
    pass


def _embeddings_reading(module: nn.Module, x_native: torch.Tensor) -> list:
    """``(name, embedding)`` of the ``nn.Embedding`` layers called on ``x_native`` itself (run
    until the first such call, which is stopped before it runs)."""
    found = []

    def pre_hook(mod, args, kwargs):
        given = args[0] if args else kwargs["input"]  # emb(x) or emb(input=x)
        # torch.equal is False for another shape; the cast: a model may read ids.int()
        if torch.equal(given.to(x_native.dtype), x_native):
            found.append(mod)
            raise _Stop

    names = {m: n for n, m in module.named_modules()}
    handles = [
        m.register_forward_pre_hook(pre_hook, with_kwargs=True)
        for m in names
        if isinstance(m, nn.Embedding)
    ]
    if not handles:
        return []
    try:
        with torch.no_grad():
            module(x_native.clone())
    except _Stop:
        pass
    except Exception:  # the model fails before any embedding reads its input: nothing to say
        pass
    finally:
        for h in handles:
            h.remove()
    return [(names[m], m) for m in found]


def _tensors_of(module: nn.Module | None):
    if module is None:
        return
    yield from module.parameters()
    yield from module.buffers()


SUBPIXEL = "S"  # the letter of the input's channel axis when it is part of the order
NAMED_ORDERS = ("raster", "raster+channels", "channels+raster")


def make_subject(
    model: Callable[..., Any],
    *,
    grid: Sequence[int],
    layout: str | None = None,
    features: int = 1,
    vocab: int | None = None,
    output: str | None = None,
    order: str | Sequence[int] | torch.Tensor | None = None,
    predicts: str = "auto",
    classes: int | None = None,
    value_range: tuple[float, float] | None = None,
    name: str | None = None,
    forward: Callable[[Any, torch.Tensor], Any] | None = None,
    batch: int | None = None,
) -> Subject:
    """Wrap any model (a module or a callable) into a :class:`Subject`.

    ``layout`` is ``"BCT"`` or ``"BCT->BTC"`` (input -> output; the output layout is inferred
    from the output's shape when unambiguous). ``order`` lists flat positions in generation
    order (default: raster). ``classes`` says the float inputs are class indices and the outputs
    logits over them (enables the cross-entropy part of the loss check).

    Sub-pixel order: ``order="raster+channels"`` (pixels in raster order, then a pixel's
    channels one after another: a colour PixelCNN's R -> G -> B), ``"channels+raster"``, or a
    permutation of the ``N * features`` sub-positions makes the input's channel axis a grid axis,
    named ``S`` in layouts: ``BCHW`` is read as ``BSHW``, and the output layout names ``S`` and
    the values per sub-position ``C`` (``"BCHW->B(SC)HW"`` for channel groups).

    ``forward(model, x)`` replaces ``model(x)``: two lines instead of a wrapper class for a
    model whose call is not one prediction per position (``model(x, targets=x)[0]``...).
    ``batch`` runs every forward pass at that batch size (in slices, padded): for a model that
    caches state sized by its first batch; the audit also finds this out by itself.
    """
    grid = tuple(int(g) for g in grid)
    if not grid or any(g < 1 for g in grid):
        raise AdapterError(f"the grid {grid} is empty", "give --length T or --shape H W")
    if predicts not in CONVENTIONS:
        raise AdapterError(
            f"unknown convention {predicts!r}", f"use one of {', '.join(CONVENTIONS)}"
        )
    if vocab is not None and vocab < 1:
        raise AdapterError(f"--vocab must be positive, got {vocab}", "give the vocabulary size")
    if features < 1:
        raise AdapterError(f"--features must be positive, got {features}", "give F >= 1")
    if batch is not None and batch < 1:
        raise AdapterError(f"--batch must be positive, got {batch}", "give a batch size >= 1")
    if forward is not None and not callable(forward):
        raise AdapterError(
            f"forward is a {type(forward).__name__}, not a callable",
            "pass a function (model, x) -> predictions",
        )
    text = layout or default_layout(len(grid), vocab is not None)
    subpixel = _is_subpixel(order, math.prod(grid), features)
    if subpixel:
        layout_in, layout_out, grid, axis = _subpixel_view(text, grid, features, vocab)
        features = 1
    else:
        layout_in, layout_out = parse_layout_pair(text, len(grid))
        axis = None
    if vocab is not None and layout_in.has_channels:
        raise AdapterError(
            f"token inputs have no channel axis, but layout {layout_in} has C",
            "use a layout without C for tokens (e.g. BT)",
        )
    if any(t.is_meta for t in _tensors_of(model if isinstance(model, nn.Module) else None)):
        raise AdapterError(
            "the model's parameters are on the meta device (shapes only, no values)",
            "materialize its weights first (model.to_empty(device='cpu'), then load them)",
        )
    subject = Subject(
        model=model,
        grid=grid,
        layout_in=layout_in,
        layout_out=layout_out,
        features=features,
        vocab=vocab,
        output=output,
        predicts=predicts,
        classes=classes,
        value_range=value_range,
        name=name or type(model).__name__,
        forward=forward,
        batch=batch,
        subpixel_axis=axis,
    )
    n = subject.n_positions
    if isinstance(order, str):
        order = named_order(order, grid, axis)
    subject.ranks = raster_ranks(n) if order is None else ranks_from_order(order, n)
    return subject


def _is_subpixel(order, pixels: int, features: int) -> bool:
    """A named channel order, or a permutation of every (pixel, channel) pair."""
    if isinstance(order, str):
        if order not in NAMED_ORDERS:
            raise AdapterError(
                f"unknown order {order!r}",
                f"use one of {', '.join(NAMED_ORDERS)}, or a permutation of the positions",
            )
        return "channels" in order
    if order is None or features == 1:
        return False
    return torch.as_tensor(order).numel() == pixels * features


def _subpixel_view(text: str, grid: tuple[int, ...], features: int, vocab: int | None):
    """Layouts and grid with the input's channel axis read as the grid axis ``S``."""
    left, _, right = text.partition("->")
    layout_in = parse_layout(left, len(grid))
    problem = None
    if vocab is not None:
        problem = "tokens have no channel axis to put in the generation order"
    elif not layout_in.has_channels:
        problem = f"layout {layout_in} has no channel axis C to put in the generation order"
    elif SUBPIXEL in layout_in.flat:
        problem = f"layout {left!r} uses {SUBPIXEL}, the letter of the sub-pixel axis"
    if problem:
        raise AdapterError(
            problem, "a sub-pixel order needs float inputs with channels (e.g. --layout BCHW)"
        )
    layout_in = Layout(layout_in.letters.replace("C", SUBPIXEL))
    axis = layout_in.grid_letters.index(SUBPIXEL)
    grid = grid[:axis] + (features,) + grid[axis:]
    layout_out = None
    if right:
        try:
            layout_out = parse_layout(right, len(grid), "output layout")
        except AdapterError as exc:
            raise AdapterError(
                exc.problem,
                f"at sub-pixel level the output layout names the channel axis {SUBPIXEL} and "
                f"the values per sub-position C, e.g. {left}->B({SUBPIXEL}C)"
                f"{layout_in.grid_letters.replace(SUBPIXEL, '')}",
            ) from None
        if layout_out.grid_letters != layout_in.grid_letters:
            raise AdapterError(
                f"output layout {layout_out} orders the grid axes {layout_out.grid_letters}, "
                f"the input {layout_in} (its C read as {SUBPIXEL}) {layout_in.grid_letters}",
                "write the output's grid axes in the input's order",
            )
    return layout_in, layout_out, grid, axis


def named_order(name: str, grid: tuple[int, ...], subpixel_axis: int | None) -> torch.Tensor:
    """The flat positions in generation order for a named order."""
    positions = torch.arange(math.prod(grid)).reshape(grid)
    if subpixel_axis is None or name == "raster":
        return positions.flatten()
    last = name == "raster+channels"  # a pixel's channels one after another
    return positions.movedim(subpixel_axis, -1 if last else 0).flatten()
