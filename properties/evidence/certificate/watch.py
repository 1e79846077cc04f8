"""What the dispatch mode cannot see, watched while the trace runs.

A dispatch mode sees ATen ops on its own thread while it is on the mode stack. Values also leave
torch without an op (``tolist``, ``numpy``, dlpack, storages, raw pointers), work can run on
another thread, and a model can switch the mode off. Three watchers, from the most precise:

- **Patches** on torch's Python-level entry points, for the time of the trace: the reads say
  which tensor was read (its dependencies reach every output), ``numpy()`` hands out read-only
  arrays (so Python cannot write tensor memory through them), dlpack capsules and storage
  objects mark their memory as exposed (writes through them are invisible: the tensors on it
  are of unknown origin from then on), ``get_rng_state``/``set_rng_state`` carry the generator's
  summary, ``F.one_hot`` (whose C++ reads its indices' range only to check it),
  ``tensor_split`` by a tensor (whose C++ reads the split points without an op), TorchScript
  functions that call ``tolist`` in C++.
- **A profile hook** (``sys.setprofile``, chained to one already set) sees every call made from
  Python bytecode, so also methods bound before the trace (``tolist = torch.Tensor.tolist``,
  ``torch._C.TensorBase.numpy``, ``data_ptr``): raw methods on tensors and generators, thread
  starts, the dispatch-mode stack being popped, switched off (the Python dispatch key excluded)
  or inspected.
- **An audit hook** (``sys.addaudithook``: permanent, idle outside a trace) hears ``ctypes``
  memory access and the profile hook being replaced.

What none of them sees (a raw pointer from numpy's array interface given to a C function; a
pre-bound C method called from C, e.g. through ``map``) is the threat model's stated limit.
"""

import contextlib
import sys
import threading

import numpy as np
import torch

from .origin import call_site, caller_is_torch

_OWN_DIR = __file__.rsplit("/", 4)[0] + "/properties/"  # this package (the tracer's own calls)
_TORCH_DIR = torch.__file__.rsplit("/", 1)[0]
_ACTIVE: "Watch | None" = None  # the audit hook's view of the running trace
_AUDIT_INSTALLED = False

# methods of torch.Tensor that hand values to Python without an ATen op, by what they expose
READ_METHODS = ("tolist", "map_", "map2_", "apply_")
EXPOSING_METHODS = ("__dlpack__", "untyped_storage", "storage", "_typed_storage")
RAW_POINTERS = ("data_ptr",)
GENERATOR_WRITES = ("set_state", "manual_seed", "seed", "graphsafe_set_state", "set_offset")
# the namespaces of torch's C functions (``torch.flip``, ``F.linear``...): a call into them is
# tensor work, which must not happen while the tracer is switched off
_TORCH_NAMESPACES = {id(m) for m in (torch._C._VariableFunctions, torch._C._nn, torch._C._linalg,
                                     torch._C._fft, torch._C._special, torch._C)}
_MAKE_SUBCLASS = torch._C.TensorBase._make_subclass
_DATA = torch._C.TensorBase.data  # the ``.data`` descriptor: its setter runs no ATen op


def _mode_functions():
    """Functions that pop, switch off or inspect the dispatch-mode stack."""
    import torch.utils._python_dispatch as pd

    found = []
    for name in ("_pop_torch_dispatch_stack", "_set_dispatch_mode", "_unset_dispatch_mode",
                 "_dispatch_tls_set_dispatch_key_excluded", "_len_torch_dispatch_stack",
                 "_get_dispatch_stack_at", "_get_dispatch_mode", "_DisableTorchDispatch",
                 "_ExcludeDispatchKeyGuard", "_dispatch_tls_is_dispatch_key_excluded"):
        f = getattr(torch._C, name, None)
        if f is not None:
            found.append(f)
    codes = []
    for name in ("_disable_current_modes", "_pop_mode_temporarily", "_pop_mode",
                 "_get_current_dispatch_mode", "_get_current_dispatch_mode_stack",
                 "is_in_torch_dispatch_mode"):
        f = getattr(pd, name, None)
        f = getattr(f, "__wrapped__", f)
        if hasattr(f, "__code__"):
            codes.append(f.__code__)
    return found, codes


def _thread_codes():
    import concurrent.futures.thread as cft

    codes = [threading.Thread.start.__code__, cft.ThreadPoolExecutor.submit.__code__]
    try:
        import numpy.lib.stride_tricks as st

        codes.append(st.as_strided.__code__)  # numpy views reach any memory
    except (ImportError, AttributeError):
        pass
    return codes


