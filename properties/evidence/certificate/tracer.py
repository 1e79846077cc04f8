"""The tracer: runs the model once, on real values, and carries a summary next to each tensor.

A ``TorchDispatchMode`` sees every ATen op of the forward pass (composite ops arrive
decomposed: ``linear`` as ``addmm``, ``F.scaled_dot_product_attention`` as the kernel chosen for
this device). A dispatch mode, unlike a tensor subclass or a function mode, does not change the
path the model takes: ``nn.TransformerEncoder``'s fused fast path is taken (or not) exactly as in
an ordinary call, and gets a rule of its own.

Summaries live in a side table keyed by tensor identity (a weak dictionary: a tensor that comes
back from C++ is the same Python object, torch preserves it). A tensor not in the table is a
constant: parameters, buffers, masks, anything made by a factory. Writes in place are the one
place where identity is not enough: a write through a view changes every tensor that shares the
storage, so the tracer keeps, per storage, the tensors it has seen on it, and after a write
recomputes their summaries element by element from the storage's.
"""

import math
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from properties.errors import describe

from . import deps as summaries
from . import rules
from .deps import aligned, compress, everything, expanded

aten = torch.ops.aten
# Ops that read values into Python (a branch, a shape): the result holds for the path taken.
READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
SHAPE_FROM_VALUES = {"nonzero", "masked_select", "unique", "_unique", "_unique2", "argwhere",
                     "unique_consecutive", "unique_dim", "bincount", "histc"}


