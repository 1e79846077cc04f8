"""The tracer: runs the model once, on real values, and carries a summary next to each tensor.

A ``TorchDispatchMode`` sees every ATen op of the forward pass (composite ops arrive
decomposed: ``linear`` as ``addmm``, ``F.scaled_dot_product_attention`` as the kernel chosen for
this device) and every higher-order operator (``flex_attention``, ``cond``). A dispatch mode,
unlike a tensor subclass or a function mode, does not change the path the model takes:
``nn.TransformerEncoder``'s fused fast path is taken (or not) exactly as in an ordinary call, and
gets a rule of its own.

Summaries live in a side table keyed by tensor identity (a weak dictionary: a tensor that comes
back from C++ is the same Python object, torch preserves it). A tensor the tracer did not see
being made is **of unknown origin** (:mod:`.origin`): it may depend on everything, and a mark of
where it entered rides in its summary, so the certificate is not proved while one reaches an
output. Writes in place are the place where identity is not enough: a write through a view
changes every tensor that shares the storage, so the tracer keeps, per storage, the tensors it
has seen on it, and after a write recomputes their summaries element by element from the
storage's. A write it did not see (another thread, the tracer switched off) is caught by the
tensor's version counter at its next use; what the counters cannot see (raw memory, threads,
tampering with the tracer) is watched for while the trace runs (:mod:`.watch`).
"""

import contextlib
import functools
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from properties.errors import describe

from . import deps as summaries
from . import routing, rules, seeded, signs, watch
from .deps import aligned, compress, constant_zero, expanded
from .origin import UNKNOWN_SLOTS, call_site, memory_range, storage_key, version

aten = torch.ops.aten
# Ops that read values into Python (a branch, a shape): the result holds for the path taken.
# The value checks raise on values: whether they raised is a branch too.
CHECKS = {aten._linalg_check_errors.default, aten._assert_async.default,
          aten._assert_async.msg, aten._functional_assert_async.msg}
READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default} | CHECKS
BOOLEAN_READS = {aten.is_nonzero.default, aten.equal.default}
LIFTS = {aten.lift_fresh.default, aten.lift_fresh_copy.default}  # torch.tensor(python data)
UNINITIALIZED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
                 "empty_permuted"}
_SPECTRAL = {"_fft_r2c", "_fft_c2r", "mul", "div"}
PARTS = {"_values", "_indices", "values", "indices", "crow_indices", "col_indices",
         "ccol_indices", "row_indices"}  # views into the parts of a sparse tensor


