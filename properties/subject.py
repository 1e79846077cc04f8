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
models (gradients are taken at its output). No check knows which model it is looking at.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .errors import AdapterError, AuditError, ModelError, describe
from .layout import Layout, default_layout, infer_output_layout, parse_layout_pair

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
        coords = []
        for g in reversed(self.grid):
            coords.append(int(flat) % g)
            flat = int(flat) // g
        return coords[::-1]

    def with_model(self, model) -> "Subject":
        return replace(self, model=model, notes=self.notes)

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
        if self.layout_out is None:
            self.layout_out = infer_output_layout(
                tuple(y_native.shape), batch, self.grid, self.layout_in
            )
        y = self.layout_out.to_canonical(y_native, self.grid)
        if not self.layout_out.has_channels:
            y = y.unsqueeze(-1)
        if y.shape[0] != batch or tuple(y.shape[1:-1]) != self.grid:
            raise AdapterError(
                f"the model's output has shape {tuple(y_native.shape)}, which does not fit "
                f"output layout {self.layout_out} and grid {self.grid}",
                "pass the right output layout with --layout IN->OUT",
            )
        return y.reshape(y.shape[0], self.n_positions, y.shape[-1])

    def call_native(self, x_native: torch.Tensor) -> torch.Tensor:
        try:
            out = self.model(x_native)
        except AuditError:
            raise
        except Exception as exc:  # the user's model raised: say on what input, and what to try
            known = self._diagnose(x_native)
            if known is not None:
                raise known from exc
            kind = "tokens" if self.tokens else f"{x_native.dtype} values"
            grad = " with autograd on" if torch.is_grad_enabled() else ""
            raise ModelError(
                f"the model raised {describe(exc)} on {kind} of shape {tuple(x_native.shape)}"
                f"{grad} (layout {self.layout_in}, grid {self.grid})",
                "check --layout, --features, --vocab and --length/--shape against what the "
                "model expects",
            ) from exc
        return select_output(out, self.output)

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
        if not self.tokens and x_native.is_floating_point():
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

    def pre_hook(mod, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].shape == x_native.shape:
            if torch.equal(args[0].to(x_native.dtype), x_native):
                found.append(mod)
                raise _Stop

    names = {m: n for n, m in module.named_modules()}
    handles = [m.register_forward_pre_hook(pre_hook) for m in names if isinstance(m, nn.Embedding)]
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


def make_subject(
    model: Callable[..., Any],
    *,
    grid: Sequence[int],
    layout: str | None = None,
    features: int = 1,
    vocab: int | None = None,
    output: str | None = None,
    order: Sequence[int] | torch.Tensor | None = None,
    predicts: str = "auto",
    classes: int | None = None,
    value_range: tuple[float, float] | None = None,
    name: str | None = None,
) -> Subject:
    """Wrap any model (a module or a callable) into a :class:`Subject`.

    ``layout`` is ``"BCT"`` or ``"BCT->BTC"`` (input -> output; the output layout is inferred
    from the output's shape when unambiguous). ``order`` lists flat positions in generation
    order (default: raster). ``classes`` says the float inputs are class indices and the outputs
    logits over them (enables the cross-entropy part of the loss check).
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
    layout_in, layout_out = parse_layout_pair(
        layout or default_layout(len(grid), vocab is not None), len(grid)
    )
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
    )
    n = subject.n_positions
    subject.ranks = raster_ranks(n) if order is None else ranks_from_order(order, n)
    return subject