class Tracer(TorchDispatchMode):
    def __init__(
        self, n: int, grid: tuple[int, ...], ranks: torch.Tensor, names: dict, blame: bool
    ):
        super().__init__()
        self.n = n
        self.grid = grid
        self.ranks = ranks
        self.names = names  # module -> qualified name, for saying where an op ran
        self.find_blame = blame  # costs a scan per op: only asked for on a second run
        self.table = WeakTensorKeyDictionary()
        self.future = WeakTensorKeyDictionary()  # tensor -> sees the future (None: unknown)
        self.storages: dict[int, list] = {}
        self.registered = WeakTensorKeyDictionary()
        self.lost: Counter = Counter()
        self.converted: Counter = Counter()  # dense-only rules run on a run-form certificate
        self.path_dependent = False
        self.escaped: torch.Tensor | None = None  # inputs read into Python values
        self.blame: str | None = None  # where a dependency on the future first appeared
        self.stack: list[str] = []
        self.op_name = ""
        self.assumed: list[torch.Tensor] = []  # what the current op's rule said it writes

    # -- the rules' view of the tracer ---------------------------------------------------------
    def deps(self, t):
        if not isinstance(t, torch.Tensor):
            return None
        return self.table.get(t)

    def assume(self, t: torch.Tensor, d) -> None:
        """A rule's word on a tensor the op writes without returning it."""
        self.assumed.append(t)
        self._set(t, d)

    def tensors_in(self, args, kwargs):
        leaves, _ = tree_flatten((args, kwargs))
        return [x for x in leaves if isinstance(x, torch.Tensor)]

    def read_outside(self, t: torch.Tensor) -> None:
        """``t``'s values were read by Python (``numpy()``, ``tolist()``: no ATen op sees it):
        whatever is built from them may depend on anything ``t`` depends on."""
        d = self.deps(t)
        if d is None:
            return
        self.path_dependent = True
        self.escaped = summaries.union_rows([self.escaped, everything(d)])

    def __enter__(self):
        # torch imports torch._dynamo lazily, inside the first traced op, and dynamo records
        # some of torch.Tensor's methods as they are then: import it before they are patched
        import torch._dynamo  # noqa: F401

        mode = super().__enter__()
        self._patched = _patch_reads(self)
        return mode

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            _unpatch(self._patched)

    # -- bookkeeping ---------------------------------------------------------------------------
    def track_input(self, t: torch.Tensor, d: torch.Tensor) -> None:
        self._register(t)
        self._set(t, compress(d))

    def _set(self, t: torch.Tensor, d) -> None:
        if d is None:
            self.table.pop(t, None)
        else:
            if d.dim() != t.dim() + 1:
                d = aligned(d, t.dim())
            self.table[t] = d
        self.future.pop(t, None)

    def _register(self, t: torch.Tensor, rekey: bool = False) -> bool:
        """Note ``t``'s storage (``rekey``: again, it may have moved); whether it is new."""
        if t in self.registered and not rekey:
            return False
        try:
            key = _storage(t)._cdata
        except Exception:  # no storage (sparse, nested): writes through it are not aliased
            return False
        if self.registered.get(t) == key:
            return False
        self.registered[t] = key
        refs = self.storages.setdefault(key, [])
        refs.append(weakref.ref(t))
        if len(refs) > 64:
            refs[:] = [r for r in refs if r() is not None]
        return True

    def _adopt(self, t: torch.Tensor) -> None:
        """``t`` was moved onto a storage other tensors may have written (``set_``): it may
        hold any of their values."""
        row = summaries.union_rows([everything(self.deps(u)) for u in self._aliases(t)])
        if row is not None:
            self.lost[self._where(f"{self.op_name} (a tensor moved onto another storage)")] += 1
            self._set(t, row.reshape((1,) * t.dim() + (-1,)))

    def see(self, t: torch.Tensor) -> None:
        """Register a tensor met for the first time. One on a storage that tracked tensors
        share, yet made by no op the tracer saw, is a new Python object over their memory
        (``as_subclass``, a zero-copy ``from_dlpack``): the table is keyed by object, so it
        gets their summary (``nn.Parameter(x)`` may outlive ``x``: :func:`_patch_reads`)."""
        if not self._register(t) or self.deps(t) is not None:
            return
        for u in self._aliases(t):
            d = self.deps(u)
            if d is not None and (u.shape, u.stride(), u.storage_offset(), u.dtype) == (
                t.shape, t.stride(), t.storage_offset(), t.dtype
            ):
                self._set(t, d)
                return
        self._adopt(t)

    def set_data(self, t: torch.Tensor, value: torch.Tensor) -> None:
        """``t.data = value``: no ATen op runs, ``t`` now is ``value``'s alias."""
        self._register(t, rekey=True)
        self._set(t, self.deps(value))

    def _aliases(self, t: torch.Tensor) -> list[torch.Tensor]:
        key = self.registered.get(t)
        if key is None:
            return []
        alive = [r() for r in self.storages.get(key, [])]
        return [u for u in alive if u is not None and u is not t]

    def _write(self, t: torch.Tensor, d) -> None:
        """``t`` was written in place and now has summary ``d``: so do the parts of every tensor
        that shares its storage."""
        self._register(t)
        others = self._aliases(t)
        if not others:
            self._set(t, d)
            return
        if d is None and self.deps(t) is None:
            return  # constants over constants: the others' summaries stay supersets
        if any(u.element_size() != t.element_size() for u in others):
            row = summaries.union_rows([everything(self.deps(u)) for u in others + [t]]
                                       + [everything(d)])
            for u in others + [t]:
                self._set(u, row.reshape((1,) * u.dim() + (-1,)))
            return
        size = _storage(t).nbytes() // t.element_size()
        like = next(x for x in [d, self.deps(t)] + [self.deps(u) for u in others]
                    if x is not None)
        pieces = [(_elements(u, size).reshape(-1), _rows(self.deps(u), u.shape, self.n))
                  for u in others if self.deps(u) is not None]
        storage = summaries.storage(size, self.n, pieces, like)
        new = None if d is None else _rows(aligned(d, t.dim()), t.shape, self.n)
        storage = summaries.written(storage, _elements(t, size).reshape(-1), new)
        for u in others + [t]:
            index = _elements(u, size)
            self._set(u, compress(summaries.move(storage, lambda s, i=index: s[i])))

    # -- the mode ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = self.tensors_in(args, kwargs)
        self.op_name = str(func)
        for x in inputs:
            self.see(x)
        tracked = [x for x in inputs if self.deps(x) is not None]
        written = _written(func, args, kwargs)
        if func in READS:
            out = func(*args, **kwargs)
            if tracked:
                self.path_dependent = True
                row = self._union_row(tracked)
                self.escaped = summaries.union_rows([self.escaped, row])
            return out
        if not tracked:  # (a written tensor is an input too: a tracked one is in ``tracked``)
            out = func(*args, **kwargs)
            for w in written:  # ``set_`` moves a tensor onto another storage: a new alias
                if self._register(w, rekey=True):
                    self._adopt(w)
            for o in _tensors(out):
                self._register(o)
            return out
        if written and _fresh_returns(func):
            return self._writes_and_returns(func, args, kwargs, written, tracked)
        if written:  # ruled before the op runs: the rule reads the old values
            new = self._apply(func, args, kwargs, written)
            shapes = [tuple(w.shape) for w in written]
            out = func(*args, **kwargs)
            new = [self._reshaped_in_place(func, w, d, shape)
                   for w, d, shape in zip(written, new, shapes, strict=True)]
            for w, d in zip(written, new, strict=True):
                self._register(w, rekey=True)  # after ``set_``, ``w`` shares another storage
                self._write(w, d)
            outs = _tensors(out)
            for o in outs:
                self._register(o)
                if not any(o is w for w in written):
                    self._set(o, new[0] if len(new) == 1 else None)
            self._check_blame(written, tracked)
            return out
        out, outs = self._run_and_rule(func, args, kwargs)
        self._check_blame(outs, tracked)
        return out

    def _run_and_rule(self, func, args, kwargs):
        """Run ``func`` and give each tensor it returns the summary its rule says."""
        out = func(*args, **kwargs)
        outs = _tensors(out)
        new = self._apply(func, args, kwargs, outs)
        for o, d in zip(outs, new, strict=True):
            self._register(o)
            self._set(o, d)
        return out, outs

    def _union_row(self, tensors):
        """Every input any of ``tensors`` depends on, as one ``(N,)`` row."""
        return summaries.union_rows([everything(self.deps(x)) for x in tensors])

    def _writes_and_returns(self, func, args, kwargs, written, tracked):
        """An op that writes tensors in place *and* returns new ones (``_native_batch_norm_legit``
        updates its running statistics): the rule speaks for the returned tensors. A written
        tensor the rule said nothing of (by :meth:`assume`) may now hold anything its inputs
        depend on."""
        self.assumed = []
        out, outs = self._run_and_rule(func, args, kwargs)
        row = self._union_row(tracked)
        for w in written:
            if any(w is o for o in outs + self.assumed):
                continue  # returned (ruled above), or described by the rule
            self.lost[self._where(f"{func} (wrote a tensor no rule describes)")] += 1
            self._write(w, row.reshape((1,) * w.dim() + (-1,)))
        self._check_blame(outs + written, tracked)
        return out

    def _reshaped_in_place(self, func, w: torch.Tensor, d, shape: tuple):
        """An in-place op that changed ``w``'s shape (``squeeze_``, ``unsqueeze_``,
        ``resize_``...) was ruled on the old shape: a summary laid out for it would be read
        at the wrong elements."""
        if d is None or tuple(w.shape) == shape:
            return d
        name = func._schema.name.split("::")[-1]
        if name in ("squeeze_", "unsqueeze_") and w.numel() == math.prod(shape):
            return compress(expanded(aligned(d, len(shape)), shape).reshape(*w.shape, self.n))
        self.lost[self._where(f"{func} (changed the shape in place)")] += 1
        return everything(d).reshape((1,) * w.dim() + (-1,))

    def _apply(self, func, args, kwargs, outs):
        name = func._schema.name.split("::")[-1]
        if name in SHAPE_FROM_VALUES:
            self.path_dependent = True
        rule = rules.RULES.get(func)
        if rule is None and torch.Tag.pointwise in func.tags:
            rule = rules.pointwise
        if rule is None:
            rule = rules.RULES.get(_functional(func))
        if rule is None:
            self.lost[self._where(str(func))] += 1
            return rules.fallback(self, args, kwargs, outs)
        try:
            if rules.knows_runs(rule) or not self._runs_among(args, kwargs):
                result = rule(self, args, kwargs, outs)
            else:  # a rule that knows the dense form only: sound, at its cost
                result = rules.through_dense(rule, self, args, kwargs, outs)
            if len(result) != len(outs):
                raise ValueError(f"{len(result)} summaries for {len(outs)} outputs")
            return [_fit(d, o) for d, o in zip(result, outs, strict=True)]
        except Exception as exc:  # a rule that cannot handle this call: the sound fallback
            self.lost[self._where(f"{func} (rule failed: {describe(exc)[:80]})")] += 1
            return rules.fallback(self, args, kwargs, outs)

    def _runs_among(self, args, kwargs) -> bool:
        return any(summaries.is_runs(self.deps(x)) for x in self.tensors_in(args, kwargs))

    def _where(self, op: str) -> str:
        return f"{op} in {self.stack[-1]}" if self.stack else op

    # -- where a dependency on the future entered ----------------------------------------------
    def _check_blame(self, outs, inputs) -> None:
        if self.blame is not None or not self.find_blame:
            return
        seen = [self._sees_future(o) for o in outs]
        if not any(s is True for s in seen):
            return
        if any(self._sees_future(x) is True for x in inputs):
            return
        self.blame = self._where(self.op_name)

    def _sees_future(self, t: torch.Tensor):
        if t in self.future:
            return self.future[t]
        d = self.deps(t)
        result = False if d is None else _future(t, d, self.grid, self.ranks)
        self.future[t] = result
        return result


