"""Steppers: a model run a chunk at a time (cached, chunked, streamed), for the incremental check.

A stepper runs positions ``begin .. begin + L - 1`` of one sequence, given the state the earlier
positions left, and returns their predictions and the new state; inputs and predictions are in
the subject's canonical form (``(1, L, F)`` or ``(1, L)`` tokens in, ``(1, L, K)`` out)::

    state = stepper.start()
    y, state = stepper.step(x[:, a:b], a, state)
    saved = stepper.save(state)          # an independent copy, for prefix reuse and restore

The adapters, tried in this order (:func:`steppers_for`):

- the user's hook ``step(model, chunk, state) -> (predictions, state)`` (``step=``, ``--step
  file.py:fn``): ``chunk`` in the model's own layout, ``state`` None at the start, predictions
  in the model's output layout (or a structured output, read with ``--output``). A state may
  have a method ``poison_unwritten(value) -> int`` that fills its cache slots not written yet
  (called before every step; it returns how many values it filled);
- Hugging Face causal LMs: ``model(ids, cache=..., position_ids=..., use_cache=True)`` (or
  ``past_key_values``/``cache_position`` in older releases, ``state`` for RWKV), with the
  model's own dynamic cache and, where the model supports one, a ``StaticCache`` whose
  unwritten slots are poisoned;
- pytorch-tcn's streaming mode (``model(chunk, inference=True)``), its buffers as the state;
- finders registered with :func:`register` (``properties.extra.steppers`` registers the
  lecture's cached steppers, :mod:`causal.incremental`).

A model with none of these gets a one-line error that says which hook to write.
"""

import copy
import inspect
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from properties.errors import AdapterError
from properties.subject.canonical import Subject, select_output

__all__ = [
    "HookStepper",
    "HuggingFaceStepper",
    "Stepper",
    "TcnStepper",
    "preserved_buffers",
    "register",
    "steppers_for",
]

HOOK_FIX = (
    "write a step hook, def step(model, chunk, state): ... return predictions, state (chunk "
    "in the model's layout, state None at the start), and pass step=step (--step file.py:step)"
)


