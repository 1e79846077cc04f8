"""Memory: every stacked pass of an audit is sized from measured costs, so an audit stays within
a memory budget by construction instead of meeting the OOM killer.

A *probe pass* (one copy of the inputs) runs under a byte counter that sees every tensor torch
creates (:class:`_Tally`, a ``TorchDispatchMode``) and, for passes that will be differentiated,
every tensor autograd saves for the backward (``saved_tensors_hooks``). From that:

- a forward pass without autograd holds the output plus a few intermediates at any one time:
  ``FORWARD_LIVE`` times the largest tensor an op creates (the logits of a language model, an
  attention matrix), plus the kept output;
- a pass that will be differentiated holds everything saved for the backward, plus the same.

The counts are sizes, not timings: the same model and shapes give the same numbers in every
process, so shards of one audit cut their chunks identically (see
:mod:`properties.evidence.sharding`). The budget (``--memory GB``, ``memory=``) is for these working
tensors; the model and its float64 copy come on top. The default is a quarter of the memory
available when the audit starts, at most
``DEFAULT_CAP``.
"""

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from properties.errors import AdapterError

__all__ = [
    "DEFAULT_CAP",
    "FORWARD_LIVE",
    "GIB",
    "MIN_DEFAULT",
    "MemoryBudgetError",
    "PassCost",
    "available",
    "copies",
    "default_limit_bytes",
    "gigabytes",
    "limit_bytes",
    "limited",
    "measure",
]

GIB = 1 << 30
DEFAULT_CAP = 3 * GIB // 2  # with a 124M model and its float64 copy: under 4 GB in all
FORWARD_LIVE = 4  # live tensors of the largest size during a forward pass (input, output, temps)
MIN_DEFAULT = GIB // 4

_budget: ContextVar[int | None] = ContextVar("memory_budget", default=None)


def available() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * GIB


def default_limit_bytes() -> int:
    """A quarter of the available memory, at most ``DEFAULT_CAP``: an audit shares its machine."""
    return max(MIN_DEFAULT, min(available() // 4, DEFAULT_CAP))


def limit_bytes() -> int:
    """The memory budget of the running audit, in bytes (the default outside an audit)."""
    value = _budget.get()
    return default_limit_bytes() if value is None else value


@contextmanager
def limited(gigabytes: float | None):
    """Run with a memory budget of ``gigabytes`` (None: the default for this machine)."""
    if gigabytes is not None and not gigabytes > 0:
        raise AdapterError(
            f"the memory budget must be positive, got {gigabytes}", "pass --memory GB, e.g. 2"
        )
    token = _budget.set(default_limit_bytes() if gigabytes is None else int(gigabytes * GIB))
    try:
        yield
    finally:
        _budget.reset(token)


def gigabytes(n: int) -> str:
    return f"{n / GIB:.2f} GB"


@dataclass
class PassCost:
    """What one copy of a pass's inputs costs: the bytes it holds at its peak."""

    largest: int  # the largest tensor one op created (bytes)
    saved: int  # bytes saved for the backward (0 without autograd)
    output: int  # bytes of the pass's output

    @property
    def per_copy(self) -> int:
        return self.saved + FORWARD_LIVE * self.largest + self.output


class _Tally(TorchDispatchMode):
    """Counts the bytes of every new tensor an op creates (views of its inputs are not new).

    torch wraps a mode's ``__torch_dispatch__`` in ``torch._dynamo.disable``, which imports
    ``torch._dynamo`` on the first op: over a second of imports (more on a busy machine), paid
    by the first probe pass of every process, and in a receptive-field map of the dilated net
    at 2048 positions as much as the map itself. Nothing can be compiling when dynamo was
    never imported, so this class skips that wrapper; :class:`_DynamoSafeTally` keeps it for
    a process that compiles (see :func:`_tally`)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            _pointer(t)
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and _pointer(t) not in inputs:
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def _storage(t: torch.Tensor):
    """``t``'s storage, by torch's own method: the certificate's tracer watches the public one
    (a storage can carry values out of torch), and a tally may count inside a trace."""
    return torch._C.TensorBase.untyped_storage(t)


def _pointer(t: torch.Tensor) -> int:
    """Where ``t``'s storage begins, by torch's own method: the tracer watches the public
    ``UntypedStorage.data_ptr`` too (a raw pointer is memory it cannot follow), and a tally
    that counts inside a trace is not the model reading memory."""
    return torch._C.StorageBase.data_ptr(_storage(t))


class _DynamoSafeTally(_Tally):
    """The same tally, with torch's default wrapper (``_should_skip_dynamo`` true): dynamo
    never traces the counting frame."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return True

    __torch_dispatch__ = _Tally.__torch_dispatch__


def _tally() -> _Tally:
    """A tally that imports nothing new: dynamo's wrapper only once dynamo is loaded."""
    return _DynamoSafeTally() if "torch._dynamo" in sys.modules else _Tally()


def measure(run, *, saved: bool = False, exclude: tuple = ()) -> tuple[object, PassCost]:
    """Run ``run()`` (a probe pass over one copy of the inputs) and measure what it holds.

    ``saved``: also count what autograd saves for the backward (``exclude``: tensors whose
    storage is not the pass's own, e.g. the parameters). Returns ``run()``'s value, whose last
    item (or itself, when not a tuple) is taken as the output, and the cost."""
    own = {t.untyped_storage().data_ptr() for t in exclude}
    stored: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            stored[ptr] = max(stored.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    tally = _tally()
    if saved:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), tally:
            value = run()
    else:
        with tally:
            value = run()
    out = value[-1] if isinstance(value, tuple) else value
    output = out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
    return value, PassCost(tally.largest, sum(stored.values()), output)


def copies(cost_per_copy: int, cap: int, *, what: str, fixed: int = 0) -> int:
    """How many copies one stacked pass may hold within the budget (at most ``cap``, at least
    one); a one-line error naming the memory needed when not even one copy fits."""
    room = limit_bytes() - fixed
    if cost_per_copy > room:
        raise MemoryBudgetError(what, cost_per_copy + fixed, limit_bytes())
    return max(1, min(cap, room // max(1, cost_per_copy)))


class MemoryBudgetError(AdapterError):
    def __init__(self, what: str, needed: int, limit: int, *, bound: bool = False):
        self.needed, self.limit = needed, limit
        about = "at least" if bound else "about"  # a lower bound, before any probe pass
        super().__init__(
            f"{what} needs {about} {gigabytes(needed)}, over the memory budget of "
            f"{gigabytes(limit)}",
            f"raise it with --memory {max(1, -(-needed // GIB))} (memory= in the API), or audit "
            "a shorter grid",
        )
