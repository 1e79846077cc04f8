"""Red-team table of issue 16: models built to make the certificate prove a false thing, one
class of attack at a time, each against a brute-force ground truth (:mod:`ground_truth`: float64,
every input position replaced by very different values). For each model the adversary is shown
to work (its ground truth sees the future, or, for the receptive-field class, a dependency the
old bound missed) and the certificate is shown not to fall for it: the bound contains every
dependency found, and the model is not proved. Where the attack leaves the tracer's sight, the
certificate also names where (``unknown``, ``reads``).

1. ordinary indexing (aten's ``None`` in index lists);  2. argument conventions (strides,
in-place geometry, ``alpha``, dtypes, float16 ``log_softmax``);  3. custom ops;  4. computation
the tracer never sees (pre-bound methods, raw memory, threads, the mode switched off, sparse
parts, TorchScript);  5. values read inside C++ kernels (shapes, exceptions, the RNG stream);
6. signed zeros;  7. receptive-field bounds that miss a true dependency.
"""

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from ground_truth import C, Floats, T, Tokens, check
from torch.utils.dlpack import to_dlpack  # bound before any trace: the patch cannot see it

pytestmark = pytest.mark.usefixtures("summary_form")  # every attack on both forms (conftest)
aten = torch.ops.aten
TOLIST = torch.Tensor.tolist  # bound before any trace
NUMPY = torch._C.TensorBase.numpy
DATA_PTR = torch._C.TensorBase.data_ptr
SET_STATE = torch.Generator.set_state
POOL = ThreadPoolExecutor(1)  # made, and its thread started, before any trace
POOL.submit(lambda: None).result()


def future(x):
    return x.flip(1)  # output t reads input T - 1 - t: the future of the first half


# -- 1. ordinary indexing ----------------------------------------------------------------------

def _index_put_none(s, x):
    y = future(x).clone()
    y[:, torch.tensor([0])] = 0.0  # index_put(y, [None, idx], 0): None is the whole axis
    return y


def _index_put_ellipsis(s, x):
    y = future(x).clone()
    y[..., torch.tensor([1])] = 0.0  # [None, None, idx]
    return y


def _index_put_middle(s, x):
    y = future(x).clone().reshape(1, T, C, 1)
    y[:, :, torch.tensor([0]), :] = x[:, :, :1, None] * 0 + 1.0
    return y.reshape(1, T, C)


def _index_read_none(s, x):
    return future(x)[..., torch.tensor([1, 0])]  # aten.index(y, [None, None, idx])


INDEXING = {
    "index_put_with_none": _index_put_none,
    "index_put_with_ellipsis": _index_put_ellipsis,
    "index_put_with_none_in_the_middle": _index_put_middle,
    "index_with_none": _index_read_none,
}


# -- 2. argument conventions -------------------------------------------------------------------

def _reshape_alias_transposed(s, x):
    a = x[..., :1].contiguous().reshape(2, 3)
    b = aten._reshape_alias(a, (3, 2), (1, 3))  # a.T, not a reshape: element k is a[k%2, k//2]
    return b.reshape(1, T, 1)


def _as_strided_in_place(s, x):
    y = x[..., :1].contiguous().reshape(T)
    w = y.view(T)
    w.as_strided_((T - 1,), (1,), 1)  # w now views y[1:]: a new geometry, nothing written
    return torch.cat([w, y[:1]]).reshape(1, T, 1)


def _set_in_place(s, x):
    b = torch.zeros(T, dtype=x.dtype)
    b.set_(future(x)[..., 0].reshape(T).contiguous())
    return b.reshape(1, T, 1) * 1


def _add_alpha(s, x):
    # a + alpha * finfo.min with a tiny alpha is no mask: here it adds -1, and a moves the sum
    low = torch.full_like(x, torch.finfo(x.dtype).min)
    return torch.add(future(x), low, alpha=1 / abs(torch.finfo(x.dtype).min))