class Watch:
    """The watchers of one trace (:meth:`start` when the mode is entered, :meth:`stop` when it
    is left)."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.saved: list = []
        self.thread = threading.get_ident()
        self.quiet = 0  # inside our own wrappers: the profile hook lets their calls pass
        self.previous_profile = None
        self.mode_functions, mode_codes = _mode_functions()
        self.mode_ids = {id(f) for f in self.mode_functions}
        self.codes = {c: "the dispatch-mode stack was popped or inspected" for c in mode_codes}
        for c in _thread_codes():
            self.codes[c] = "a thread was started (the tracer sees only its own thread)" \
                if c.co_name in ("start", "submit") else "numpy's as_strided (unchecked memory)"
        self.start_new_thread = {id(getattr(__import__("_thread"), n)) for n in
                                 ("start_new_thread", "start_new", "start_joinable_thread")
                                 if hasattr(__import__("_thread"), n)}
        self.depth = 0
        self.watched = self.mode_ids | self.start_new_thread

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        global _ACTIVE
        self.depth = torch._C._len_torch_dispatch_stack()
        self._patch()
        _install_audit_hook()
        self.previous_profile = sys.getprofile()
        self.quiet += 1
        try:
            _ACTIVE = self
            sys.setprofile(self._profile)
        finally:
            self.quiet -= 1

    def stop(self) -> None:
        global _ACTIVE
        self.quiet += 1
        try:
            sys.setprofile(self.previous_profile)
        finally:
            _ACTIVE = None
            for owner, name, original in reversed(self.saved):
                if original is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            self.saved = []
            self.quiet -= 1

    def pause(self):
        """Switch the profile hook off (inside the tracer's own dispatch); returns the hook to
        :meth:`resume`."""
        hook = sys.getprofile()
        if hook is not None:
            self.quiet += 1
            sys.setprofile(None)
            self.quiet -= 1
        return hook

    def resume(self, hook) -> None:
        if hook is not None:
            self.quiet += 1
            sys.setprofile(hook)
            self.quiet -= 1

    @contextlib.contextmanager
    def watching(self):
        """The hook on again while an op runs Python of the model's (a custom op, a
        higher-order operator's subgraphs)."""
        hook = sys.getprofile()
        self.resume(self._profile)
        try:
            yield
        finally:
            self.quiet += 1
            sys.setprofile(hook)
            self.quiet -= 1

    # -- the profile hook ----------------------------------------------------------------------
    def _profile(self, frame, event, arg):
        if self.previous_profile is not None:
            self.previous_profile(frame, event, arg)
        if event == "c_call":
            if not self.quiet and not frame.f_code.co_filename.startswith(_OWN_DIR):
                self._c_call(frame, arg)
        elif event == "call":
            why = self.codes.get(frame.f_code)
            if why is not None and not self.quiet and not _called_from_torch(frame):
                self._detect(f"{why}: {frame.f_code.co_name}")

    def _c_call(self, frame, fn):
        owner = getattr(fn, "__self__", None)
        tensor = isinstance(owner, torch.Tensor)
        if not tensor and id(owner) not in _TORCH_NAMESPACES and id(fn) not in self.watched \
                and not isinstance(owner, torch.Generator):
            return  # not torch's, not watched: the common case, at once
        tracer = self.tracer
        from_torch = frame.f_code.co_filename.startswith(_TORCH_DIR)
        if not tracer.in_dispatch and not from_torch and (  # (torch pops it to dispatch)
            torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.Python)
            or torch._C._len_torch_dispatch_stack() < self.depth
        ):
            self._detect("the tracer's dispatch mode was switched off or removed")
        name = getattr(fn, "__name__", "")
        if tensor:
            self._tensor_method(owner, name, from_torch)
        elif isinstance(owner, torch.Generator) and name in GENERATOR_WRITES:
            # (the patched ``set_rng_state``/``manual_seed`` are quiet: they say the state)
            tracer.rng.set(owner, tracer.unknown_row(
                f"the generator's state set from a value the tracer cannot follow "
                f"({name} at {call_site()})"))
        elif id(fn) in self.start_new_thread:
            self._detect("a thread was started (the tracer sees only its own thread)")
        elif id(fn) in self.mode_ids and not from_torch:
            self._detect(f"the dispatch-mode stack was popped or inspected: {name}")

    def _tensor_method(self, t, name, from_torch):
        """A C method of a tensor called from Python: the pre-bound ones are only seen here
        (the patched ones run through :meth:`_patch`'s wrappers, which are quiet)."""
        tracer = self.tracer
        if name in READ_METHODS:
            tracer.read_outside(t, f"Tensor.{name}")
        elif name == "numpy":
            tracer.expose(t, "Tensor.numpy (a writable array)")
        elif name in EXPOSING_METHODS:
            tracer.expose(t, f"Tensor.{name}")
        elif name in RAW_POINTERS and not from_torch:
            self._detect(f"a raw pointer into tensor memory ({name})")

    def _detect(self, what: str) -> None:
        self.quiet += 1
        try:
            self.tracer.detect(f"{what} at {call_site()}")
        finally:
            self.quiet -= 1

    # -- patches -------------------------------------------------------------------------------
    def _set(self, owner, name, value) -> None:
        self.saved.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, value)

    def _quietly(self, fn, *args, **kwargs):
        self.quiet += 1
        try:
            return fn(*args, **kwargs)
        finally:
            self.quiet -= 1

    def _patch(self) -> None:
        tracer, watch = self.tracer, self

        def set_data(self, value):
            _DATA.__set__(self, value)
            tracer.set_data(self, value)

        self._set(torch.Tensor, "data", property(_DATA.__get__, set_data))

        def make_subclass(*args, **kwargs):  # nn.Parameter(x): a new object over x's tensor
            out = _MAKE_SUBCLASS(*args, **kwargs)
            data = args[1] if len(args) > 1 else kwargs.get("data")
            if isinstance(data, torch.Tensor):
                with tracer.untraced():
                    tracer.see(data)
                    tracer._register(out)
                    tracer._set(out, tracer.deps(data))
            return out

        self._set(torch.Tensor, "_make_subclass", staticmethod(make_subclass))
        for name in READ_METHODS + EXPOSING_METHODS + RAW_POINTERS + ("numpy",):
            if not hasattr(torch.Tensor, name):
                continue
            self._set(torch.Tensor, name, self._tensor_wrapper(name, getattr(torch.Tensor, name)))
        for owner in (torch.UntypedStorage, torch.TypedStorage):
            if "data_ptr" in vars(owner) or hasattr(owner, "data_ptr"):
                original = owner.data_ptr

                def storage_pointer(self, *a, __original=original, **k):
                    if not caller_is_torch():
                        watch._detect("a raw pointer into a storage (data_ptr)")
                    return watch._quietly(__original, self, *a, **k)

                self._set(owner, "data_ptr", storage_pointer)
        for module in (torch.utils.dlpack, torch):  # to_dlpack(x): a capsule of x's memory
            original = getattr(module, "to_dlpack", None)
            if original is not None:
                def to_dlpack(t, *args, __original=original, **kwargs):
                    tracer.expose(t, "to_dlpack")
                    return watch._quietly(__original, t, *args, **kwargs)

                self._set(module, "to_dlpack", to_dlpack)
        self._patch_rng()
        self._patch_value_reading_calls()

    def _tensor_wrapper(self, name, method):
        tracer, watch = self.tracer, self

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(_OWN_DIR):
                return method(self, *args, **kwargs)  # the tracer's own rules
            if name == "numpy":
                tracer.read_outside(self, "Tensor.numpy")
                array = watch._quietly(method, self, *args, **kwargs)
                array.flags.writeable = False  # Python must not write tensor memory unseen
                return array
            for t in [self, *args]:
                if not isinstance(t, torch.Tensor):
                    continue
                if name in EXPOSING_METHODS:
                    tracer.expose(t, f"Tensor.{name}")
                elif name in READ_METHODS:
                    tracer.read_outside(t, f"Tensor.{name}")
            if name in RAW_POINTERS and not caller_is_torch():
                watch._detect(f"a raw pointer into tensor memory ({name})")
            return watch._quietly(method, self, *args, **kwargs)

        return wrapper

    def _patch_rng(self) -> None:
        tracer, watch = self.tracer, self
        for module in (torch, torch.random):
            get = getattr(module, "get_rng_state", None)
            put = getattr(module, "set_rng_state", None)
            if get is not None:
                def get_rng_state(*args, __get=get, **kwargs):
                    state = watch._quietly(__get, *args, **kwargs)
                    with tracer.untraced():
                        tracer._register(state)
                        row = tracer.rng.row(torch.default_generator)
                        tracer._set(state, None if row is None else tracer._row_on(state, row))
                    return state

                self._set(module, "get_rng_state", get_rng_state)
            if put is not None:
                def set_rng_state(new_state, *args, __put=put, **kwargs):
                    with tracer.untraced():
                        tracer.see(new_state)
                        d = tracer.deps(new_state)
                    watch._quietly(__put, new_state, *args, **kwargs)
                    with tracer.untraced():
                        tracer.rng.set(torch.default_generator, None if d is None else
                                       tracer._union_row([new_state]))

                self._set(module, "set_rng_state", set_rng_state)
            seed = getattr(module, "manual_seed", None)
            if seed is not None:
                def manual_seed(value, *args, __seed=seed, **kwargs):
                    out = watch._quietly(__seed, value, *args, **kwargs)
                    tracer.rng.set(torch.default_generator, None)  # a Python number
                    return out

                self._set(module, "manual_seed", manual_seed)

    def _patch_value_reading_calls(self) -> None:
        """Calls whose C++ reads tensor values with no op the mode sees."""
        tracer, _watch = self.tracer, self
        one_hot = torch.nn.functional.one_hot

        def checked_one_hot(index, num_classes=-1):
            # its C++ reads the indices' min and max (two ``item`` the mode sees) to check
            # their range, and, without ``num_classes``, to size the output
            if num_classes is None or num_classes < 0:
                return one_hot(index, num_classes)
            tracer.checking += 1
            try:
                return one_hot(index, num_classes)
            except Exception:  # out of range: a branch on the values if the model catches it
                tracer.read_outside(index, "one_hot's range check (raised)")
                raise
            finally:
                tracer.checking -= 1

        self._set(torch.nn.functional, "one_hot", checked_one_hot)
        for owner in (torch, torch.Tensor):
            split = owner.tensor_split

            def tensor_split(x, indices_or_sections, *args, __split=split, **kwargs):
                if isinstance(indices_or_sections, torch.Tensor):  # read in C++, no op
                    tracer.read_outside(indices_or_sections, "tensor_split's split points")
                return __split(x, indices_or_sections, *args, **kwargs)

            self._set(owner, "tensor_split",
                      tensor_split if owner is torch else _method(tensor_split))
        for cls in (torch.jit.ScriptFunction, torch._C.ScriptMethod):
            call = cls.__call__

            def script_call(fn, *args, __call=call, **kwargs):
                if _reads_values(fn):  # prim::tolist: C++ reads values, no op runs
                    for t in tracer.tensors_in(args, kwargs):
                        tracer.read_outside(t, f"TorchScript's tolist in {fn.name}")
                return __call(fn, *args, **kwargs)

            self._set(cls, "__call__", script_call)


