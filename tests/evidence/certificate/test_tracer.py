"""The tracer's bookkeeping, bound by bound: values read into Python, writes through aliases and
views of other dtypes, in-place ops (with their functional rule, or changing the shape), rules
that fail, tensors made without an op (``.data``, ``nn.Parameter``, dlpack), and where the future
entered. Each model's bound is compared with its exact dependencies: a bound that drops one is
unsound, one that adds one loses a proof."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from properties import make_subject
from properties.evidence.certificate import certify, rules

pytestmark = pytest.mark.usefixtures("summary_form")  # both forms (conftest)
T = 6
aten = torch.ops.aten


class Model(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(1, 1)

    def forward(self, x):  # (B, T, 1) -> (B, T, 1)
        return self.fn(self, x)


def cert(fn, grid=(T,), predicts="current", layout="BTC"):
    return certify(make_subject(Model(fn), grid=grid, layout=layout, predicts=predicts))


def matrix(pairs, n=T):
    m = torch.zeros(n, n, dtype=torch.bool)
    for t, s in pairs:
        m[t, s] = True
    return m


def columns(*inputs, n=T):
    return matrix([(t, s) for t in range(n) for s in inputs], n)


def past(x):  # output t reads input t - 1
    return F.pad(x, (0, 0, 1, -1))


SHIFT = matrix([(t, t - 1) for t in range(1, T)])
DIAGONAL = torch.eye(T, dtype=torch.bool)
AHEAD = matrix([(t, t + 1) for t in range(T - 1)])


# -- values read into Python -------------------------------------------------------------------

READ_ONE = {  # name: (forward, the input positions whose values were read)
    "float_of_a_sum": (lambda s, x: past(x) * float(x[:, 3].sum()), [3]),
    "two_items": (lambda s, x: past(x) * (x[0, 1, 0].item() + x[0, 4, 0].item()), [1, 4]),
    "bool_branch": (lambda s, x: past(x) * (2 if bool(x[0, 2, 0] > 0) else 3), [2]),
    "torch_equal": (lambda s, x: past(x) * float(torch.equal(x[:, 2], x[:, 3])), [2, 3]),
    "numpy": (lambda s, x: past(x) + torch.from_numpy(x[:, 2].numpy().copy()).sum(), [2]),
    "tolist": (lambda s, x: past(x) + sum(x[0, 4].tolist()), [4]),
    "np_asarray": (lambda s, x: past(x) + float(np.asarray(x[:, 1:3]).sum()), [1, 2]),
    "to_dlpack": (lambda s, x: past(x) + torch.from_dlpack(
        torch.utils.dlpack.to_dlpack(x[:, 5].contiguous())).clone().sum(), [5]),
    "torch_to_dlpack": (lambda s, x: past(x) + torch.from_dlpack(
        torch.to_dlpack(x[:, 0].contiguous())).clone().sum(), [0]),
    "map_argument": (lambda s, x: past(x) + torch.zeros(1, 1, 1).map_(
        x[:, 3:4], lambda a, b: b), [3]),
}


@pytest.mark.parametrize("name", sorted(READ_ONE))
def test_values_read_into_python_are_out_of_sight_and_named_with_the_inputs_read(name):
    # what Python does with the values (a branch, data) the tracer cannot follow: every output
    # may depend on everything, and the certificate says which inputs were read, and where
    fn, read = READ_ONE[name]
    c = cert(fn)
    assert c.path_dependent and not c.proved and c.dense_bound().all()
    named = set()
    for u in c.unknown:
        assert u.startswith("input values (") and " read into Python by " in u, u
        assert "evidence/certificate/test_tracer.py:" in u, u
        named |= {int(i) for i in u[len("input values ("):u.index(")")].split(", ")}
    assert named == set(read)


def test_reading_constants_is_no_dependency():
    def fn(s, x):
        scale = torch.ones(1).item() + float(s.lin.weight.sum()) * 0
        values = torch.arange(3.0)
        return past(x) * scale + sum(values.tolist()) + float(values.numpy().sum())

    c = cert(fn)
    assert not c.path_dependent
    assert torch.equal(c.dense_bound(), SHIFT) and c.proved


@pytest.mark.parametrize("op", [
    lambda x: x[x > 1e9].sum(),  # nonzero: a shape from the values
    lambda x: torch.unique(x).sum(),
])
def test_shapes_computed_from_input_values_are_path_dependent(op):
    c = cert(lambda s, x: past(x) + 0 * op(x))
    assert c.path_dependent


# -- tensors made without an op --------------------------------------------------------------

def _dot_data(s, x):
    w = torch.zeros(1, T, 1)
    w.data = past(x).data
    return w * 1


def _parameter(s, x):
    return nn.Parameter(past(x), requires_grad=False) * 1


def _make_subclass_keyword(s, x):
    return torch.Tensor._make_subclass(torch.Tensor, data=past(x)) * 1


@pytest.mark.parametrize("fn", [_dot_data, _parameter, _make_subclass_keyword,
                                lambda s, x: past(x).as_subclass(torch.Tensor) * 1,
                                lambda s, x: past(x).detach() * 1])
def test_a_new_object_over_a_tracked_tensor_keeps_its_summary_exactly(fn):
    c = cert(fn)
    assert torch.equal(c.dense_bound(), SHIFT) and c.proved
    assert (c.lost_precision, c.path_dependent) == ([], False)


def test_a_storage_handed_to_python_makes_its_tensors_of_unknown_origin():
    # a storage object can be written where no op shows it: what is read from it later may
    # hold anything, and the certificate says where the memory left torch
    def fn(s, x):
        y = past(x).contiguous()
        z = torch.empty(0).set_(y.untyped_storage(), 0, y.shape, y.stride())
        return z * 1

    c = cert(fn)
    assert c.dense_bound().all() and not c.proved
    assert any(u.startswith("memory handed out by Tensor.untyped_storage at "
                            "evidence/certificate/test_tracer.py:") for u in c.unknown)


def test_a_tensor_moved_onto_a_tracked_storage_may_hold_any_of_its_values():
    def fn(s, x):
        y = past(x).contiguous()
        z = torch.empty(0).set_(y[:, 1:])  # another geometry over y's storage
        return z.reshape(1, T - 1, 1).sum(1, keepdim=True).expand(1, T, 1) * 1

    c = cert(fn, predicts="next")
    # the storage's inputs, not all of them
    assert torch.equal(c.dense_bound(), columns(*range(T - 1)))
    assert c.lost_precision == []  # z views exactly y[:, 1:]'s elements: its summary


def test_a_tensor_moved_onto_a_tracked_tensor_follows_its_writes():
    def fn(s, x):
        c = past(x).clone()
        b = torch.empty(0).set_(c)
        c.copy_(x * 2)  # b shares c's storage: it now holds the present
        return b * 1

    c = cert(fn)
    assert torch.equal(c.dense_bound(), DIAGONAL)


def test_a_tensor_argument_given_by_keyword_is_a_dependency_of_the_fallback():
    def fn(s, x):
        sorter = torch.arange(T) + (x[0, :1, 0] * 0).long()  # every element reads input 0
        grid = torch.arange(T, dtype=x.dtype)
        found = torch.searchsorted(grid, grid, sorter=sorter)  # sorter is keyword-only
        return past(x) + found.reshape(1, T, 1)

    c = cert(fn)
    assert torch.equal(c.dense_bound(), SHIFT | columns(0))
    assert c.lost_precision == ["aten.searchsorted.Tensor in Model (Model)"]

    def broken(ctx, args, kwargs, outs):
        raise NotImplementedError("no")

    rules.RULES[aten.searchsorted.Tensor] = broken  # the fallback after a rule failed, too
    try:
        c = cert(fn)
    finally:
        del rules.RULES[aten.searchsorted.Tensor]
    assert torch.equal(c.dense_bound(), SHIFT | columns(0))


def test_a_parameter_over_a_constant_is_a_constant():
    c = cert(lambda s, x: past(x) + nn.Parameter(torch.ones(1, T, 1), requires_grad=False))
    assert torch.equal(c.dense_bound(), SHIFT)


# -- writes in place ---------------------------------------------------------------------------

def _shift_through_view(s, x):
    buf = torch.zeros_like(x)
    alias = buf.view(1, T)  # taken before the write
    buf[:, 1:] = x[:, :-1]
    return alias[..., None] + 0


def _constant_over_input(s, x):
    y = x.clone()
    alias = y.view(1, T)
    y[:, 2] = 0.0  # position 2 now holds a constant, in y and in its alias
    return alias[..., None] * 1


def _constants_then_input(s, x):
    buf = torch.zeros_like(x)
    alias = buf.view(1, T)
    buf[:, 0] = 1.0  # a constant over constants: nothing changes
    buf[:, 1:] = x[:, :-1]
    return alias[..., None] * 1


def _input_over_alias(s, x):
    y = x.clone()
    alias = y[:, 3:]
    y[:, 3:] = past(x)[:, 3:]  # the alias now holds the past as well
    return torch.cat([torch.zeros(1, 3, 1), alias], 1)


def _out_argument(s, x):
    buf = torch.zeros(1, T, 1)
    alias = buf.view(1, T)
    torch.mul(past(x), 2, out=buf)
    return alias[..., None] * 1


def _other_dtype_view(s, x):
    buf = torch.zeros(1, T, 1)
    halves = buf.view(torch.int16)  # (1, T, 2): another element size
    buf[:, 1:] = x[:, :-1]
    return halves.float()[..., :1] * 0 + buf


def _other_dtype_written(s, x):
    buf = torch.zeros(1, T, 1)
    halves = buf.view(torch.int16)
    halves.zero_()  # a constant written through the other dtype
    buf[:, 1:] = x[:, :-1]
    return buf * 1


WRITES = {  # name: (forward, exact bound)
    "shift_through_view": (_shift_through_view, SHIFT),
    "constant_over_input": (_constant_over_input, DIAGONAL & ~matrix([(2, 2)])),
    "constants_then_input": (_constants_then_input, SHIFT),
    "input_over_alias": (_input_over_alias, matrix([(t, t - 1) for t in range(3, T)])),
    "out_argument": (_out_argument, SHIFT),
    "in_place_functional_rule": (lambda s, x: past(x).clone().cumsum_(1),
                                 torch.ones(T, T, dtype=torch.bool).tril(-1)),
    "in_place_pointwise": (lambda s, x: past(x).clone().sin_(), SHIFT),
    "unsqueeze_": (lambda s, x: past(x)[:, :, 0].clone().unsqueeze_(-1) * 1, SHIFT),
    "squeeze_": (lambda s, x: past(x).clone().unsqueeze(-1).squeeze_(-1) * 1, SHIFT),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_in_place_keep_exact_bounds(name):
    fn, bound = WRITES[name]
    c = cert(fn)
    assert torch.equal(c.dense_bound(), bound), c.dense_bound().int()
    assert c.lost_precision == [] and not c.path_dependent


@pytest.mark.parametrize("fn", [_other_dtype_view, _other_dtype_written])
def test_a_write_through_a_view_of_another_dtype_reaches_every_element(fn):
    # the two dtypes' elements do not line up: every element may hold any written value
    c = cert(fn)
    assert torch.equal(c.dense_bound(), columns(*range(T - 1)))


def test_an_in_place_op_that_changes_the_geometry_views_the_same_elements():
    def fn(s, x):
        v = past(x).clone()
        v.resize_(T)  # no element moves: the same storage, another shape
        return v.reshape(1, T, 1) * 1

    c = cert(fn)
    assert torch.equal(c.dense_bound(), SHIFT) and c.lost_precision == []


def test_memory_a_resize_adds_is_uninitialized_and_of_unknown_origin():
    def fn(s, x):
        v = past(x).clone().reshape(T)
        v.resize_(2 * T)  # the new half: whatever the allocator hands out
        return v[T:].reshape(1, T, 1) * 1

    c = cert(fn)
    assert not c.proved and c.dense_bound().all()
    assert [u.split(" (")[0] for u in c.unknown] == ["uninitialized memory"]


# -- rules that cannot help --------------------------------------------------------------------

def test_an_op_without_a_rule_falls_back_to_every_input_of_its_arguments():
    c = cert(lambda s, x: torch.cat([torch.renorm(x[:, :2], 2, 0, 1.0), past(x)[:, 2:]], 1))
    first_two = matrix([(t, s) for t in range(2) for s in range(2)])
    assert torch.equal(c.dense_bound(), SHIFT | first_two)
    assert c.lost_precision == ["aten.renorm.default in Model (Model)"]


@pytest.mark.parametrize("broken, message", [
    (lambda ctx, args, kwargs, outs: [None, None], "2 summaries for 1 outputs"),
    (lambda ctx, args, kwargs, outs: [torch.ones(T + 1, 1, T, dtype=torch.bool)],
     "summary of shape (1, 7, 1, 6) for an output (1, 6, 1)"),
    (lambda ctx, args, kwargs, outs: [torch.ones(T, T, dtype=torch.bool)],
     "summary of shape (1, 1, 6, 6) for an output (1, 6, 1)"),
    (lambda ctx, args, kwargs, outs: 1 / 0, "ZeroDivisionError"),
])
def test_a_rule_that_fails_falls_back_soundly_and_says_so(monkeypatch, broken, message):
    monkeypatch.setitem(rules.RULES, aten.flip.default, broken)
    c = cert(lambda s, x: past(x).flip(1) * 1, predicts="next")
    assert torch.equal(c.dense_bound(), columns(*range(T - 1)))  # the fallback: every input it read
    (lost,) = c.lost_precision
    assert lost.startswith("aten.flip.default (rule failed: ") and message in lost
    assert lost.endswith(") in Model (Model)")


def test_a_rule_may_answer_a_broadcast_summary():
    def broadcast(ctx, args, kwargs, outs):
        return [ctx.deps(args[0]).any(1, keepdim=True)]  # (1, 1, 1, N): every position

    rules_backup = rules.RULES[aten.flip.default]
    try:
        rules.RULES[aten.flip.default] = broadcast
        c = cert(lambda s, x: past(x).flip(1) * 1)
    finally:
        rules.RULES[aten.flip.default] = rules_backup
    assert torch.equal(c.dense_bound(), columns(*range(T - 1)))
    assert c.lost_precision == []


# -- where the future entered ------------------------------------------------------------------

class Leak(nn.Module):
    def forward(self, x):
        return x.roll(-1, 1)


def test_the_blamed_op_is_the_first_to_see_the_future_in_its_module():
    def fn(s, x):
        h = s.causal(x) * 2  # named by module, popped on the way out
        return s.leak(h) + 1

    model = Model(fn)
    model.causal = nn.Sequential(nn.Linear(1, 1))
    model.leak = Leak()
    c = certify(make_subject(model, grid=(T,), layout="BTC", predicts="next"))
    assert {f.op for f in c.forbidden} == {"aten.roll.default in leak (Leak)"}

    def late(s, x):
        return (s.causal(x) * 2).roll(-1, 1)

    model = Model(late)
    model.causal = nn.Sequential(nn.Linear(1, 1))
    c = certify(make_subject(model, grid=(T,), layout="BTC", predicts="next"))
    assert {f.op for f in c.forbidden} == {"aten.roll.default in Model (Model)"}


def test_the_future_is_found_on_a_two_dimensional_grid():
    def below(s, x):  # (B, 1, H, W): each pixel reads the one below it
        return F.pad(x, (0, 0, -1, 1)) * 2

    c = certify(make_subject(Model(below), grid=(3, 4), layout="BCHW", predicts="next"))
    assert c.mode == "none"
    assert {f.op for f in c.forbidden} == {"aten.constant_pad_nd.default in Model (Model)"}
    assert c.forbidden[0].output == 0 and c.forbidden[0].input == 4

    def flat(s, x):  # the same, on a flattened (B, N) view: one axis of size N
        return F.pad(x.reshape(1, 12), (-4, 4)).reshape(1, 1, 3, 4) * 2

    c = certify(make_subject(Model(flat), grid=(3, 4), layout="BCHW", predicts="next"))
    assert {f.op for f in c.forbidden} == {"aten.constant_pad_nd.default in Model (Model)"}


def test_an_op_on_a_square_of_positions_is_not_blamed_for_the_future():
    # scores (T, T): two position axes, no single reading; the future is seen at the matmul
    # that brings it back to one position axis... or later, never at the scores
    def fn(s, x):
        scores = x[0] @ x[0].T  # (T, T)
        return (torch.softmax(scores, -1) @ x[0]).unsqueeze(0)

    c = cert(fn, predicts="next")
    assert c.mode == "none"
    ops = {f.op for f in c.forbidden if f.kind == "future"}
    assert len(ops) == 1 and "mm" in ops.pop()


# -- an op that writes tensors and returns new ones, with no rule --------------------------------

_LIB = torch.library.Library("causal_audit_test", "DEF")
# writes ``a`` (and returns it) and ``b`` (and does not), returns a new tensor; ``x`` by keyword
_LIB.define("stash(Tensor(a!) a, Tensor(b!) b, *, Tensor x) -> (Tensor(a!), Tensor)")


def _stash(a, b, *, x):
    a.copy_(x[:, :1])
    b.copy_(x[:, -1:])  # the last position: the future of every other output
    return a, x * 2


_LIB.impl("stash", _stash, "CPU")


def test_a_tensor_written_by_an_op_no_rule_describes_may_hold_any_of_its_inputs():
    def fn(s, x):
        a, b = torch.zeros_like(x[:, :1]), torch.zeros_like(x[:, :1])
        torch.ops.causal_audit_test.stash(a, b, x=x)
        return past(x) + b  # b holds x_{T-1}

    c = cert(fn)
    # b (written, not returned) now holds whatever x holds: every output may see every input
    assert torch.equal(c.dense_bound(), SHIFT | columns(*range(T))), c.dense_bound().int()
    assert c.mode == "none" and not c.path_dependent
    assert c.lost_precision == [
        "causal_audit_test.stash.default in Model (Model)",  # the returned ones: the fallback
        "causal_audit_test.stash.default (wrote a tensor no rule describes) in Model (Model)",
    ]
    assert {f.op for f in c.forbidden if f.kind == "future"} == {
        "causal_audit_test.stash.default in Model (Model)"
    }


def test_an_op_whose_written_tensors_see_no_future_is_not_blamed():
    def fn(s, x):
        a, b = torch.zeros_like(x[:, :1]), torch.zeros_like(x[:, :1])
        torch.ops.causal_audit_test.stash(a, b, x=x[:, :1])  # returns only the first position
        return (past(x) + b).roll(1, 1)  # b holds x_0: the future of nothing, until the roll

    c = cert(fn, predicts="next")
    assert {f.op for f in c.forbidden if f.kind == "future"} == {
        "aten.roll.default in Model (Model)"
    }


def test_an_op_that_writes_and_returns_passes_its_keyword_tensors_to_the_rule():
    def fn(s, x):
        a, b = torch.zeros_like(x[:, :1]), torch.zeros_like(x[:, :1])
        written, doubled = torch.ops.causal_audit_test.stash(a, b, x=past(x))
        return doubled + 0 * written  # the new tensor, from the keyword argument only

    c = cert(fn)
    # the fallback reads every tensor argument (x by keyword too); b is not used
    assert torch.equal(c.dense_bound(), columns(*range(T - 1))), c.dense_bound().int()
    assert c.mode == "none"


def test_two_reads_into_python_are_both_named():
    def fn(s, x):  # numpy() twice: no ATen op sees either read
        first = torch.from_numpy(x[:, 1].numpy().copy()).sum()
        second = torch.from_numpy(x[:, 4].numpy().copy()).sum()
        return past(x) + first + second

    c = cert(fn)
    assert c.path_dependent and c.dense_bound().all()
    assert [r.split(" at ")[0] for r in c.reads if "numpy" in r] == ["Tensor.numpy"] * 2
    assert {u.split(")")[0] for u in c.unknown} == {"input values (1", "input values (4"}


def test_a_boolean_read_whose_other_outcome_runs_the_same_computation_reaches_nothing():
    def fn(s, x):  # Hugging Face's padding warning: a read that only decides a log line
        if bool((x[:, -1] == 0.5).any()):
            import warnings
            warnings.warn("padding?", stacklevel=2)
        return past(x) * 1

    c = cert(fn, predicts="next")
    assert c.proved and torch.equal(c.dense_bound(), SHIFT) and not c.path_dependent
    assert c.reads[0].endswith("(every other outcome ends in an exception or runs the same "
                               "computation)")


def test_an_op_that_brings_the_future_with_a_constant_operand_is_blamed():
    def fn(s, x):  # cat of the shifted input with constant zeros: the cat brings the future
        return torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], 1) * 2

    c = cert(fn, predicts="next")
    assert {f.op for f in c.forbidden if f.kind == "future"} == {
        "aten.cat.default in Model (Model)"
    }


def test_the_future_is_blamed_on_a_grid_of_two_positions():
    c = cert(lambda s, x: x.roll(-1, 1) * 2, grid=(2,), predicts="next")
    assert c.mode == "none"
    assert {f.op for f in c.forbidden if f.kind == "future"} == {
        "aten.roll.default in Model (Model)"
    }
