"""Where a tensor comes from: the tracer's answer to "is this a constant?".

A summary says which inputs a tensor may depend on, and the certificate is only as good as its
answer for tensors it did not see being made. Those are of *unknown origin*: they may depend on
everything, and they carry a mark of where they entered (a *slot*: an extra column of every
summary, after the ``N`` input positions), so that the certificate can say which entry reached
which output. A tensor is known when it is

- the traced input;
- the output of an op the tracer saw (its rule says what it depends on);
- present before the trace began and reachable from the model (parameters, buffers, tensor
  attributes of its modules, tensors among the globals and closures of its code): made before
  the input existed, it cannot depend on it, and every later write to it is either an op the
  tracer sees or is noticed by its version counter (:meth:`Tracer.see`);
- made by torch from Python data (``torch.tensor(...)``, ``lift_fresh``): Python values depend
  on the input only through the exits the tracer watches (``item``, ``tolist``, ``numpy``...),
  whose dependencies reach every output anyway;
- over the memory of tensors it knows (a dlpack capsule, ``frombuffer`` over their bytes): it
  then holds whatever they hold.

Everything else (a tensor made on another thread, while the tracer was switched off, by C++ the
dispatcher never saw, uninitialized memory) is of unknown origin.
"""

import os
import sys
import types
from collections.abc import Mapping

import torch

UNKNOWN_SLOTS = 4  # extra summary columns: one per entry of unknown origin (the last is shared)
_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def version(t: torch.Tensor) -> int:
    """``t``'s version counter (bumped by every write in place; -1 where there is none)."""
    try:
        return t._version
    except Exception:  # inference tensors, some subclasses: no counter to compare
        return -1


def storage_key(t: torch.Tensor) -> int | None:
    try:
        return torch._C.TensorBase.untyped_storage(t)._cdata
    except Exception:  # no storage (sparse, nested)
        return None


def memory_range(t: torch.Tensor) -> tuple[int, int] | None:
    """``[start, end)`` bytes of ``t``'s storage (None without one, or when empty)."""
    try:
        s = torch._C.TensorBase.untyped_storage(t)
        start, size = torch._C.StorageBase.data_ptr(s), torch._C.StorageBase.nbytes(s)
    except Exception:
        return None
    return (start, start + size) if start and size else None


def call_site() -> str:
    """``file:line (function)`` of the innermost frame outside torch and this package: the
    model's line that made the tracer look."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith((_TORCH_DIR, _OWN_DIR)) and not path.startswith("<frozen"):
            return f"{_short(path)}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "an unknown line"


def caller_is_torch(depth: int = 2) -> bool:
    """Whether the Python caller ``depth`` frames up is torch's own code."""
    frame = sys._getframe(depth)
    return frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR)


def _short(path: str) -> str:
    for root in sorted(sys.path, key=len, reverse=True):
        if root and path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    return path


def preexisting(module, extras=()) -> list[torch.Tensor]:
    """Tensors reachable from the model before the trace: parameters and buffers, tensor
    attributes of its modules (also in lists, tuples and dicts), and tensors among the
    globals, class attributes, closures and defaults of its code (a mask made at import)."""
    found: dict[int, torch.Tensor] = {}
    spaces: dict[int, Mapping] = {}

    def add(value, depth=0):
        if isinstance(value, torch.Tensor):
            found.setdefault(id(value), value)
        elif depth == 0 and isinstance(value, (list, tuple)):
            for v in value[:256]:
                add(v, 1)
        elif depth == 0 and isinstance(value, dict):
            for v in list(value.values())[:256]:
                add(v, 1)
        elif depth == 0 and isinstance(value, (types.FunctionType, types.MethodType)):
            code_of(value)

    def space(d):
        if isinstance(d, Mapping) and id(d) not in spaces:
            spaces[id(d)] = d

    def code_of(fn):
        fn = getattr(fn, "__func__", fn)
        if not isinstance(fn, types.FunctionType):
            return
        space(fn.__globals__)
        for cell in fn.__closure__ or ():
            try:
                add(cell.cell_contents, 1)
            except ValueError:  # an empty cell
                pass
        for v in (fn.__defaults__ or ()) + tuple((fn.__kwdefaults__ or {}).values()):
            add(v, 1)

    if isinstance(module, torch.nn.Module):
        for t in module.parameters():
            add(t)
        for t in module.buffers():
            add(t)
        for m in module.modules():
            for key, value in vars(m).items():
                if key not in ("_parameters", "_buffers", "_modules"):
                    add(value)
            for cls in type(m).__mro__:
                if cls.__module__.startswith("torch."):
                    continue
                space(vars(cls))
                space(getattr(sys.modules.get(cls.__module__), "__dict__", None))
    for extra in extras:
        add(extra)
    for d in list(spaces.values()):
        for value in list(d.values()):
            add(value)
    return list(found.values())