def _outside_the_trace(method):
    """Run a tracer method called from outside an op (a watcher) with the modes off."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.in_dispatch:
            return method(self, *args, **kwargs)
        with torch._C._DisableTorchDispatch():
            return method(self, *args, **kwargs)

    return wrapper


class Tracer(TorchDispatchMode):
    supports_higher_order_operators = True  # ruled in _higher_order

    def __init__(
        self, n: int, grid: tuple[int, ...], ranks: torch.Tensor, names: dict, blame: bool,
        form: str | None = None,
    ):
        super().__init__()
        self.n_inputs = n
        self.n = n + UNKNOWN_SLOTS  # summary width: the inputs, then one column per entry
        # every summary in the table has this form (``deps``: dense bits or runs); rows (an
        # ``everything``, ``escaped``, the unknown-origin and generator rows) are dense
        # ``(n,)`` bools in either: ``n`` bits, cheap at any length
        self.form = form or summaries.form_for(n)
        self.grid = grid
        self.ranks = ranks
        self.names = names  # module -> qualified name, for saying where an op ran
        self.find_blame = blame  # costs a scan per op: only asked for on a second run
        self.table = WeakTensorKeyDictionary()
        self.versions = WeakTensorKeyDictionary()  # every tensor of known origin -> version
        self.future = WeakTensorKeyDictionary()  # tensor -> sees the future (None: unknown)
        self.storages: dict[int, list] = {}
        self.registered = WeakTensorKeyDictionary()
        self.exposed: dict[int, str] = {}  # storage -> where its memory was handed out
        self.parts = WeakTensorKeyDictionary()  # sparse tensor -> storages of its parts
        self.signs = WeakTensorKeyDictionary()  # tensor -> inputs its zeros' signs carry
        self.has_zero = WeakTensorKeyDictionary()  # constant -> (version, has an exact zero)
        self.rng = seeded.Generators()
        self.lost: Counter = Counter()
        self.converted: Counter = Counter()  # dense-only rules run on a run-form certificate
        self.path_dependent = False
        self.escaped: torch.Tensor | None = None  # inputs read into Python values
        self.reads: list[str] = []  # where input values were read into Python
        self.entries: dict[str, int] = {}  # where unknown origin entered -> its slot
        self.blame: str | None = None  # where a dependency on the future first appeared
        self.stack: list[str] = []
        self.op_name = ""
        self.assumed: list[torch.Tensor] = []  # what the current op's rule said it writes
        self.lifting = None  # the tensor of Python data ``lift_fresh`` is lifting
        self.in_dispatch = 0  # inside __torch_dispatch__ (the watcher lets the mode be off)
        self.checking = 0  # inside a call whose C++ reads values only to check them
        self.bumps = 0  # version bumps the current op's writes will get after it returns
        self.before: list[int] = []  # the current op's inputs' versions before it ran
        self.read_number = 0  # READS ops so far (tracked or not): how branches are numbered
        self.branches: list = []  # (read number, "flip" or "raise", where, inputs read)
        self.route_plan = None  # the current op's operands in a permutation's frame (routing)

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

    # -- what leaves the tracer's sight --------------------------------------------------------
    def untraced(self):
        """For the tracer's own work outside an op (the watchers' wrappers): its tensors are
        not the model's, so no mode must see them."""
        return contextlib.nullcontext() if self.in_dispatch else torch._C._DisableTorchDispatch()

    @_outside_the_trace
    def read_outside(self, t: torch.Tensor, how: str = "") -> None:
        """``t``'s values were read by Python (``numpy()``, ``tolist()``: no ATen op sees it):
        whatever is built from them may depend on anything ``t`` depends on."""
        self.see(t)
        d = self.deps(t)
        if d is not None:
            self.escape(self._row(d), how or "a read into Python")

    @_outside_the_trace
    def escape(self, row: torch.Tensor, what: str, where: str | None = None) -> None:
        """Values that depend on ``row`` reached Python: they may flow anywhere, and steer the
        model anywhere (another input may take another path, which may read any input). Every
        output may depend on everything, and the certificate says where."""
        where = f"{what} at {where or call_site()}"
        self.path_dependent = True
        self.reads.append(where)
        read = row[: self.n_inputs].nonzero().reshape(-1).tolist()
        shown = ", ".join(map(str, read[:4])) + (", ..." if len(read) > 4 else "")
        self.detect(f"input values ({shown}) read into Python by {where}")

    def _read(self, func, args, number: int, row: torch.Tensor) -> None:
        """A read op on input values: a check (it raises on values, or ``F.one_hot``'s range
        check) and a boolean have two outcomes, tried after the trace (:mod:`.branches`);
        any other value goes to Python, out of sight."""
        where = call_site()
        if func in CHECKS or self.checking:
            self.branches.append((number, "raise", f"{func} (a check on values)", where, row))
        elif func in BOOLEAN_READS or (isinstance(args[0], torch.Tensor)
                                        and args[0].dtype == torch.bool):
            self.branches.append((number, "flip", f"{func} (a boolean)", where, row))
        else:
            self.escape(row, f"{func} (a value)", where)
            return
        self.reads.append(f"{self.branches[-1][2]} at {where}")

    @_outside_the_trace
    def expose(self, t: torch.Tensor, how: str) -> None:
        """``t``'s memory was handed out (a dlpack capsule, a storage object): it may be
        written where no op shows it, so every tensor on it is of unknown origin from now on."""
        self.read_outside(t, how)
        key = storage_key(t)
        if key is not None:
            self.exposed.setdefault(key, f"memory handed out by {how} at {call_site()}")

    @_outside_the_trace
    def unknown_row(self, label: str) -> torch.Tensor:
        """The summary row of a value of unknown origin entered at ``label``: every input, and
        the entry's own slot."""
        slot = self.entries.setdefault(label, min(len(self.entries), UNKNOWN_SLOTS - 1))
        row = torch.ones(self.n, dtype=torch.bool)
        row[self.n_inputs:] = False
        row[self.n_inputs + slot] = True
        return row

    @_outside_the_trace
    def detect(self, what: str) -> None:
        """Something the tracer cannot follow happened (a thread, raw memory, the tracer
        switched off): every output may depend on anything, and the certificate says why."""
        row = self.unknown_row(what)
        self.escaped = row if self.escaped is None else self.escaped | row

    def _row_on(self, t: torch.Tensor, row: torch.Tensor):
        """A dense ``(n,)`` row as the summary of every element of ``t`` (in the form)."""
        return summaries.in_form(row.reshape((1,) * t.dim() + (-1,)), self.form)

    def _row(self, d) -> torch.Tensor | None:
        """Everything a summary depends on, as a dense ``(n,)`` row (None for a constant)."""
        return summaries.everything_dense(d)

    @staticmethod
    def _rows_union(rows) -> torch.Tensor | None:
        rows = [r for r in rows if r is not None]
        return torch.stack(rows).any(0) if rows else None

    def _with_row(self, t: torch.Tensor, row: torch.Tensor):
        """``t``'s summary united with a dense row on every element."""
        d = self.deps(t)
        if d is None:
            return self._row_on(t, row)
        return summaries.union([aligned(d, t.dim()), self._row_on(t, row)], t.dim())

    def __enter__(self):
        # torch imports torch._dynamo lazily, inside the first traced op, and dynamo records
        # some of torch.Tensor's methods as they are then: import it before they are patched
        import torch._dynamo  # noqa: F401

        mode = super().__enter__()
        self._watch = watch.Watch(self)
        self._watch.start()
        return mode

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._watch.stop()

    # -- bookkeeping ---------------------------------------------------------------------------
    def track_input(self, t: torch.Tensor, d) -> None:
        self._register(t)
        if d.shape[-1] < self.n:  # the input's own columns; the unknown slots are empty
            d = summaries.dense(d)
            d = torch.nn.functional.pad(d, (0, self.n - d.shape[-1]))
        self._set(t, compress(d))

    def know(self, tensors) -> None:
        """Tensors present before the trace: constants (made before the input existed)."""
        for t in tensors:
            self._register(t)
            self.versions[t] = version(t)

    def _set(self, t: torch.Tensor, d) -> None:
        if d is None:
            self.table.pop(t, None)
        else:
            if d.dim() != t.dim() + 1:
                d = aligned(d, t.dim())
            # one form in the table (a no-op when it is already: every path that makes a
            # summary from a dense row or a dense-only rule lands here)
            self.table[t] = summaries.in_form(d, self.form)
        # an op that writes in place has its written tensors' counters bumped after it
        # returns (by autograd's ADInplaceOrView kernel, above this mode): allow for them
        self.versions[t] = version(t) + self.bumps
        self.future.pop(t, None)

    def _register(self, t: torch.Tensor, rekey: bool = False) -> bool:
        """Note ``t``'s storage (``rekey``: again, it may have moved); whether it is new."""
        if t in self.registered and not rekey:
            return False
        key = storage_key(t)
        if key is None:  # no storage (sparse, nested): see ``parts``
            return False
        if self.registered.get(t) == key:
            return False
        self.registered[t] = key
        refs = self.storages.setdefault(key, [])
        refs.append(weakref.ref(t))
        if len(refs) > 64:
            refs[:] = [r for r in refs if r() is not None]
        return True

    def see(self, t: torch.Tensor) -> None:
        """Check ``t`` before an op reads it: a tensor met for the first time gets its origin
        (:meth:`_first_meeting`); a known one whose version counter moved since the tracer last
        saw it was written where no op showed it."""
        known = self.versions.get(t)
        if known is None:
            self._first_meeting(t)
        elif version(t) > known:
            self._taint(t, f"a tensor written where the tracer could not see it (noticed "
                           f"by {self._where(self.op_name)}, {call_site()})")
        elif self.exposed and self.registered.get(t) in self.exposed:
            self._taint(t, self.exposed[self.registered[t]])
        if t.layout != torch.strided and t in self.parts:
            self._gather_parts(t)

    def _first_meeting(self, t: torch.Tensor) -> None:
        self._register(t)
        if self._from_aliases(t) or self._from_overlap(t):
            return
        if t is self.lifting:  # torch.tensor(...): Python data
            self.versions[t] = version(t)
            return
        self._set(t, self._row_on(t, self.unknown_row(
            f"a tensor no traced op made (first read by {self._where(self.op_name)}, "
            f"{call_site()})")))

    def _from_aliases(self, t: torch.Tensor) -> bool:
        """A tensor met on a storage known tensors share, yet made by no op the tracer saw, is a
        new Python object over their memory (``as_subclass``, ``.data``): it takes the summary
        of the one with its geometry, else may hold any of their values."""
        others = self._aliases(t)
        if not others:
            return False
        for u in others:
            if u in self.versions and _geometry(u) == _geometry(t):
                self._set(t, self.deps(u))
                return True
        self._adopt(t)
        return True

    def _from_overlap(self, t: torch.Tensor) -> bool:
        """A tensor over memory that known tensors' storages hold (a dlpack capsule,
        ``frombuffer`` over their bytes): it may hold any of their values, and its storage
        joins theirs for writes."""
        span = memory_range(t)
        if span is None:
            return False
        rows, hit, exact = [], False, None
        reach = _reach(t)
        for _key, refs in list(self.storages.items()):
            live = [r() for r in refs]
            live = [u for u in live if u is not None and u is not t]
            if not live:
                continue
            other = memory_range(live[0])
            if other is None or other[1] <= span[0] or span[1] <= other[0]:
                continue
            hit = True
            for u in live:
                if u in self.versions and _geometry(u) == _geometry(t):
                    exact = u  # the same elements: the same summary
                r = _reach(u)
                if self.deps(u) is not None and r[0] < reach[1] and reach[0] < r[1]:
                    rows.append(self._row(self.deps(u)))
            mine = self.registered.get(t)
            if mine is not None:  # one memory: a write through either reaches both
                self.storages.setdefault(mine, []).extend(refs)
                refs.append(weakref.ref(t))
        if not hit:
            return False
        if exact is not None:
            self._set(t, self.deps(exact))
            return True
        self.lost[self._where(f"{self.op_name} (a tensor over other tensors' memory)")] += 1
        self._set(t, self._row_on(t, torch.stack(rows).any(0)) if rows else None)
        return True

    def _taint(self, t: torch.Tensor, label: str) -> None:
        """``t`` and its aliases may now hold anything: their summaries get every input and the
        entry's slot (what they held before may remain)."""
        row = self.unknown_row(label)
        for u in self._aliases(t) + [t]:
            self._set(u, self._with_row(u, row))

    def _gather_parts(self, t: torch.Tensor) -> None:
        """A sparse tensor holds what its parts hold: writes through ``_values()`` reach it."""
        rows = [self._row(self.deps(u)) for key in self.parts[t]
                for u in self._live(key) if self.deps(u) is not None]
        if rows:
            row = self._rows_union(rows + [self._row(self.deps(t))])
            self._set(t, self._row_on(t, row))

    def _live(self, key) -> list[torch.Tensor]:
        alive = [r() for r in self.storages.get(key, [])]
        return [u for u in alive if u is not None]

    def _adopt(self, t: torch.Tensor) -> None:
        """``t`` was moved onto a storage other tensors may have written (``set_``): it may
        hold any of their values."""
        row = self._rows_union([self._row(self.deps(u)) for u in self._aliases(t)])
        if row is not None:
            self.lost[self._where(f"{self.op_name} (a tensor moved onto another storage)")] += 1
            self._set(t, self._row_on(t, row))
        else:
            self._set(t, None)

    @_outside_the_trace
    def set_data(self, t: torch.Tensor, value: torch.Tensor) -> None:
        """``t.data = value``: no ATen op runs, ``t`` now is ``value``'s alias."""
        self.see(value)
        self._register(t, rekey=True)
        self._set(t, self.deps(value))

    def _aliases(self, t: torch.Tensor) -> list[torch.Tensor]:
        key = self.registered.get(t)
        if key is None:
            return []
        return [u for u in self._live(key) if u is not t]

    def _write(self, t: torch.Tensor, d) -> None:
        """``t`` was written in place and now has summary ``d``: so do the parts of every tensor
        that shares its storage."""
        self._register(t)
        others = self._aliases(t)
        if not others:
            self._set(t, d)
            return
        if d is None and self.deps(t) is None:
            for u in others:  # constants over constants: the others' summaries stay supersets
                if u in self.versions:
                    self.versions[u] = version(u) + self.bumps
            self.versions[t] = version(t) + self.bumps
            return
        key = self.registered.get(t)
        if any(u.element_size() != t.element_size() or self.registered.get(u) != key
               for u in others):
            row = self._rows_union([self._row(self.deps(u)) for u in others + [t]]
                                   + [self._row(d)])
            for u in others + [t]:
                self._set(u, self._row_on(u, row))
            return
        size = torch._C.StorageBase.nbytes(torch._C.TensorBase.untyped_storage(t)) \
            // t.element_size()
        pieces = [(_elements(u, size).reshape(-1), _rows(self.deps(u), u.shape, self.n))
                  for u in others if self.deps(u) is not None and u.numel()]
        storage = summaries.storage(size, self.n, pieces, self.form)
        new = None if d is None else _rows(aligned(d, t.dim()), t.shape, self.n)
        storage = summaries.written(storage, _elements(t, size).reshape(-1), new)
        for u in others + [t]:
            index = _elements(u, size)
            self._set(u, compress(summaries.move(storage, lambda s, i=index: s[i])))

    # -- the mode ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.in_dispatch += 1
        profile = self._watch.pause()  # the rules' own calls need no watching
        try:
            if isinstance(func, torch._ops.HigherOrderOperator):
                return self._higher_order(func, args, kwargs)
            return self._dispatch(func, args, kwargs)
        finally:
            self._watch.resume(profile)
            self.in_dispatch -= 1

    def _dispatch(self, func, args, kwargs):
        written = _written(func, args, kwargs)
        self.bumps = len(written)
        try:
            out = self._dispatch_op(func, args, kwargs, written)
        finally:
            self.bumps = 0
        if _returns_views(func) and args and isinstance(args[0], torch.Tensor):
            # a view's counter becomes its base's once the op returns (autograd's
            # ADInplaceOrView kernel, above this mode, makes it a view): allow for that
            base = self.versions.get(args[0], version(args[0]))
            for o in _tensors(out):
                if o in self.versions:
                    self.versions[o] = max(self.versions[o], base)
        return out

    def _dispatch_op(self, func, args, kwargs, written):
        inputs = self.tensors_in(args, kwargs)
        self.op_name = str(func)
        self.lifting = args[0] if func in LIFTS else None
        for x in inputs:
            self.see(x)
        self.lifting = None
        self.before = [version(x) for x in inputs]
        tracked = [x for x in inputs if self.deps(x) is not None]
        # token dispatch by a permutation (routing.py): its frame is taken before the op runs
        self.route_plan = routing.before(self, func, args, kwargs, inputs) if tracked else None
        if func in READS:
            number = self.read_number
            self.read_number += 1
            out = self._call(func, args, kwargs, tracked)
            if tracked:
                self._read(func, args, number, self._union_row(tracked))
            return out
        if written and _op(func).inplace_view:
            return self._regeometry(func, args, kwargs, written, inputs)
        if not tracked:  # (a written tensor is an input too: a tracked one is in ``tracked``)
            out = self._call(func, args, kwargs, tracked)
            outs = _tensors(out)
            for o in outs:
                self._register(o)
                self.versions[o] = version(o) + (self.bumps if any(o is w for w in written)
                                                 else 0)
            for w in written:
                self._write(w, None)  # constants over constants
            self._after(func, args, kwargs, inputs, outs, written, [None] * len(outs))
            return out
        if written and _fresh_returns(func):
            return self._writes_and_returns(func, args, kwargs, inputs, written, tracked)
        if written:  # ruled before the op runs: the rule reads the old values
            new = self._apply(func, args, kwargs, written)
            out = self._call(func, args, kwargs, tracked)
            for w, d in zip(written, new, strict=True):
                self._register(w, rekey=True)
                self._write(w, d)
            outs = _tensors(out)
            for o in outs:
                self._register(o)
                if not any(o is w for w in written):
                    self._set(o, new[0] if len(new) == 1 else None)
            self._after(func, args, kwargs, inputs, outs, written, new)
            self._check_blame(written, tracked)
            return out
        out, outs, new = self._run_and_rule(func, args, kwargs, tracked)
        self._after(func, args, kwargs, inputs, outs, written, new)
        self._check_blame(outs, tracked)
        return out

    def _call(self, func, args, kwargs, tracked):
        """Run ``func``. An op that raises on values it reads (``cholesky`` on a matrix that is
        not positive definite): the exception is a branch the model may catch."""
        try:
            if isinstance(func, torch._ops.HigherOrderOperator) or not _op(func).torch_own:
                with self._watch.watching():  # a custom op's or a subgraph's Python runs
                    return func(*args, **kwargs)
            return func(*args, **kwargs)
        except Exception as exc:
            if tracked:
                self.escape(self._union_row(tracked),
                            f"{func} raised {type(exc).__name__} (a branch on values if caught)")
            raise

    def _run_and_rule(self, func, args, kwargs, tracked):
        """Run ``func`` and give each tensor it returns the summary its rule says."""
        out = self._call(func, args, kwargs, tracked)
        outs = _tensors(out)
        new = self._apply(func, args, kwargs, outs)
        for o, d in zip(outs, new, strict=True):
            self._register(o)
            self._set(o, d)
        return out, outs, new

    def _union_row(self, tensors):
        """Every input any of ``tensors`` depends on, as one ``(N,)`` row."""
        row = self._rows_union([self._row(self.deps(x)) for x in tensors])
        return row if row is not None else torch.zeros(self.n, dtype=torch.bool)

    def _writes_and_returns(self, func, args, kwargs, inputs, written, tracked):
        """An op that writes tensors in place *and* returns new ones (``_native_batch_norm_legit``
        updates its running statistics): the rule speaks for the returned tensors. A written
        tensor the rule said nothing of (by :meth:`assume`) may now hold anything its inputs
        depend on."""
        self.assumed = []
        out, outs, new = self._run_and_rule(func, args, kwargs, tracked)
        row = self._union_row(tracked)
        for w in written:
            if any(w is o for o in outs + self.assumed):
                continue  # returned (ruled above), or described by the rule
            self.lost[self._where(f"{func} (wrote a tensor no rule describes)")] += 1
            self._write(w, self._row_on(w, row))
        self._after(func, args, kwargs, inputs, outs, written, new)
        self._check_blame(outs + written, tracked)
        return out

    def _regeometry(self, func, args, kwargs, written, inputs):
        """An op that changes a tensor's geometry in place (``as_strided_``, ``set_``,
        ``squeeze_``, ``resize_``): no element is written; the tensor now views other elements,
        of the same storage or of another one, and holds what they hold."""
        w = written[0]
        tracked = [x for x in inputs if self.deps(x) is not None]
        functional = _functional(func)
        name = func._schema.name.split("::")[-1]
        if functional is not None and not name.startswith(("resize", "set_")):
            # ``squeeze_``, ``t_``, ``as_strided_``...: ``w`` becomes what the view op returns
            d = None
            if self.deps(w) is not None:
                d = self._apply(functional, args, kwargs, [functional(*args, **kwargs)])[0]
            out = self._call(func, args, kwargs, tracked)
            self._register(w, rekey=True)
            self._set(w, d)
            self._after(func, args, kwargs, inputs, _tensors(out), written, [d])
            return out
        old_key = self.registered.get(w)
        storage = self._storage_summary(w)
        out = self._call(func, args, kwargs, tracked)
        self._register(w, rekey=True)
        key = self.registered.get(w)
        if key is not None and key == old_key and storage is not None:
            size = torch._C.StorageBase.nbytes(torch._C.TensorBase.untyped_storage(w)) \
                // w.element_size()
            held = storage.shape[0]
            if size > held:  # grown: the new elements are uninitialized memory
                grown = self.unknown_row(f"uninitialized memory ({func} in "
                                         f"{self._where('')})")
                grown = summaries.in_form(grown.reshape(1, self.n), self.form)
                storage = summaries.cat([storage, grown.expand(size - held, self.n)], 0)
            index = _elements(w, size)
            d = summaries.move(storage, lambda s: s[index])
            self._set(w, compress(d) if bool(summaries.live(d).any()) else None)
        else:  # moved onto another storage: what that storage's tensors hold
            if not self._from_aliases(w):
                self._set(w, None)
        for o in _tensors(out):
            if o is not w:
                self._register(o)
                self._set(o, self.deps(w))
        self._after(func, args, kwargs, inputs, _tensors(out), written, [self.deps(w)])
        return out

    def _storage_summary(self, t: torch.Tensor):
        """``(storage size, n)``: the summary of each storage element (in the form), the union
        from every live tensor on it (None when they do not line up: other element sizes)."""
        key = self.registered.get(t)
        if key is None:
            return None
        tensors = self._live(key)
        if any(u.element_size() != t.element_size() for u in tensors):
            return None
        size = torch._C.StorageBase.nbytes(torch._C.TensorBase.untyped_storage(t)) \
            // max(1, t.element_size())
        pieces = [(_elements(u, size).reshape(-1), _rows(self.deps(u), u.shape, self.n))
                  for u in tensors if self.deps(u) is not None and u.numel()]
        return summaries.storage(size, self.n, pieces, self.form)

    def _apply(self, func, args, kwargs, outs):
        rule = _rule_for(func)
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

    def _higher_order(self, func, args, kwargs):
        """A higher-order operator (``flex_attention``, ``cond``...): run it (its subgraphs run
        below this mode), then its rule, or the fallback over every tensor it was given."""
        self.op_name = f"higher-order {func.name()}"
        inputs = self.tensors_in(args, kwargs)
        for x in inputs:
            self.see(x)
        tracked = [x for x in inputs if self.deps(x) is not None]
        out = self._call(func, args, kwargs, tracked)
        outs = _tensors(out)
        rule = rules.HIGHER_ORDER.get(func.name())
        new = None
        if rule is not None and tracked:
            try:
                if rules.knows_runs(rule) or self.form != summaries.RUNS:
                    found = rule(self, args, kwargs, outs)
                else:  # a rule that knows the dense form only: sound, at its cost
                    found = rules.through_dense(rule, self, args, kwargs, outs)
                new = [_fit(d, o) for d, o in zip(found, outs, strict=True)]
            except Exception as exc:
                self.lost[self._where(f"{self.op_name} (rule failed: {describe(exc)[:80]})")] += 1
        if new is None:
            if tracked:
                self.lost[self._where(self.op_name)] += 1
            new = rules.fallback(self, args, kwargs, outs)
        for o, d in zip(outs, new, strict=True):
            self._register(o)
            self._set(o, d)
        self._check_blame(outs, tracked)
        return out

    def _after(self, func, args, kwargs, inputs, outs, written, new):
        """What every op may do besides its rule: write an input without saying so, draw
        random numbers, make uninitialized memory, carry zeros' signs, decide a shape from
        values, hand out a sparse tensor's parts."""
        done = {id(t) for t in outs + written + self.assumed}
        self.assumed = []
        for x, before in zip(inputs, self.before, strict=False):
            if id(x) not in done and version(x) != before:
                # written by an op whose schema says it does not write: its inputs may be in it
                self.lost[self._where(f"{func} (wrote an input its schema does not declare)")] += 1
                row = self._union_row([t for t in inputs if self.deps(t) is not None])
                self._write(x, self._with_row(x, row))
        plan, self.route_plan = self.route_plan, None
        if plan is not None:  # before the signs' rows: they are added to what routing says
            routing.after(self, plan, func, args, kwargs, outs, written)
        info = _op(func)
        if info.seeded:
            self._seeded(func, args, kwargs, inputs, outs + written)
        if info.name in UNINITIALIZED:
            row = self.unknown_row(f"uninitialized memory ({self._where(str(func))})")
            for o in outs:
                self._set(o, self._row_on(o, row))
        if info.dynamic and not routing.static_count(self, func, args, kwargs):
            self._shape_from_values(func, args, inputs)
        name = info.name
        if len(self.signs) or name in signs.PRODUCERS:
            self._carry_signs(func, args, inputs, outs + written, new)
        if name in PARTS or any(o.layout != torch.strided for o in outs):
            self._note_parts(inputs, outs)
        if name in _SPECTRAL:  # a zero-padded FFT convolution (rules/spectral.py)
            rules.spectral.follow(self, func, args, outs)

    def _seeded(self, func, args, kwargs, inputs, outs):
        gen = seeded.generator_of(func, args, kwargs, outs)
        state = self.rng.row(gen)
        if state is not None:  # the numbers drawn depend on what the state depends on
            for o in outs:
                self._set(o, self._with_row(o, state))
        tracked = [x for x in inputs if self.deps(x) is not None and not any(x is o for o in outs)]
        if tracked and seeded.draws_by_value(func):  # how many it drew depends on the values
            self.rng.add(gen, self._union_row(tracked))

    def _shape_from_values(self, func, args, inputs):
        """An output shape computed from values (``nonzero``, boolean indexing, ``unique``,
        ``repeat_interleave`` by a tensor): Python reads the shape, so the values deciding it
        may flow anywhere."""
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                    aten._unsafe_index.Tensor):
            deciding = [i for i in args[1] if isinstance(i, torch.Tensor)
                        and i.dtype in (torch.bool, torch.uint8)]
        elif func is aten.masked_select.default:
            deciding = [args[1]]  # how many are selected: the mask, not the values
        else:
            deciding = inputs
        deciding = [x for x in deciding if self.deps(x) is not None]
        if deciding:
            self.escape(self._union_row(deciding), f"{func} (a shape computed from values)")

    def _carry_signs(self, func, args, inputs, outs, new):
        """See :mod:`.signs`: zeros' signs made at a dropped dependency, carried along, and
        read by the ops that tell -0.0 from +0.0."""
        rows = [self.signs[x] for x in inputs if x in self.signs]
        positions = signs.read_positions(func, args, new is None or _rule_for(func) is None)
        if rows and positions is not None:
            read = [self.signs[a] for i, a in enumerate(args) if i in positions
                    and isinstance(a, torch.Tensor) and a in self.signs]
            if read:
                row = torch.stack(read).any(0)
                for o in outs:
                    self._set(o, self._with_row(o, row))
        carried = [] if signs.kills(func, args) else rows
        if signs.produces(func) and any(self._has_constant_zero(x) for x in inputs):
            carried = carried + [self._union_row([x for x in inputs if self.deps(x) is not None])]
        if carried:
            row = torch.stack(carried).any(0)
            for o in outs:
                if o.is_floating_point() or o.is_complex():
                    self.signs[o] = row

    def _has_constant_zero(self, x: torch.Tensor) -> bool:
        if not (x.is_floating_point() or x.is_complex()):
            return False
        d = self.deps(x)
        if d is not None:
            return constant_zero(x, d) is not None
        found = self.has_zero.get(x)
        if found is None or found[0] != version(x):
            found = (version(x), bool((x == 0).any()))
            self.has_zero[x] = found
        return found[1]

    def _note_parts(self, inputs, outs):
        keys = {self.registered.get(x) for x in inputs + outs if x.layout == torch.strided}
        keys.discard(None)
        for t in inputs + outs:
            if t.layout != torch.strided:
                self.parts[t] = set(self.parts.get(t, set())) | keys

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
        result = False if d is None else _future(t, summaries.columns(d, self.n_inputs),
                                                   self.grid, self.ranks)
        self.future[t] = result
        return result