def _constant_dtype_decides(s, x):
    # float64 + float32's most negative value: in float64 that is no absorbing mask
    low = torch.tensor(torch.finfo(torch.float32).min, dtype=torch.float32)
    y = future(x).double() * 1e24 + low
    return ((y - low) / 1e24).to(x.dtype)


def _log_softmax_float16(s, x):
    # float16 log_softmax: a slot at finfo.min is not constant, it is logit - logsumexp
    row = torch.cat([torch.full_like(x[:, :1, :1], torch.finfo(torch.float16).min),
                     future(x)[..., :1].transpose(1, 2)], 2).half()  # (1, 1, T + 1)
    out = torch.log_softmax(row, -1)[..., :1].float()  # the masked slot only
    return out.expand(1, T, 1).to(x.dtype).clamp(-1e9, 1e9)


CONVENTIONS = {
    "reshape_alias_with_column_major_strides": _reshape_alias_transposed,
    "as_strided_in_place": _as_strided_in_place,
    "set_in_place": _set_in_place,
    "add_with_alpha": _add_alpha,
    "a_float32_mask_in_a_float64_sum": _constant_dtype_decides,
    "float16_log_softmax_of_a_masked_slot": _log_softmax_float16,
}


# -- 3. custom ops -----------------------------------------------------------------------------

_LIB = torch.library.Library("redteam16", "DEF")
_LIB.define("clone(Tensor x) -> Tensor")  # named like aten's ops, doing something else
_LIB.define("zeros_like(Tensor x) -> Tensor")
_LIB.define("flip_(Tensor(a!) x) -> Tensor(a!)")
_LIB.define("add(Tensor x, Tensor y) -> Tensor", tags=(torch.Tag.pointwise,))  # a lying tag
_LIB.impl("clone", lambda x: x.flip(1), "CPU")
_LIB.impl("zeros_like", lambda x: x.flip(1) * 0 + x.flip(1), "CPU")
_LIB.impl("flip_", lambda x: x.copy_(x.flip(1)), "CPU")
_LIB.impl("add", lambda x, y: x.flip(1) + y, "CPU")
ops = torch.ops.redteam16

CUSTOM = {
    "custom_clone": lambda s, x: ops.clone(x),
    "custom_zeros_like": lambda s, x: ops.zeros_like(x),
    "custom_in_place": lambda s, x: ops.flip_(x.clone()),
    "custom_op_with_a_pointwise_tag": lambda s, x: ops.add(x, x),
}


# -- 4. computation the tracer never sees -------------------------------------------------------

def _prebound_dlpack(s, x):
    return torch.from_dlpack(to_dlpack(future(x).contiguous())) * 1


def _prebound_tolist(s, x):
    return torch.tensor(TOLIST(future(x)), dtype=x.dtype)


def _tensorbase_tolist(s, x):
    return torch.tensor(torch._C.TensorBase.tolist(future(x)), dtype=x.dtype)


def _tensorbase_numpy(s, x):
    return torch.from_numpy(NUMPY(future(x).contiguous()).copy())


def _data_ptr_memmove(s, x):
    out = torch.zeros_like(x)
    src = future(x).contiguous()
    ctypes.memmove(out.data_ptr(), src.data_ptr(), src.numel() * src.element_size())
    return out * 1


def _prebound_data_ptr(s, x):
    out = torch.zeros_like(x)
    src = future(x).contiguous()
    ctypes.memmove(DATA_PTR(out), DATA_PTR(src), src.numel() * src.element_size())
    return out * 1


def _frombuffer(s, x):
    raw = bytearray(future(x).contiguous().numpy().tobytes())
    return torch.frombuffer(raw, dtype=x.dtype).reshape(1, T, C) * 1


def _other_thread(s, x):
    out = torch.zeros_like(x)
    worker = threading.Thread(target=lambda: out.copy_(future(x)))
    worker.start()
    worker.join()
    return out * 1


def _thread_pool(s, x):
    return POOL.submit(lambda: future(x) * 1).result() * 1