# Tensor methods that hand values to Python without an ATen op (``item`` and ``bool`` do
# dispatch ``_local_scalar_dense``, which READS catches): numpy and from_numpy round trips.
# The storage is the other way out: pickle, ``copy.deepcopy``, ``bytes(...)``, ``set_(storage)``
# all start from it (the tracer itself calls :func:`_storage`, the unpatched method).
# ``map_``, ``map2_`` and ``apply_`` call a Python function on values, element by element.
OUTSIDE_READS = ("numpy", "tolist", "__array__", "__dlpack__", "untyped_storage", "storage",
                 "_typed_storage", "map_", "map2_", "apply_")
_MAKE_SUBCLASS = torch._C.TensorBase._make_subclass
_DATA = torch._C.TensorBase.data  # the ``.data`` descriptor: its setter runs no ATen op


def _storage(t: torch.Tensor):
    return torch._C.TensorBase.untyped_storage(t)


def _patch_reads(tracer: Tracer) -> list:
    saved = [(torch.Tensor, "data", torch.Tensor.__dict__.get("data"))]

    def set_data(self, value):
        _DATA.__set__(self, value)
        tracer.set_data(self, value)

    torch.Tensor.data = property(_DATA.__get__, set_data)
    for module in (torch.utils.dlpack, torch):  # to_dlpack(x): a capsule of x's memory
        original = getattr(module, "to_dlpack", None)
        if original is not None:
            def to_dlpack(t, *args, __original=original, **kwargs):
                tracer.read_outside(t)
                return __original(t, *args, **kwargs)

            saved.append((module, "to_dlpack", original))
            module.to_dlpack = to_dlpack
    def make_subclass(*args, **kwargs):  # nn.Parameter(x): a new object over x's tensor
        out = _MAKE_SUBCLASS(*args, **kwargs)
        data = args[1] if len(args) > 1 else kwargs.get("data")
        if isinstance(data, torch.Tensor) and tracer.deps(data) is not None:
            tracer._register(out)
            tracer._set(out, tracer.deps(data))
        return out

    saved.append((torch.Tensor, "_make_subclass", torch.Tensor.__dict__.get("_make_subclass")))
    torch.Tensor._make_subclass = staticmethod(make_subclass)
    for name in OUTSIDE_READS:
        original = torch.Tensor.__dict__.get(name)
        if original is None and not hasattr(torch.Tensor, name):
            continue
        method = getattr(torch.Tensor, name)

        def wrapper(self, *args, __method=method, **kwargs):
            for t in [self, *args]:
                if isinstance(t, torch.Tensor):
                    tracer.read_outside(t)
            return __method(self, *args, **kwargs)

        saved.append((torch.Tensor, name, original))
        setattr(torch.Tensor, name, wrapper)
    return saved


