"""Blame: the line of the user's Python source where a leak enters the model.

A :class:`Blame` is a located finding: the innermost frame of *model code* (neither torch nor
the harness; ``properties/extra`` and the ``causal`` package are models like any user's) that was
running when a dependency on the forbidden part of the input first appeared, the module whose
``forward`` was running (``transformer.h.3.attn``), the op, and the chain of model frames that
led there (innermost first). Two sources:

- ``certificate``: the certificate's blame run (:mod:`properties.evidence.certificate.sites`)
  takes the Python stack at the first op whose bound sees the future (or, for a model that must
  not see the present, the present);
- ``modules``: without a certificate, forward hooks on the failing counterexample (the
  perturbation's inputs ``x`` and ``x1``): the first module, in the order modules finish, whose
  output shows the dependency while none of its inputs does (:func:`by_modules`). Its line is the
  one that called the module; a module whose own code holds the leak (no submodule shows it) is
  located at its ``forward``. Module granularity: a leak in plain tensor code between modules is
  put on the module around it.
"""

import inspect
import linecache
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass, field

import torch

__all__ = [
    "Blame", "Frame", "by_modules", "is_model_code", "make", "model_frames", "position_axes",
    "relative",
]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Model code that lives inside the package: the planted bugs and the random architectures.
_MODELS_DIR = os.path.join(_PACKAGE_DIR, "extra") + os.sep
_STDLIB_DIRS = tuple(
    {os.path.realpath(p) + os.sep for k in ("stdlib", "platstdlib") if (p := sysconfig.get_path(k))}
)
MAX_CHAIN = 8  # model frames kept, innermost first


@dataclass
class Frame:
    file: str
    line: int
    function: str
    code: str = ""  # the source line, stripped ("" when the file cannot be read)


@dataclass
class Blame:
    kind: str  # "future" or "present": what the blamed op's output sees
    file: str | None  # the innermost model frame (None when the model runs no Python of its own)
    line: int | None
    module: str | None  # qualified module path ("" for the model itself)
    module_type: str | None  # its class name
    op: str | None  # the ATen op (certificate) or None (module hooks)
    source: str  # "certificate" or "modules"
    function: str | None = None
    code: str = ""
    chain: list[Frame] = field(default_factory=list)  # model frames, innermost first

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Blame":
        return cls(**{**d, "chain": [Frame(**f) for f in d.get("chain", [])]})

    def where(self) -> str:
        """``file:line`` (relative to the working directory when under it), or the module."""
        if self.file is None:
            return f"module {self.module or '(the model)'}"
        return f"{relative(self.file)}:{self.line}"


def relative(path: str, root: str | None = None) -> str:
    """``path`` relative to ``root`` (default: the working directory) when it lies under it;
    else (an installed library's file, with ``root`` not given) relative to the ``sys.path``
    entry it was imported from: ``transformers/models/gpt2/modeling_gpt2.py``."""
    base = os.path.abspath(root or os.getcwd())
    path = os.path.abspath(path)
    # a virtual environment inside the project is not the project: its libraries are named
    # from their import root, as anywhere else
    installed = _INSTALLED & set(path.split(os.sep))
    if path.startswith(base + os.sep) and not (root is None and installed):
        return os.path.relpath(path, base)
    if root is None:
        for entry in sorted((os.path.abspath(e) for e in sys.path if e), key=len, reverse=True):
            inside = base.startswith(entry + os.sep) or entry == base
            if path.startswith(entry + os.sep) and (installed or not inside):
                return os.path.relpath(path, entry)
    return path


_INSTALLED = {"site-packages", "dist-packages"}  # where installed libraries live


def is_model_code(path: str) -> bool:
    """Whether a frame's file is the model's (neither torch, the harness, nor the stdlib)."""
    if path.startswith("<"):  # <frozen ...>, <string>
        return False
    path = os.path.abspath(path)
    if path.startswith(_TORCH_DIR):
        return False
    if path.startswith(_PACKAGE_DIR):
        return path.startswith(_MODELS_DIR)
    real = os.path.realpath(path)
    in_packages = "site-packages" in real or "dist-packages" in real
    return in_packages or not real.startswith(_STDLIB_DIRS)


def _is_harness(path: str) -> bool:
    path = os.path.abspath(path)
    return path.startswith(_PACKAGE_DIR) and not path.startswith(_MODELS_DIR)


def model_frames(frame=None) -> list[tuple[str, int, str]]:
    """The model's frames on the Python stack, innermost first: from ``frame`` (default: the
    caller's) outwards, the frames of model code up to the harness's call of the model
    (:meth:`Subject._invoke <properties.subject.canonical.Subject._invoke>`); frames beyond it
    are the caller's test or script, never the model's. Cheap: no source is read."""
    from properties.subject.canonical import Subject

    boundary = Subject._invoke.__code__
    frame = frame or sys._getframe(1)
    found, seen_model, stop = [], False, None
    while frame is not None and frame.f_code is not boundary:
        path = frame.f_code.co_filename
        if is_model_code(path):
            found.append((path, frame.f_lineno, frame.f_code.co_name))
            seen_model = True
        elif seen_model and stop is None and _is_harness(path):
            stop = len(found)  # no boundary after all: keep what lies above the harness
        frame = frame.f_back
    return found if frame is not None or stop is None else found[:stop]