def _disable_dispatch(s, x):
    with torch._C._DisableTorchDispatch():
        y = future(x) * 1  # made where no mode sees it
    return y + 0


def _pop_mode(s, x):
    from torch.utils._python_dispatch import _pop_mode_temporarily

    if not torch._C._len_torch_dispatch_stack():  # (the ground truth runs with no mode)
        return future(x) * 1
    with _pop_mode_temporarily():
        y = future(x) * 1
    return y + 0


def _write_while_disabled(s, x):
    out = torch.zeros_like(x)
    with torch._C._DisableTorchDispatch():
        out.copy_(future(x))  # a write no op shows: the version counter moves
    return out * 1


def _sparse_values(s, x):
    sparse = torch.ones(T).to_sparse()
    sparse._values().copy_(future(x)[0, :, 0])  # a write into the sparse tensor's parts
    return sparse.to_dense().reshape(1, T, 1) * 1


@torch.jit.script
def _scripted_round_trip(x):
    values: list[list[list[float]]] = x.tolist()  # prim::tolist: C++ reads the values
    return torch.tensor(values)


def _torchscript_tolist(s, x):
    return _scripted_round_trip(future(x).float()).to(x.dtype)


def _storage_write(s, x):
    out = torch.zeros_like(x)
    out.untyped_storage().copy_(future(x).contiguous().untyped_storage())
    return out * 1


UNSEEN = {
    "to_dlpack_bound_before_the_trace": _prebound_dlpack,
    "tolist_bound_before_the_trace": _prebound_tolist,
    "tensorbase_tolist": _tensorbase_tolist,
    "tensorbase_numpy": _tensorbase_numpy,
    "data_ptr_and_ctypes": _data_ptr_memmove,
    "tensorbase_data_ptr_and_ctypes": _prebound_data_ptr,
    "frombuffer": _frombuffer,
    "another_thread": _other_thread,
    "a_thread_pool_started_before_the_trace": _thread_pool,
    "dispatch_disabled": _disable_dispatch,
    "dispatch_mode_popped": _pop_mode,
    "a_write_while_dispatch_is_disabled": _write_while_disabled,
    "sparse_values_written": _sparse_values,
    "torchscript_tolist": _torchscript_tolist,
    "storage_copy": _storage_write,
}


# -- 5. values read inside C++ kernels ---------------------------------------------------------

def _repeat_interleave(s, x):
    repeats = (future(x)[0, :, 0] > 0).long() + 1  # how many copies: from the future values
    return x.repeat_interleave(repeats, dim=1)[:, :T]


def _tensor_split(s, x):
    at = (x[0, -1:, 0] > 0).long() + 2  # split points from the last (future) value
    first = torch.tensor_split(x, at, dim=1)[0]
    return F.pad(first, (0, 0, 0, T - first.shape[1]))


def _tensor_split_method(s, x):
    at = (x[0, -1:, 0] > 0).long() + 2
    first = x.tensor_split(at, dim=1)[0]
    return F.pad(first, (0, 0, 0, T - first.shape[1]))


def _caught_cholesky(s, x):
    m = torch.eye(2, dtype=x.dtype) * x[0, -1, 0]  # positive definite iff the last value > 0
    try:
        torch.linalg.cholesky(m)
        return x * 1
    except RuntimeError:
        return x * 2


def _caught_assert(s, x):
    try:
        torch._assert_async(x[0, -1, 0] > 0)
        return x * 1
    except RuntimeError:
        return x * 2


def _rng_consumed_by_values(s, x):
    rate = (x[0, -1, 0] > 0).to(x.dtype) * 50 + 1  # how many draws poisson takes: the values
    torch.poisson(rate.expand(64))
    return x + torch.randn_like(x)


def _state_from(x):
    state = torch.get_rng_state().clone()
    bit = (x[0, -1, 0] > 0).to(torch.uint8)  # the last (future) value decides the stream
    state[24:5000] = state[24:5000] ^ bit  # the Mersenne twister's words
    return state


