"""What :func:`properties.evidence.certificate.certify` concludes from a bound: the mode, the
verdict for each convention, the forbidden pairs it lists (ordered by generation rank, capped, the
first future never lost to the cap), the op blamed for the future, the reasons, the union of the
inference and training paths, and the certificate's own checks of measured maps against it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from properties import make_subject
from properties.errors import ModelError
from properties.evidence import certificate
from properties.evidence.certificate import Certificate, Forbidden, certify
from properties.verdict import Violation

pytestmark = pytest.mark.usefixtures("summary_form")  # both forms (conftest)
T = 6


class Model(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(1, 1)  # a float dtype and weights

    def forward(self, x):  # (B, T, 1) -> (B, T, 1)
        return self.fn(self, x)


def subject(fn, t=T, **options):
    return make_subject(Model(fn), grid=(t,), layout="BTC", **options)


def cert(fn, t=T, train=False, seed=0, **options):
    return certify(subject(fn, t, **options), train=train, seed=seed)


def matrix(pairs, n=T):
    m = torch.zeros(n, n, dtype=torch.bool)
    for t, s in pairs:
        m[t, s] = True
    return m


def past(x):  # output t reads input t - 1
    return F.pad(x, (0, 0, 1, -1))


def future(x):  # output t reads input t + 1
    return F.pad(x, (0, 0, -1, 1))


SHIFT = matrix([(t, t - 1) for t in range(1, T)])
DIAGONAL = torch.eye(T, dtype=torch.bool)
AHEAD = matrix([(t, t + 1) for t in range(T - 1)])


def test_a_strict_model_is_proved_for_both_conventions_with_its_exact_bound():
    for predicts in ("current", "next"):
        c = cert(lambda s, x: past(x), predicts=predicts)
        assert (c.status, c.mode, c.proved) == ("proved", "strict", True)
        assert torch.equal(c.dense_bound(), SHIFT)
        assert (c.forbidden, c.forbidden_count, c.reason) == ([], 0, None)
        assert (c.lost_precision, c.path_dependent, c.train) == ([], False, False)
        rf = c.receptive_field
        assert (rf.size, rf.span, rf.max_span) == (1, 1, 1)
        assert 0 < c.seconds < 60


def test_an_inclusive_model_is_proved_for_next_and_not_for_current():
    nxt = cert(lambda s, x: x * 2, predicts="next")
    assert (nxt.status, nxt.mode, nxt.forbidden, nxt.forbidden_count) == (
        "proved", "inclusive", [], 0)
    assert torch.equal(nxt.dense_bound(), DIAGONAL)
    cur = cert(lambda s, x: x * 2, predicts="current")
    assert (cur.status, cur.mode, cur.forbidden_count) == ("not_proved", "inclusive", T)
    assert cur.forbidden == [Forbidden(t, t, "present", None) for t in range(T)]
    assert cur.reason == "output 0 may depend on input 0 (present)"


def test_a_leak_names_the_op_where_the_future_entered_and_every_forbidden_pair():
    c = cert(lambda s, x: future(x) * 2 + 1, predicts="next")
    assert (c.status, c.mode, c.forbidden_count) == ("not_proved", "none", T - 1)
    assert torch.equal(c.dense_bound(), AHEAD)
    op = "aten.constant_pad_nd.default in Model (Model)"
    assert c.forbidden == [Forbidden(t, t + 1, "future", op) for t in range(T - 1)]
    assert c.reason == f"output 0 may depend on input 1 (future, entering at {op})"
    # under "current" the present pairs are forbidden too, and only the future is blamed
    c = cert(lambda s, x: future(x) + x, predicts="current")
    assert c.forbidden_count == 2 * T - 1
    assert c.forbidden[:3] == [Forbidden(0, 0, "present", None),
                               Forbidden(0, 1, "future", "aten.constant_pad_nd.default in "
                                         "Model (Model)"),
                               Forbidden(1, 1, "present", None)]


def test_forbidden_pairs_are_ordered_by_generation_rank_not_by_position():
    # generation from the last position to the first: reading t - 1 reads the future
    c = cert(lambda s, x: past(x), order=list(range(T))[::-1], predicts="next")
    assert (c.status, c.mode, c.forbidden_count) == ("not_proved", "none", T - 1)
    assert [(f.output, f.input) for f in c.forbidden] == [(t, t - 1) for t in range(T - 1, 0, -1)]
    assert c.reason.startswith(f"output {T - 1} may depend on input {T - 2} (future")
    # and the model that reads t + 1 is strict in that order
    c = cert(lambda s, x: future(x), order=list(range(T))[::-1], predicts="current")
    assert (c.status, c.mode) == ("proved", "strict")


def test_the_first_future_pair_is_listed_even_past_the_cap():
    n = 14  # 14 present pairs sort before the two future ones: the cap keeps 10

    def late_leak(s, x):
        zeros = torch.zeros(1, 11, 1)
        last = x[:, -1:]
        return x + torch.cat([zeros, last, last, torch.zeros(1, 1, 1)], 1)

    c = cert(late_leak, t=n, predicts="current")
    assert (c.mode, c.forbidden_count) == ("none", n + 2)
    assert [(f.output, f.input, f.kind) for f in c.forbidden] == [
        (t, t, "present") for t in range(10)] + [(11, n - 1, "future")]
    assert c.forbidden[-1].op is not None and c.forbidden[0].op is None
    assert c.reason == "output 0 may depend on input 0 (present)"
    nxt = cert(late_leak, t=n, predicts="next")
    assert [(f.output, f.input) for f in nxt.forbidden] == [(11, n - 1), (12, n - 1)]
    # without a future pair past the cap, nothing is appended
    c = cert(lambda s, x: x + 0, t=n, predicts="current")
    assert (c.mode, c.forbidden_count, len(c.forbidden)) == ("inclusive", n, 10)


def test_training_mode_is_the_union_of_both_paths_and_says_which_lost_precision():
    def path(s, x):
        if s.training:  # renorm has no rule: its fallback, every output may read input 0
            return future(x) + 0 * torch.renorm(x[:, :1], 2, 0, 1.0)
        return past(x)

    assert cert(path, predicts="current").proved
    c = cert(path, train=True, predicts="current")
    assert c.train and (c.status, c.mode) == ("not_proved", "none")
    assert torch.equal(c.dense_bound(), SHIFT | AHEAD | matrix([(t, 0) for t in range(T)]))
    assert c.lost_precision == ["aten.renorm.default in Model (Model) (train)"]
    assert c.reason == (
        "output 0 may depend on input 0 (present); precision was lost at aten.renorm.default in "
        "Model (Model) (train)")
    assert all(f.op is not None for f in c.forbidden if f.kind == "future")

    def both(s, x):
        return past(x) + 0 * torch.renorm(torch.renorm(x[:, :1], 2, 0, 1.0), 2, 0, 1.0)

    c = cert(both, train=True, predicts="next")
    assert c.lost_precision == ["aten.renorm.default in Model (Model) (eval)",
                                "aten.renorm.default in Model (Model) (train)"]
    assert c.proved and c.reason is None
    c = cert(both, predicts="next")
    assert c.lost_precision == ["aten.renorm.default in Model (Model)"]

    def reads_in_eval(s, x):
        return past(x) * (1.0 if s.training else float(x[0, 0, 0] > 0))

    c = cert(reads_in_eval, train=True, predicts="next")
    assert c.path_dependent  # one path read a value: the union is path dependent too


class Sorter(nn.Module):  # an op without a rule, which mixes every position
    def forward(self, x):
        return torch.renorm(x, 2, 0, 1e9)


def test_the_reason_names_at_most_three_ops_where_precision_was_lost():
    def fn(s, x):
        for m in s.sorters:
            x = m(x)
        return future(x)

    model = Model(fn)
    model.sorters = nn.ModuleList([Sorter() for _ in range(4)])
    c = certify(make_subject(model, grid=(T,), layout="BTC"))
    assert c.lost_precision == [f"aten.renorm.default in sorters.{i} (Sorter)" for i in range(4)]
    assert c.reason == (
        "output 0 may depend on input 1 (future, entering at aten.renorm.default in sorters.0 "
        "(Sorter)); precision was lost at " + ", ".join(c.lost_precision[:3]))
    assert c.forbidden[0].op == "aten.renorm.default in sorters.0 (Sorter)"  # mixes everything


def test_a_branch_on_values_is_not_proved_whichever_path_the_seed_takes():
    draw = subject(lambda s, x: x).draw_inputs
    first = [float(draw(1, torch.Generator().manual_seed(seed))[0, 0]) for seed in (0, 1)]
    threshold = sum(first) / 2  # seeds 0 and 1 take different paths

    def branch(s, x):  # a value-dependent branch: the path depends on the drawn input
        return future(x) if bool(x[0, 0, 0] > threshold) else past(x)

    s = subject(branch, predicts="current")
    assert certify(s).mode == certify(s, seed=0).mode  # the default seed is 0
    for seed in range(4):
        c = certify(s, seed=seed)
        # the other outcome of the boolean computes something else: the path, hence every
        # output, may depend on anything, on every seed (the benign path proves nothing)
        assert c.path_dependent and not c.proved and c.dense_bound().all(), seed
        assert c.unknown[0].startswith("input values (0) read into Python by "
                                       "aten._local_scalar_dense.default (a boolean) at "
                                       "evidence/certificate/test_conclusions.py:")


def test_a_model_that_fails_is_unavailable_with_the_reason(monkeypatch):
    def raises(s, x):
        raise RuntimeError("boom")

    c = cert(raises, train=True)
    assert (c.status, c.bound, c.train) == ("unavailable", None, True)
    assert c.reason.startswith("the model raised RuntimeError: boom on torch.float32 values")
    assert c.as_map() is None and not c.proved and 0 < c.seconds < 60

    def tracer_bug(*args, **kwargs):  # the tracer itself failing is no verdict either
        raise IndexError("out of range")

    monkeypatch.setattr(certificate, "_trace", tracer_bug)
    c = cert(lambda s, x: past(x), train=True)
    assert (c.status, c.reason, c.train) == (
        "unavailable", "the traced run failed: IndexError: out of range", True)
    assert 0 < c.seconds < 60
    monkeypatch.undo()

    def refuses(s, x):
        raise ModelError("the model wants two inputs", "pass a forward")

    c = cert(refuses)
    assert (c.status, c.reason, c.train) == ("unavailable", "the model wants two inputs", False)
    assert 0 < c.seconds < 60


def test_an_output_with_no_dependency_has_no_receptive_field():
    c = cert(lambda s, x: torch.zeros_like(x) + s.lin.weight)
    assert (c.status, c.mode, c.receptive_field) == ("proved", "strict", None)
    assert not bool(c.dense_bound().any())


def test_the_certificate_checks_measured_maps_against_its_bound():
    s = subject(lambda s, x: x, order=[1, 0, 2, 3, 4, 5])  # position 1 is generated first
    bound = SHIFT | DIAGONAL
    c = Certificate("not_proved", bound=bound)
    dmap = c.as_map()
    assert torch.equal(dmap.outputs, torch.arange(T)) and dmap.seen is bound
    assert dmap.strength.dtype == torch.bfloat16 and torch.equal(dmap.strength.bool(), bound)
    assert (dmap.passes, dmap.method) == (0, "certificate")
    assert c.exact_for(dmap)
    outputs = torch.tensor([3, 4])
    seen = bound[outputs].clone()
    assert c.exact_for(type(dmap)(outputs, seen, seen.float(), 1, "gradient"))
    assert c.outside(seen, outputs).tolist() == []
    seen[1, 5] = seen[0, 0] = True
    assert c.outside(seen, outputs).tolist() == [[3, 0], [4, 5]]
    assert not c.exact_for(type(dmap)(outputs, seen, seen.float(), 1, "gradient"))

    def v(output, input, evidence):  # evidence as the JSON report tags it
        kind, _, mode = evidence.partition("/")
        source = "gradient" if kind == "gradient" else "sweep"
        return Violation(output, input, "future", source, 1.0, train=mode == "train")

    found = [
        v(2, 3, "gradient"),  # not in row 2 of the bound: unexplained
        v(2, 1, "gradient"),  # in it
        v(2, 0, "gradient"),  # not in it, though a later input (2) is: a gradient is exact
        v(2, 2, "perturbation"),  # the input itself is in the row: explained
        v(2, 4, "perturbation"),  # inputs of rank >= 4: none in row 2 (1, 2)
        v(3, 0, "perturbation"),  # ranks >= rank(0) = 1: row 3 holds 2 and 3
        v(0, 1, "perturbation"),  # rank(1) = 0: any input of the row explains it
        v(0, 3, "gradient/train"),  # stacked copies: not a per-output dependency
        v(1, 5, "perturbation/train"),
    ]
    assert c.unexplained(s, found) == [found[0], found[2], found[4], found[8]]


def test_a_plain_function_is_certified_like_a_module():
    c = certify(make_subject(lambda x: past(x) * 2, grid=(T,), layout="BTC",
                             predicts="current"))
    assert (c.status, c.mode) == ("proved", "strict") and torch.equal(c.dense_bound(), SHIFT)
    leak = certify(make_subject(lambda x: future(x), grid=(T,), layout="BTC"))
    assert [f.op for f in leak.forbidden][:1] == ["aten.constant_pad_nd.default"]


def test_an_output_the_same_at_every_position_with_a_value_read():
    def fn(s, x):  # every position: the same sum, scaled by a value read into Python
        return torch.zeros(1, T, 1) + x[:, :3].sum(1, keepdim=True) * float(x[0, 4, 0])

    c = cert(fn, predicts="next")
    assert c.path_dependent and not c.proved
    assert c.dense_bound().all()  # a float in Python: what it steers, the tracer cannot follow
    assert c.reads[0].startswith("aten._local_scalar_dense.default (a value) at ")


def test_an_output_that_is_a_new_object_over_a_tracked_tensor_keeps_its_summary():
    c = cert(lambda s, x: past(x).as_subclass(torch.Tensor), predicts="current")
    assert torch.equal(c.dense_bound(), SHIFT) and c.proved


def test_an_output_that_folds_the_batch_is_unavailable_with_the_adapters_story():
    c = cert(lambda s, x: past(x)[0])
    assert c.status == "unavailable"
    assert c.reason == ("the model's output has shape (6, 1): batch and positions folded into "
                        "one axis (1 samples x 6 positions)")


class Fresh(nn.Module):
    def forward(self, x):
        h = nn.Identity()(x)  # a module the model does not own: not on the names' stack
        return h.roll(-1, 1)


class Raises(nn.Module):
    def forward(self, x):
        raise ValueError("not this way")


def test_ops_are_named_by_the_module_they_run_in():
    def fn(s, x):
        try:
            s.raises(x)
        except ValueError:  # the module is left by an exception: its name is popped
            pass
        return s.fresh(x) + future(x)

    model = Model(fn)
    model.fresh = Fresh()
    model.raises = Raises()
    c = certify(make_subject(model, grid=(T,), layout="BTC", predicts="next"))
    assert {f.op for f in c.forbidden} == {"aten.roll.default in fresh (Fresh)"}

    def after(s, x):
        try:
            s.raises(x)
        except ValueError:
            pass
        return future(x)

    model = Model(after)
    model.raises = Raises()
    c = certify(make_subject(model, grid=(T,), layout="BTC", predicts="next"))
    assert {f.op for f in c.forbidden} == {"aten.constant_pad_nd.default in Model (Model)"}


def test_forbidden_pairs_sort_by_output_rank_first_then_input_rank():
    def three_ahead(s, x):  # output t reads t and t + 3
        return x + F.pad(x, (0, 0, -3, 3))

    c = cert(three_ahead, predicts="current")
    assert [(f.output, f.input) for f in c.forbidden][:5] == [
        (0, 0), (0, 3), (1, 1), (1, 4), (2, 2)]

    n = 14  # past the cap of 10 present pairs, the first future by output rank, then input

    def late(*reads):
        def fn(s, x):
            parts = [torch.zeros(1, 10, 1)]
            parts += [sum(x[:, i:i + 1] for i in r) for r in reads]
            parts.append(torch.zeros(1, n - 10 - len(reads), 1))
            return x + torch.cat(parts, 1)
        return fn

    c = cert(late([12, 13]), t=n, predicts="current")  # output 10 reads 12 and 13
    assert (c.forbidden[-1].output, c.forbidden[-1].input) == (10, 12)
    c = cert(late([13], [12]), t=n, predicts="current")  # 10 reads 13, 11 reads 12
    assert (c.forbidden[-1].output, c.forbidden[-1].input) == (10, 13)