def make(kind, frames, *, module, module_type, op, source) -> Blame:
    """A :class:`Blame` from model frames (innermost first), source lines read now."""
    chain = [Frame(f, n, fn, linecache.getline(f, n).strip()) for f, n, fn in frames[:MAX_CHAIN]]
    first = chain[0] if chain else None
    return Blame(
        kind, first and first.file, first and first.line, module, module_type, op, source,
        function=first and first.function, code=first.code if first else "", chain=chain,
    )


# ---------------------------------------------------------------------------------------------
# Without a certificate: forward hooks on the failing counterexample

SAFETY = 4.0  # a change counts above this many times the module's own run-to-run noise


def by_modules(subject, x, x1, *, kind: str, cut: int, train: bool, seed: int) -> Blame | None:
    """The first module whose output shows the dependency of ``kind`` that the counterexample
    ``(x, x1)`` shows (``x1`` replaces the positions of rank >= ``cut``): for ``future``, a
    change at an output of rank < ``cut`` while none of the module's inputs changes there; for
    ``present``, a change at rank ``cut``. Three forward passes (``x`` twice, for each module's
    noise floor, then ``x1``)."""
    from properties.subject.calls import forward, model_mode

    module = subject.module
    if module is None:
        return None
    paths = {m: p for p, m in module.named_modules()}
    runs: list[list] = []

    def hook(mod, args, kwargs, out):
        runs[-1].append((mod, _tensors((args, kwargs)), _tensors(out), model_frames()))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in paths]
    try:
        with model_mode(subject, train=train), torch.no_grad():
            for inputs in (x, x, x1):
                runs.append([])
                forward(subject, inputs, seed=seed)
    finally:
        for h in handles:
            h.remove()
    base, again, moved = runs
    if not (len(base) == len(again) == len(moved)):
        return None  # the counterexample took another path: modules cannot be paired
    for (mod, ins, outs, frames), (_, ins2, outs2, _), (_, ins1, outs1, _) in zip(
        base, again, moved, strict=True
    ):
        if not _shows(subject, outs, outs2, outs1, kind, cut):
            continue
        if kind == "future" and _shows(subject, ins, ins2, ins1, kind, cut):
            continue  # the dependency came in with an input
        if not frames:  # the model itself, or a module called from no model code: its forward
            frames = _forward_of(mod)
        return make(kind, frames, module=paths[mod], module_type=type(mod).__name__, op=None,
                    source="modules")
    return None


def _tensors(tree) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    leaves, _ = tree_flatten(tree)
    return [t.detach().clone() for t in leaves if isinstance(t, torch.Tensor)]


def _forward_of(mod) -> list[tuple[str, int, str]]:
    try:
        fn = type(mod).forward
        path = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return []
    return [(path, line, "forward")] if path and is_model_code(path) else []


def _shows(subject, base, again, moved, kind: str, cut: int) -> bool:
    """Whether any tensor with one recognisable position axis changed where ``kind`` says."""
    ranks = subject.ranks
    for a, a2, b in zip(base, again, moved, strict=False):
        if not a.shape == a2.shape == b.shape:
            continue
        change = _per_position(subject, a, b)
        if change is None:
            continue
        noise = _per_position(subject, a, a2).max()
        hit = change > SAFETY * noise
        if kind == "future" and bool((hit & (ranks < cut)).any()):
            return True
        if kind == "present" and bool((hit & (ranks == cut)).any()):
            return True
    return False


def _per_position(subject, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """``(N,)`` largest |a - b| per grid position, when ``a`` has one set of position axes."""
    axes = position_axes(tuple(a.shape), subject.grid)
    if axes is None:
        return None
    diff = (a.double() - b.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    diff = torch.where(torch.isnan(a) & torch.isnan(b), torch.zeros_like(diff), diff)
    others = [d for d in range(a.dim()) if d not in axes]
    per = diff.amax(dim=others) if others else diff
    return per.reshape(-1)


def position_axes(shape: tuple[int, ...], grid: tuple[int, ...]) -> list[int] | None:
    """The axes of a tensor that hold the grid's positions, when exactly one set fits (a run of
    axes of the grid's shape, or one axis of N positions on a grid of several axes)."""
    n = 1
    for g in grid:
        n *= g
    candidates = [
        list(range(a, a + len(grid)))
        for a in range(len(shape) - len(grid) + 1)
        if shape[a : a + len(grid)] == tuple(grid)
    ]
    if len(grid) > 1:
        candidates.extend([[a] for a, s in enumerate(shape) if s == n])
    return candidates[0] if len(candidates) == 1 and n > 1 else None