class _Op:
    """What the tracer asks of an op's schema and tags, computed once per op."""

    __slots__ = ("name", "writes", "views", "fresh", "inplace_view", "seeded", "dynamic",
                 "pointwise", "torch_own")

    def __init__(self, func):
        schema = func._schema
        tags = func.tags
        self.torch_own = func.namespace in ("aten", "prims")
        self.name = schema.name.split("::")[-1] if func.namespace == "aten" else ""
        self.writes = [(i, a.name, a.kwarg_only) for i, a in enumerate(schema.arguments)
                       if a.alias_info is not None and a.alias_info.is_write]
        self.views = any(r.alias_info is not None and not r.alias_info.is_write
                         for r in schema.returns)
        self.fresh = any("Tensor" in str(r.type) and (r.alias_info is None or
                                                      not r.alias_info.is_write)
                         for r in schema.returns)
        self.inplace_view = torch.Tag.inplace_view in tags
        self.seeded = torch.Tag.nondeterministic_seeded in tags
        self.dynamic = torch.Tag.dynamic_output_shape in tags
        self.pointwise = torch.Tag.pointwise in tags


_OPS: dict = {}


def _op(func) -> _Op:
    found = _OPS.get(func)
    if found is None:
        found = _OPS[func] = _Op(func)
    return found