class Stepper:
    """One way of running a subject chunk by chunk. Subclasses implement :meth:`step` (and
    :meth:`start`, :meth:`save` when the state is not a plain deep-copyable value)."""

    name = "step"  # the way of running, as the report names it
    window: int | None = None  # a sliding window's length (the search cuts across it)
    limit: int | None = None  # a static cache's length (the search cuts past it)

    def __init__(self, subject: Subject):
        self.subject = subject
        self.poison: float | None = None  # the value unwritten cache slots get (None: no poison)
        self.poisoned = 0  # cache values poisoned so far

    def start(self) -> Any:
        return None

    def step(self, x: torch.Tensor, begin: int, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def save(self, state: Any) -> Any:
        try:
            return copy.deepcopy(state)
        except Exception as exc:
            raise AdapterError(
                f"the state of {self.name} cannot be deep-copied ({type(exc).__name__})",
                "give the state a __deepcopy__, or keep it in tensors, lists and dicts",
            ) from None

    def on(self, subject: Subject) -> "Stepper":
        """The same way of running, on another subject (the float64 copy of this one)."""
        clone = copy.copy(self)
        clone.subject, clone.poisoned = subject, 0
        return clone

    def finish(self) -> None:
        """After the check: undo what stepping changed in the model (none by default)."""


# ---------------------------------------------------------------------------------------------
# Chunks in the model's own layout


def native_chunk(subject: Subject, x: torch.Tensor) -> torch.Tensor:
    """A canonical chunk ``(B, L, F)`` / ``(B, L)`` in the model's input layout, dtype and
    device (a copy: the model may change it in place)."""
    length = x.shape[1]
    view = replace(subject, grid=(length,), ranks=torch.arange(length))
    native = view.native_input(x.to(subject.device))
    if not subject.tokens:
        native = native.to(subject.dtype)
    return native.clone()


def canonical_chunk(subject: Subject, y: Any, length: int, batch: int = 1) -> torch.Tensor:
    """A chunk's predictions in the model's output layout (or a structured output) -> canonical
    ``(B, L, K)``."""
    if not isinstance(y, torch.Tensor):
        y = select_output(y, subject.output)
    layout, native = subject.layout_out, tuple(y.shape)
    try:
        y = layout.to_canonical(y, (length,))
    except AdapterError as exc:
        raise AdapterError(
            f"a step's predictions have shape {tuple(y.shape)} for a chunk of {length} "
            f"positions, which does not fit output layout {layout} ({exc.problem})",
            "return one prediction per position of the chunk, in the layout of the full pass",
        ) from None
    if not layout.has_channels:
        y = y.unsqueeze(-1)
    if tuple(y.shape[:2]) != (batch, length):
        raise AdapterError(
            f"a step's predictions have shape {native} for a chunk of {length} positions, "
            f"which is not one prediction per position in output layout {layout}",
            "return one prediction per position of the chunk, in the layout of the full pass",
        )
    return y


@contextmanager
def preserved_buffers(module):
    """Every buffer of ``module`` as it was, restored after (by assignment: streaming layers
    replace their buffers instead of writing into them)."""
    if module is None:
        yield
        return
    saved = [
        (m, name, None if b is None else b.detach().clone())
        for m in module.modules()
        for name, b in m._buffers.items()
    ]
    try:
        yield
    finally:
        for m, name, b in saved:
            m._buffers[name] = b


# ---------------------------------------------------------------------------------------------
# The user's hook


class HookStepper(Stepper):
    """``step(model, chunk, state) -> (predictions, state)``, the user's."""

    def __init__(self, subject: Subject, fn: Callable):
        super().__init__(subject)
        self.fn = fn
        self.name = f"the step hook {getattr(fn, '__name__', type(fn).__name__)}"

    def step(self, x, begin, state):
        if state is not None and self.poison is not None and hasattr(state, "poison_unwritten"):
            self.poisoned += int(state.poison_unwritten(self.poison) or 0)
        out = self.fn(self.subject.model, native_chunk(self.subject, x), state)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AdapterError(
                f"{self.name} returned a {type(out).__name__}, not (predictions, state)",
                "return predictions, state",
            )
        y, state = out
        return canonical_chunk(self.subject, y, x.shape[1], x.shape[0]), state


# ---------------------------------------------------------------------------------------------
# Hugging Face causal language models

CACHE_ARGUMENTS = ("cache", "past_key_values", "cache_params", "state")  # newest first


class HuggingFaceStepper(Stepper):
    """A Hugging Face causal LM called on a chunk of token ids with its cache, the positions
    given explicitly (``position_ids``, and ``cache_position`` where the model takes it).

    ``kind``: ``"dynamic"`` (the model's own cache, created by its first call: a
    ``DynamicCache``, sliding-window layers included, or a recurrent model's state) or
    ``"static"`` (a ``StaticCache`` of ``capacity`` slots, whose slots are poisoned as they are
    allocated, so that a read of slots not written yet shows)."""

    def __init__(self, subject: Subject, argument: str, kind: str = "dynamic"):
        super().__init__(subject)
        model = subject.module
        self.argument, self.kind = argument, kind
        self.parameters = set(inspect.signature(model.forward).parameters)
        config = getattr(model, "config", None)
        window = getattr(config, "sliding_window", None)
        self.window = window if isinstance(window, int) and window > 0 else None
        n = subject.n_positions
        self.capacity = n + max(1, n // 8)  # slots never written: poisoned to the end
        if kind == "static":
            self.limit = min(self.capacity, self.window or self.capacity)
            self.name = f"a StaticCache of {self.capacity} slots"
        else:
            self.name = "its dynamic cache" if argument != "state" else "its recurrent state"

    def start(self):
        if self.kind != "static":
            return None
        from transformers import StaticCache

        return StaticCache(config=self.subject.module.config, max_cache_len=self.capacity)

    def step(self, x, begin, state):
        model, length = self.subject.module, x.shape[1]
        positions = torch.arange(begin, begin + length, device=self.subject.device)
        kwargs = {self.argument: state, "use_cache": True}
        if "position_ids" in self.parameters:
            kwargs["position_ids"] = positions[None]
        if "cache_position" in self.parameters:
            kwargs["cache_position"] = positions
        with self._poisoning():
            out = model(native_chunk(self.subject, x), **kwargs)
        state = next(
            (getattr(out, a) for a in (self.argument, *CACHE_ARGUMENTS) if hasattr(out, a)), None
        )
        if state is None:
            raise AdapterError(
                f"{type(model).__name__} returned no cache ({', '.join(CACHE_ARGUMENTS)}) with "
                "use_cache=True",
                HOOK_FIX,
            )
        return canonical_chunk(self.subject, out, length, x.shape[0]), state

    @contextmanager
    def _poisoning(self):
        """Static layers' keys and values filled with the poison as they are allocated (their
        first write then covers only the slots written)."""
        if self.kind != "static" or self.poison is None:
            yield
            return
        from transformers.cache_utils import StaticLayer

        original = StaticLayer.lazy_initialization

        def poisoned(layer, key_states, value_states):
            original(layer, key_states, value_states)
            for t in (layer.keys, layer.values):
                t.fill_(self.poison)
                self.poisoned += t.numel()

        StaticLayer.lazy_initialization = poisoned
        try:
            yield
        finally:
            StaticLayer.lazy_initialization = original


def huggingface(subject: Subject) -> list[Stepper] | None:
    model = subject.module
    if model is None or not hasattr(model, "config") or not hasattr(model, "can_generate"):
        return None
    if not model.can_generate():  # an encoder (BERT): no cached path to generate with
        return None
    parameters = inspect.signature(model.forward).parameters
    argument = next((a for a in CACHE_ARGUMENTS if a in parameters), None)
    if argument is None:
        return None
    if not subject.tokens:
        raise AdapterError(
            f"the Hugging Face adapter steps token ids, but {subject.name} is audited on floats",
            "pass --vocab V and a token layout (BT), or write a step hook for embeddings",
        )
    found = [HuggingFaceStepper(subject, argument)]
    static = getattr(model, "_can_compile_fullgraph", False) and not getattr(
        model, "_is_stateful", False
    )
    if static and argument in ("cache", "past_key_values"):
        found.append(HuggingFaceStepper(subject, argument, "static"))
    return found


# ---------------------------------------------------------------------------------------------
# pytorch-tcn


class TcnStepper(Stepper):
    """pytorch-tcn's streaming mode: ``model(chunk, inference=True)``, each causal layer's
    buffer of its last ``(k - 1) * d`` inputs kept in the layer. The state is a copy of every
    buffer (``get_buffers``), put back before each step (``set_buffers``), so that a saved
    state is independent of the model."""

    name = "pytorch-tcn's streaming mode (inference=True)"

    def start(self):
        self.subject.module.reset_buffers()
        return [b.clone() for b in self.subject.module.get_buffers()]

    def step(self, x, begin, state):
        model = self.subject.module
        model.set_buffers([b.clone() for b in state])
        y = model(native_chunk(self.subject, x), inference=True)
        state = [b.clone() for b in model.get_buffers()]
        return canonical_chunk(self.subject, y, x.shape[1], x.shape[0]), state

    def save(self, state):
        return [b.clone() for b in state]


def pytorch_tcn(subject: Subject) -> list[Stepper] | None:
    model = subject.module
    if model is None or not type(model).__module__.startswith("pytorch_tcn"):
        return None
    parameters = inspect.signature(model.forward).parameters
    if not hasattr(model, "get_buffers") or "inference" not in parameters:
        return None
    return [TcnStepper(subject)]


# ---------------------------------------------------------------------------------------------
# Finding a subject's steppers

FINDERS: list[Callable[[Subject], list[Stepper] | None]] = [huggingface, pytorch_tcn]


def register(finder: Callable[[Subject], list[Stepper] | None]) -> None:
    """Add a finder ``subject -> steppers or None`` (tried after the built-in ones)."""
    if finder not in FINDERS:
        FINDERS.append(finder)


def steppers_for(subject: Subject) -> list[Stepper]:
    """The ways of stepping ``subject``: its step hook, else what a finder knows, else a
    one-line error that says which hook to write."""
    if len(subject.grid) != 1 and subject.step is not None:
        raise AdapterError(
            f"a step hook runs along one time axis, but the grid is {subject.grid}",
            "audit a sequence (--length T), or step images through a registered stepper",
        )
    if not subject.is_raster or subject.subpixel_axis is not None:
        raise AdapterError(
            "the incremental check steps positions in raster order, but this subject has "
            "another generation order",
            "drop --order (or audit the model in raster order)",
        )
    if subject.step is not None:
        return [HookStepper(subject, subject.step)]
    for finder in FINDERS:
        found = finder(subject)
        if found:
            return found
    raise AdapterError(
        f"{type(subject.model).__name__} has no step interface the incremental check knows "
        "(not a Hugging Face causal LM with a cache, not pytorch-tcn, no registered stepper)",
        HOOK_FIX,
    )