def _unpatch(saved: list) -> None:
    for owner, name, original in reversed(saved):
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def _elements(t: torch.Tensor, size: int) -> torch.Tensor:
    """The storage index of each element of ``t``."""
    return torch.arange(size).as_strided(t.shape, t.stride(), t.storage_offset())


def _rows(d, shape, n):
    """A summary at ``shape`` as ``(numel, N)`` rows, one per element."""
    return expanded(d, shape).reshape(-1, n)


def _tensors(out) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(out)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _written(func, args, kwargs) -> list[torch.Tensor]:
    """The tensors an op writes into (in-place ``self``, ``out=``)."""
    found = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) and not arg.kwarg_only else kwargs.get(arg.name)
        found.extend(_tensors(value))
    return found


def _fresh_returns(func) -> bool:
    """Whether ``func`` returns a tensor that is not one of the arguments it writes."""
    return any(
        "Tensor" in str(r.type) and (r.alias_info is None or not r.alias_info.is_write)
        for r in func._schema.returns
    )


def _functional(func):
    """``aten.add_.Tensor`` -> ``aten.add.Tensor`` (the rule of the out-of-place op)."""
    name = func._schema.name.split("::")[-1]
    base = name[:-1] if name.endswith("_") else name
    packet = getattr(aten, base, None)
    if packet is None:
        return None
    return getattr(packet, func._overloadname, None)


def _fit(d, out: torch.Tensor):
    """A rule's summary, checked against the output it describes."""
    if d is None:
        return None
    d = aligned(d, out.dim())
    if d.dim() != out.dim() + 1 or any(
        s not in (1, o) for s, o in zip(d.shape[:-1], out.shape, strict=True)
    ):
        raise ValueError(f"summary of shape {tuple(d.shape)} for an output {tuple(out.shape)}")
    return compress(d)


def _future(t: torch.Tensor, d: torch.Tensor, grid, ranks) -> bool | None:
    """Whether an element at some grid position depends on an input of a later rank, when the
    tensor has one recognisable set of position axes (``None`` otherwise)."""
    n = len(ranks)
    shape = tuple(t.shape)
    candidates = []
    for a in range(len(shape) - len(grid) + 1):
        if shape[a : a + len(grid)] == tuple(grid):
            candidates.append(list(range(a, a + len(grid))))
    if len(grid) > 1:
        candidates.extend([[a] for a, s in enumerate(shape) if s == n])
    if len(candidates) != 1 or n < 2:
        return None
    axes = candidates[0]
    others = [a for a in range(len(shape)) if a not in axes]
    r = summaries.any_over(d, others) if others else d
    r = r.expand(*[shape[a] if a in axes else 1 for a in range(len(shape))], n).reshape(n, n)
    return summaries.reaches_later(r, ranks)