def _rule_for(func):
    """The rule of ``func``, keyed by its full name: a rule registered for it, the pointwise
    rule for torch's own pointwise ops, or the rule of the out-of-place op an in-place aten op
    is (checked against its schema). A custom op (``mylib::clone``) never gets aten's rule."""
    rule = rules.RULES.get(func)
    if rule is not None:
        return rule
    info = _op(func)
    if info.torch_own and info.pointwise:
        return rules.pointwise
    if func.namespace == "aten":
        functional = _functional(func)
        if functional is not None:
            return rules.RULES.get(functional)
    return None


def _reach(t: torch.Tensor) -> tuple[int, int]:
    """``[first, last)`` bytes ``t``'s elements occupy."""
    start = torch._C.TensorBase.data_ptr(t)
    span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride(), strict=True) if s > 0)
    return start, start + (span + 1) * t.element_size()


def _geometry(t: torch.Tensor) -> tuple:
    return (t.shape, t.stride(), t.dtype, torch._C.TensorBase.data_ptr(t))


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
    for i, name, kwarg_only in _op(func).writes:
        value = args[i] if i < len(args) and not kwarg_only else kwargs.get(name)
        found.extend(_tensors(value))
    return found


def _returns_views(func) -> bool:
    """Whether ``func`` returns views of its first argument (a non-writing alias)."""
    return _op(func).views


def _fresh_returns(func) -> bool:
    """Whether ``func`` returns a tensor that is not one of the arguments it writes."""
    return _op(func).fresh


def _functional(func):
    """``aten.add_.Tensor`` -> ``aten.add.Tensor`` (the rule of the out-of-place op), when its
    arguments are the in-place op's (names and types, alias annotations aside)."""
    name = func._schema.name.split("::")[-1]
    if not name.endswith("_"):
        return None
    packet = getattr(aten, name[:-1], None)
    functional = getattr(packet, func._overloadname, None) if packet is not None else None
    if functional is None:
        return None
    mine = [(a.name, str(a.type)) for a in func._schema.arguments]
    theirs = [(a.name, str(a.type)) for a in functional._schema.arguments]
    return functional if mine == theirs else None


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