def _rng_state_from_data(s, x):
    torch.set_rng_state(_state_from(x))
    return x + torch.randn_like(x)


def _rng_state_prebound(s, x):
    SET_STATE(torch.default_generator, _state_from(x))
    return x + torch.randn_like(x)


def _shape_as_value(s, x):
    count = torch.nonzero(future(x)[..., 0] > 0).shape[0]  # a shape read into Python
    return x * 0 + count


KERNELS = {
    "repeat_interleave_by_values": (_repeat_interleave, False),
    "tensor_split_at_values": (_tensor_split, False),
    "tensor_split_method_at_values": (_tensor_split_method, False),
    "cholesky_caught": (_caught_cholesky, False),
    "assert_async_caught": (_caught_assert, False),
    "rng_consumed_by_values": (_rng_consumed_by_values, True),
    "rng_state_set_from_data": (_rng_state_from_data, True),
    "rng_state_set_by_a_bound_method": (_rng_state_prebound, True),
    "nonzero_count_as_a_value": (_shape_as_value, False),
}


# -- 6. signed zeros ----------------------------------------------------------------------------

def _signed_zero(read):
    def fn(s, x):
        zero = future(x) * torch.zeros(1, 1, C, dtype=x.dtype)  # -0.0 where the future is < 0
        return read(zero)
    return fn


def _zero_matmul(s, x):
    zero = future(x)[..., :1] @ torch.zeros(1, C, dtype=x.dtype)  # +-0: the signs survive
    return torch.exp(1 / zero).clamp(max=1e6)


IEEE = {
    "reciprocal_of_a_structural_zero": _signed_zero(lambda z: torch.exp(1 / z).clamp(max=1e6)),
    "copysign_of_a_structural_zero": _signed_zero(lambda z: torch.copysign(torch.ones_like(z),
                                                                           z)),
    "signbit_of_a_structural_zero": _signed_zero(lambda z: torch.signbit(z).to(z.dtype)),
    "atan2_of_a_structural_zero": _signed_zero(lambda z: torch.atan2(z, -torch.ones_like(z))),
    "rsqrt_of_a_structural_zero": _signed_zero(lambda z: torch.rsqrt(z).clamp(-1e6, 1e6)),
    "reciprocal_of_a_zero_matmul": _zero_matmul,
}


# -- 7. receptive-field bounds that miss a true dependency ------------------------------------

_LIB.define("flip(Tensor x, int[] dims) -> Tensor")  # aten's name; does a causal shift
_LIB.impl("flip", lambda x, dims: F.pad(x, (0, 0, 1, -1)), "CPU")


def _raw_past(s, x):
    out = torch.zeros_like(x)
    src = x.contiguous()
    ctypes.memmove(out[:, 1:].data_ptr(), src.data_ptr(),  # out[t] = x[t - 1]
                   (T - 1) * C * src.element_size())
    return out * 1


FIELDS = {
    "a_past_dependency_through_raw_memory": _raw_past,
    "a_custom_op_named_like_a_mirror": lambda s, x: ops.flip(x, [1]),
}


# -- the table ----------------------------------------------------------------------------------

ATTACKS = {**INDEXING, **CONVENTIONS, **CUSTOM, **UNSEEN,
           **{k: fn for k, (fn, _) in KERNELS.items()}, **IEEE}
RESEED = {k for k, (_, reseed) in KERNELS.items() if reseed}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_is_never_proved_and_its_bound_holds_every_dependency(name):
    cert, truth = check(Floats(ATTACKS[name]), reseed=name in RESEED)
    assert bool(truth.triu(1).any()), "the adversary does not see the future: no attack"
    assert not cert.proved, cert.reason


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_a_causal_model_outside_the_tracers_sight_keeps_every_dependency_in_its_bound(name):
    cert, truth = check(Floats(FIELDS[name]))
    assert bool(truth.any()) and not bool(truth.triu(1).any())  # causal: only the bound is at stake
    assert not cert.proved  # the tracer cannot follow it: never proved, and the bound says all