def _method(fn):
    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    return method


def _reads_values(fn) -> bool:
    try:
        graph = fn.inlined_graph if hasattr(fn, "inlined_graph") else fn.graph
        return any(n.kind() in ("prim::tolist", "aten::tolist") for n in graph.nodes())
    except Exception:
        return True  # no graph to read: assume it may


def _called_from_torch(frame) -> bool:
    """Whether the function ``frame`` runs was called by torch (or by this package), looking
    through ``contextlib``'s and ``functools``' frames (``with _disable_current_modes():``)."""
    caller = frame.f_back
    while caller is not None and caller.f_code.co_filename.endswith(_PLUMBING):
        caller = caller.f_back
    return caller is not None and caller.f_code.co_filename.startswith((_TORCH_DIR, _OWN_DIR))


_PLUMBING = ("contextlib.py", "functools.py")


def _install_audit_hook() -> None:
    """Once per process (audit hooks cannot be removed): idle unless a trace runs."""
    global _AUDIT_INSTALLED
    if _AUDIT_INSTALLED:
        return
    _AUDIT_INSTALLED = True
    sys.addaudithook(_audit)


def _audit(event: str, args) -> None:
    watch = _ACTIVE
    if watch is None or watch.quiet or threading.get_ident() != watch.thread:
        return
    if event.startswith("ctypes."):
        watch._detect(f"raw memory through ctypes ({event})")
    elif event in ("sys.setprofile", "sys.settrace"):
        watch._detect(f"the profiler the tracer watches with was replaced ({event})")
    elif event in ("gc.get_objects", "gc.get_referrers", "gc.get_referents",
                   "sys._current_frames"):
        watch._detect(f"the model inspected the interpreter ({event})")


__all__ = ["Watch", "np"]