NAMED = {  # attack: what the certificate names (in ``unknown`` or ``reads``)
    "tolist_bound_before_the_trace": "Tensor.tolist",
    "tensorbase_numpy": "Tensor.numpy",
    "data_ptr_and_ctypes": "raw pointer",
    "tensorbase_data_ptr_and_ctypes": "raw pointer",
    "another_thread": "thread",
    "a_thread_pool_started_before_the_trace": "thread",
    "dispatch_disabled": "switched off",
    "dispatch_mode_popped": "popped",
    "a_write_while_dispatch_is_disabled": "switched off",
    "torchscript_tolist": "TorchScript",
    "storage_copy": "untyped_storage",
    "frombuffer": "Tensor.numpy",
    "tensor_split_at_values": "tensor_split",
    "cholesky_caught": "linalg_check_errors",
    "rng_state_set_by_a_bound_method": "generator's state",
    "repeat_interleave_by_values": "shape computed from values",
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_the_certificate_says_where_the_attack_left_its_sight(name):
    cert, _ = check(Floats(ATTACKS[name]), reseed=name in RESEED)
    said = " ".join(cert.unknown + cert.reads)
    assert NAMED[name] in said, said
    assert "test_redteam_origin.py:" in said  # the model's own line


def test_a_numpy_view_cannot_write_tensor_memory_behind_the_tracer():
    def fn(s, x):
        y = torch.zeros_like(x)
        y.numpy()[:] = future(x).numpy()  # read-only during a trace: this raises
        return y * 1

    cert, _ = check(Floats(fn))
    assert cert.status == "unavailable" and "read-only" in cert.reason


def test_an_uninitialized_tensor_that_reaches_an_output_is_of_unknown_origin():
    cert, _ = check(Floats(lambda s, x: x * 0 + torch.empty_like(x)),
                    truth=torch.zeros(T, T, dtype=torch.bool))
    assert not cert.proved and cert.unknown[0].startswith("uninitialized memory")


def test_a_tensor_reachable_from_the_model_before_the_trace_is_a_constant():
    mask = torch.ones(1, T, C)  # a plain attribute, not a buffer; a global of this file
    model = Floats(lambda s, x: F.pad(x, (0, 0, 1, -1)) * s.mask * GLOBAL_MASK)
    model.mask = mask
    cert, _ = check(model)
    assert cert.proved and cert.unknown == []


GLOBAL_MASK = torch.ones(1, T, C)


def test_a_tensor_no_traced_op_made_names_the_line_that_used_it():
    model = Floats(lambda s, x: F.pad(x, (0, 0, 1, -1)) * _HIDDEN.mask)
    cert, _ = check(model)
    assert not cert.proved
    assert cert.unknown[0].startswith("a tensor no traced op made (first read by aten.mul")
    assert "test_redteam_origin.py:" in cert.unknown[0]


class _Hidden:  # holds a tensor the tracer cannot find before the trace (not a module's)
    mask = None


_HIDDEN = _Hidden()
_HIDDEN.mask = torch.ones(1, T, C)


def test_one_hot_reads_its_indices_only_to_check_their_range():
    # F.one_hot's C++ reads the indices' min and max: a range check, not a dependency
    model = Tokens(lambda s, t: F.one_hot(F.pad(t, (1, -1)), 7).float())
    cert, truth = check(model, tokens=True)
    assert cert.proved and not cert.path_dependent
    assert any("a check on values" in r and "ends in an exception" in r for r in cert.reads)


def test_the_generator_state_follows_seeded_ops_without_data_dependent_draws():
    # dropout-like sampling draws a number of values fixed by the shapes: no dependency
    model = Floats(lambda s, x: F.pad(x, (0, 0, 1, -1)) + torch.rand_like(x)
                   + torch.bernoulli(torch.sigmoid(x)) * 0)
    cert, _ = check(model, reseed=True)
    assert cert.proved, cert.reason
