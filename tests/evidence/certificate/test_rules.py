"""The certificate's rules, op by op, at element granularity.

Each case is a small function of one or more tracked inputs. The tracer gives every input
*element* its own position, so the summary it proves for the output is a per-element bound,
which is compared with a ground truth measured here in float64: every input element replaced, one
at a time, by very different values (zeros, large magnitudes, negatives), at three base inputs
(one the negation of another, so that input-dependent conditions take both branches).

- Soundness: the bound contains every dependency the ground truth finds. A rule that drops one
  (attention ignoring the values, a mask applied the wrong way round) fails here.
- Precision: the bound *equals* the expected map (the ground truth itself unless the case says
  how the rule is conservative by design). A rule made coarser (a structural zero not used, the
  fallback taken) fails here.
- The op named in the case was ruled, and nothing fell back to the conservative fallback.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from properties.evidence.certificate import deps
from properties.evidence.certificate.deps import expanded
from properties.evidence.certificate.origin import preexisting
from properties.evidence.certificate.tracer import Tracer

pytestmark = pytest.mark.usefixtures("summary_form")  # every case on both forms (conftest)
aten = torch.ops.aten
VALUES = (0.0, 1.0, -1.0, 3.7, -250.0, 1e4, -1e4)
MIN = -3.0e38  # additive masks near float32's most negative value (GPT-2 style)


class Ruled(TorchDispatchMode):
    """Records the ops that reach the tracer (entered inside it, it sees them first)."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


def proved(fn, inputs):
    """(outputs, inputs) bool: the tracer's per-element bound of ``fn(*inputs)``, the ops it
    saw and the places where it lost precision."""
    n = sum(x.numel() for x in inputs)
    tracer = Tracer(n, (n,), torch.arange(n), {}, False)
    tracer.know(preexisting(None, [fn]))  # the cases' constants (weights, masks) came first
    inputs = [x.clone() for x in inputs]
    start = 0
    for x in inputs:
        eye = torch.eye(n, dtype=torch.bool)[start : start + x.numel()]
        tracer.track_input(x, deps.in_form(eye.reshape(*x.shape, n), deps.form_for(n)))
        start += x.numel()
    ruled = Ruled()
    with torch.no_grad(), tracer, ruled:
        y = fn(*inputs)
    d = deps.dense(tracer.deps(y))
    if d is not None:  # the input positions; after them, the slots of unknown origin
        assert not d[..., n:].any(), f"unknown origin: {list(tracer.entries)}"
        d = d[..., :n]
    bound = torch.zeros(*y.shape, n, dtype=torch.bool) if d is None else expanded(d, y.shape)
    return bound.reshape(-1, n), ruled.ops, dict(tracer.lost), tracer.path_dependent


def measured(fn, inputs, ints=0):
    """(outputs, inputs) bool: which output elements move when one input element is replaced."""
    n = sum(x.numel() for x in inputs)
    moved = None
    for sign in (1, -1, 2):
        base = [x * sign if not ints and sign != 2 else x for x in inputs]
        if sign == 2:  # a third base input: a shuffle of the first
            g = torch.Generator().manual_seed(5)
            base = [x.reshape(-1)[torch.randperm(x.numel(), generator=g)].reshape(x.shape)
                    for x in inputs]
        with torch.no_grad():
            y0 = fn(*[x.clone() for x in base]).reshape(-1)
        moved = torch.zeros(y0.numel(), n, dtype=torch.bool) if moved is None else moved
        column = 0
        for i, x in enumerate(base):
            for e in range(x.numel()):
                for v in range(ints) if ints else VALUES:
                    changed = [u.clone() for u in base]
                    changed[i].view(-1)[e] = v
                    with torch.no_grad():
                        y = fn(*changed).reshape(-1)
                    moved[:, column] |= ~((y == y0) | (y.isnan() & y0.isnan()))
                column += 1
    return moved


@dataclass
class Case:
    fn: Callable
    shapes: tuple  # of the tracked inputs (float unless ``ints``)
    op: str  # the ATen op whose rule is under test
    expect: Callable | None = None  # (truth) -> the exact bound, when coarser by design
    ints: int = 0  # > 0: integer inputs below this
    dtype: torch.dtype = torch.float64  # of the ground truth (the tracer runs in float32)
    lost: str | None = None  # expected in lost_precision (an input-dependent index)
    path_dependent: bool = False
    extra: dict = field(default_factory=dict)


def inputs_of(case: Case, dtype):
    g = torch.Generator().manual_seed(0)
    if case.ints:
        return [torch.randint(case.ints, s, generator=g) for s in case.shapes]
    return [(torch.randn(s, generator=g, dtype=torch.float64) + 0.1).to(dtype)
            for s in case.shapes]


def everything(truth):
    return torch.ones_like(truth)


def column_line(truth):
    """(3, 2) rows picked by an index from column 0: element (k, j) may be any row's column j,
    and depends on x[k, 0] through its index."""
    return rows_of(6, 6, [(2 * k + j, 2 * r + j) for k in range(3) for j in range(2)
                          for r in range(3)] + [(2 * k + j, 2 * k) for k in range(3)
                                                for j in range(2)])


def rows_of(n_out, n_in, pairs):
    out = torch.zeros(n_out, n_in, dtype=torch.bool)
    for o, i in pairs:
        out[o, i] = True
    return out


def const(shape, seed, zeros=None):
    """A constant weight (float64; cast to the input's dtype in the case), exact zeros where
    ``zeros`` (a bool tensor) says."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w if zeros is None else w.masked_fill(zeros, 0.0)


def like(w, x):
    return w.to(x.dtype)


W43 = const((4, 3), 1)  # dense: every output feature sees every input feature
WZ = const((3, 4), 2, zeros=torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]]).bool())
AZ = const((2, 3), 3, zeros=torch.tensor([[1, 0, 1], [0, 0, 1]]).bool())
IDX = torch.tensor([2, 0, 2])
KEEP = torch.tensor([True, False, True])
TRI = torch.ones(3, 3, dtype=torch.bool).triu(1)


def dense(x):
    """``x @ W``: every feature of a row depends on the same inputs (a broadcast summary)."""
    return x @ like(W43, x)


def minus_inf(x, where=TRI, value=float("-inf")):
    return torch.zeros(where.shape, dtype=x.dtype).masked_fill(where, value)


def inference(fn):
    """In inference mode the composite ops (narrow, chunk, softmax.int, matmul...) reach the
    tracer undecomposed."""
    def run(*xs):
        with torch.inference_mode():
            return fn(*xs)
    return run


MOVES = {
    "view": Case(lambda x: x.view(3, 4), ((2, 6),), "aten.view.default"),
    "view_of_a_broadcast_summary": Case(lambda x: dense(x).view(6, 3), ((2, 3, 4),),
                                        "aten.view.default"),
    "flatten_of_a_broadcast_summary": Case(lambda x: dense(x).transpose(0, 1).flatten(1),
                                           ((2, 3, 4),), "aten._unsafe_view.default"),
    "squeeze": Case(lambda x: x.unsqueeze(1).squeeze(1) * 1, ((2, 3),), "aten.squeeze.dim"),
    "clone": Case(lambda x: x.clone(), ((2, 3),), "aten.clone.default"),
    "reshape_inference": Case(inference(lambda x: x.reshape(3, 2)), ((2, 3),),
                              "aten.reshape.default"),
    "expand": Case(lambda x: x.expand(2, 3, 4), ((3, 1),), "aten.expand.default"),
    "permute": Case(lambda x: x.permute(2, 0, -2), ((2, 3, 2),), "aten.permute.default"),
    "transpose": Case(lambda x: x.transpose(-1, 0), ((2, 3, 2),), "aten.transpose.int"),
    "t": Case(lambda x: x.t(), ((2, 3),), "aten.t.default"),
    "t_of_a_vector": Case(lambda x: x.t() * 1, ((3,),), "aten.t.default"),
    "select_last": Case(lambda x: x[:, -1], ((2, 3, 2),), "aten.select.int"),
    "select_a_broadcast_axis": Case(lambda x: dense(x)[:, 2], ((2, 4),), "aten.select.int"),
    "slice_step": Case(lambda x: x[:, 1::2], ((2, 6),), "aten.slice.Tensor"),
    "slice_negative": Case(lambda x: x[:, -3:-1], ((2, 5),), "aten.slice.Tensor"),
    "slice_first_axis": Case(lambda x: x[1:], ((3, 2),), "aten.slice.Tensor"),
    "slice_a_broadcast_axis": Case(lambda x: dense(x)[:, 1:], ((2, 4),), "aten.slice.Tensor"),
    "narrow": Case(inference(lambda x: x.narrow(-1, 1, 2)), ((2, 4),), "aten.narrow.default"),
    "narrow_a_broadcast_axis": Case(inference(lambda x: dense(x).narrow(1, 1, 2)), ((2, 4),),
                                    "aten.narrow.default"),
    "split_sizes": Case(lambda x: x.split([2, 4], 1)[1], ((2, 6),),
                        "aten.split_with_sizes.default"),
    "split_first_axis": Case(lambda x: x.split(2)[1], ((4, 2),), "aten.split.Tensor"),
    "split_a_broadcast_axis": Case(lambda x: dense(x).split(1, -1)[2], ((2, 4),),
                                   "aten.split.Tensor"),
    "chunk": Case(inference(lambda x: x.chunk(2, 1)[1]), ((2, 4),), "aten.chunk.default"),
    "unbind": Case(lambda x: x.unbind(1)[2], ((2, 3),), "aten.unbind.int"),
    "unbind_first_axis": Case(lambda x: x.unbind()[1], ((2, 3),), "aten.unbind.int"),
    "unbind_a_broadcast_axis": Case(lambda x: dense(x).unbind(-1)[1], ((2, 4),),
                                    "aten.unbind.int"),
    "cat_with_a_constant": Case(lambda x: torch.cat([x[:, 1:], torch.zeros(2, 1)], 1),
                                ((2, 3),), "aten.cat.default"),
    "cat_first_axis": Case(lambda x: torch.cat([torch.ones(1, 3), x]), ((2, 3),),
                           "aten.cat.default"),
    "cat_skips_empty_vectors": Case(lambda x: torch.cat([torch.zeros(0), x, x.flip(0)], -1),
                                    ((2, 3),), "aten.cat.default"),
    "cat_rotate_half": Case(lambda x: torch.cat([-dense(x)[:, 1:], dense(x)[:, :1]], -1),
                            ((2, 4),), "aten.cat.default"),
    "cat_two_broadcast_summaries": Case(lambda x: torch.cat([dense(x), dense(x.flip(0))], -1),
                                        ((2, 4),), "aten.cat.default"),
    "cat_a_broadcast_and_a_full_summary": Case(
        lambda x: torch.cat([dense(x), x[:, :3]], 0), ((2, 4),), "aten.cat.default"),
    "stack": Case(lambda x: torch.stack([x, torch.zeros(2, 3)], 1), ((2, 3),),
                  "aten.stack.default"),
    "stack_first_axis": Case(lambda x: torch.stack([x, x.flip(1)]), ((2, 3),),
                             "aten.stack.default"),
    "stack_last_axis": Case(lambda x: torch.stack([torch.ones(2, 3), x], -1), ((2, 3),),
                            "aten.stack.default"),
    "pad_and_crop": Case(lambda x: F.pad(x, (2, -1)), ((2, 5),), "aten.constant_pad_nd.default"),
    "pad_two_axes": Case(lambda x: F.pad(x, (1, 0, 0, 1), value=3.0), ((2, 3),),
                         "aten.constant_pad_nd.default"),
    "pad_a_broadcast_axis": Case(lambda x: F.pad(dense(x), (1, 1)), ((2, 4),),
                                 "aten.constant_pad_nd.default"),
    "flip": Case(lambda x: x.flip(-1, 0), ((2, 3),), "aten.flip.default"),
    "flip_a_broadcast_axis": Case(lambda x: dense(x).flip(-1), ((2, 4),), "aten.flip.default"),
    "flip_a_broadcast_and_a_full_axis": Case(lambda x: dense(x).flip(0, 1), ((2, 4),),
                                             "aten.flip.default"),
    "roll_flat": Case(lambda x: x.roll(2), ((2, 3),), "aten.roll.default"),
    "roll_axes": Case(lambda x: x.roll((1, -1), (0, -1)), ((2, 3),), "aten.roll.default"),
    "repeat": Case(lambda x: x.repeat(2, 1, 2), ((2, 3),), "aten.repeat.default"),
    "repeat_a_broadcast_axis": Case(lambda x: dense(x).repeat(2, 2), ((2, 4),),
                                    "aten.repeat.default"),
    "unfold": Case(lambda x: x.unfold(-1, 3, 2), ((2, 6),), "aten.unfold.default"),
    "unfold_first_axis": Case(lambda x: x.unfold(0, 2, 1), ((3, 2),), "aten.unfold.default"),
    "index_select": Case(lambda x: x.index_select(0, IDX), ((3, 2),),
                         "aten.index_select.default"),
    "index_select_a_broadcast_axis": Case(lambda x: dense(x).index_select(-1, IDX), ((2, 4),),
                                          "aten.index_select.default"),
    # an index computed from the input picks any element of its line along the axis, from the
    # same other coordinates: column j of the rows, and the index's own input
    "index_select_input_index": Case(lambda x: x.index_select(0, (x[:, 0] > 0).long()),
                                     ((3, 2),), "aten.index_select.default", expect=column_line,
                                     lost="aten.index_select.default (input-dependent index)"),
    "index_ints": Case(lambda x: x[:, IDX], ((2, 3),), "aten.index.Tensor"),
    "index_bools": Case(lambda x: x[:, KEEP], ((2, 3),), "aten.index.Tensor"),
    "index_two_axes": Case(lambda x: x[IDX[:2], IDX[1:]], ((3, 3),), "aten.index.Tensor"),
    "index_last_axis": Case(lambda x: x[:, :, IDX[1:]], ((2, 2, 3),), "aten.index.Tensor"),
    "index_a_broadcast_summary": Case(lambda x: dense(x)[IDX[:2]], ((3, 4),),
                                      "aten.index.Tensor"),
    "index_input_ints": Case(lambda x: x[(x[:, 0] > 0).long()], ((3, 2),), "aten.index.Tensor",
                             expect=column_line, lost="aten.index.Tensor (input-dependent index)"),
    "index_input_bools": Case(lambda x: x[x > 0].sum().reshape(1), ((2, 2),),
                              "aten.index.Tensor", expect=everything, path_dependent=True,
                              lost="aten.index.Tensor (input-dependent index)"),
    "gather": Case(lambda x: x.gather(1, torch.tensor([[2, 0], [1, 1]])), ((2, 3),),
                   "aten.gather.default"),
    "gather_input_index": Case(lambda x: x.gather(1, (x > 0).long()), ((2, 2),),
                               "aten.gather.default", expect=lambda truth: per_row(2)(truth),
                               lost="aten.gather.default (input-dependent index)"),
    "embedding_of_tokens": Case(lambda t: F.embedding(t, W43), ((2, 3),),
                                "aten.embedding.default", ints=4),
    "embedding_of_a_computed_table": Case(lambda x: F.embedding(torch.tensor([[1, 0]]), x),
                                          ((2, 2),), "aten.embedding.default",
                                          expect=everything),
}


def check(case: Case):
    bound, ops, lost, path_dependent = proved(case.fn, inputs_of(case, torch.float32))
    assert case.op in ops, f"{case.op} was not traced: {sorted(ops)}"
    truth = measured(case.fn, inputs_of(case, case.dtype), case.ints)
    missing = (truth & ~bound).nonzero().tolist()
    assert not missing, f"(output, input) pairs outside the bound: {missing[:6]}"
    expected = truth if case.expect is None else case.expect(truth)
    assert torch.equal(bound, expected), (
        f"bound != expected at {(bound ^ expected).nonzero().tolist()[:6]}"
    )
    assert list(lost) == ([case.lost] if case.lost else []), lost
    assert path_dependent == case.path_dependent


@pytest.mark.parametrize("name", sorted(MOVES))
def test_moves(name):
    check(MOVES[name])


def per_element(truth):
    """Output ``e`` depends on input element ``e`` of each input (pointwise, same shapes)."""
    n_out, n_in = truth.shape
    return torch.eye(n_out, dtype=torch.bool).repeat(1, n_in // n_out)


FINFO_MASK = TRI | torch.eye(3, dtype=torch.bool).flip(0)  # -inf here, finfo.min there
HALF_MIN = torch.finfo(torch.float16).min


def half_mask(x, with_inf=True):
    m = torch.zeros(3, 3, dtype=torch.float16).masked_fill(TRI, HALF_MIN)
    return m.masked_fill(TRI.T, float("-inf")) if with_inf else m


SPARSE = torch.zeros(3, 3, dtype=torch.bool).index_put((torch.tensor([0]), torch.tensor([2])),
                                                     torch.tensor(True))


def inf_and_min(x):
    """-inf above the diagonal, the dtype's most negative value on the anti-diagonal but
    for its middle, exactly at the threshold (half of it)."""
    low = torch.finfo(x.dtype).min
    m = minus_inf(x, torch.eye(3, dtype=torch.bool).flip(0), low)
    return m.masked_fill(TRI, float("-inf")).index_put((torch.tensor(1), torch.tensor(1)),
                                                       torch.tensor(0.5 * low, dtype=x.dtype))


ELEMENTWISE = {
    "pointwise_unary": Case(lambda x: torch.sin(x), ((2, 3),), "aten.sin.default"),
    "pointwise_broadcast": Case(lambda x, y: torch.atan2(x, y), ((2, 3), (3,)),
                                "aten.atan2.default"),
    "mul_by_structural_zeros": Case(lambda x: x * like(AZ, x), ((2, 3),), "aten.mul.Tensor"),
    "mul_structural_zeros_first": Case(lambda x: like(AZ[0], x) * x, ((2, 3),),
                                       "aten.mul.Tensor"),
    "mul_in_place": Case(lambda x: x.clone().mul_(like(AZ, x)), ((2, 3),), "aten.mul_.Tensor"),
    "mul_by_a_scalar": Case(lambda x: x * 3, ((2, 3),), "aten.mul.Tensor"),
    "mul_two_inputs": Case(lambda x, y: x * y, ((2, 3), (2, 3)), "aten.mul.Tensor"),
    "mul_by_a_gate_from_the_input": Case(lambda x, y: y * (x > 0), ((2, 3), (2, 3)),
                                         "aten.mul.Tensor"),
    "mul_by_a_partly_constant_factor": Case(lambda x, y: y * (x * like(AZ, x)), ((2, 3), (2, 3)),
                                            "aten.mul.Tensor"),
    "add_minus_inf_mask": Case(lambda x: x + minus_inf(x), ((3, 3),), "aten.add.Tensor"),
    "add_mask_first": Case(lambda x: inf_and_min(x) + x, ((3, 3),), "aten.add.Tensor"),
    "add_mask_in_place": Case(lambda x: x.clone().add_(inf_and_min(x)), ((3, 3),),
                              "aten.add_.Tensor"),
    "add_alpha_two": Case(lambda x: torch.add(x, inf_and_min(x), alpha=2), ((3, 3),),
                          "aten.add.Tensor"),
    "add_alpha_zero": Case(lambda x: torch.add(x, inf_and_min(x), alpha=0), ((3, 3),),
                           "aten.add.Tensor", expect=per_element),  # x + 0 * -inf: NaN
    "add_a_scalar": Case(lambda x: x + 2, ((3, 3),), "aten.add.Tensor"),
    "add_a_negative_constant": Case(lambda x: x + like(-W43[:3].abs(), x), ((3, 3),),
                                    "aten.add.Tensor"),
    "pointwise_into_out": Case(lambda x: torch.sin(torch.ones(2, dtype=x.dtype), out=x.clone()),
                               ((2,),), "aten.sin.out"),
    "add_float16_min_and_inf": Case(lambda x: (x.half() + half_mask(x)).to(x.dtype),
                                    ((3, 3),), "aten.add.Tensor"),
    "add_float16_min_only": Case(lambda x: (half_mask(x, False) + x.half()).to(x.dtype),
                                 ((3, 3),), "aten.add.Tensor"),
    "add_integers": Case(lambda t: t + torch.tensor([0, 5, -3]), ((2, 3),), "aten.add.Tensor",
                         ints=3),
    "add_a_mask_from_the_input": Case(
        lambda x, y: x + torch.where(y > 0, float("-inf"), 0.0).to(x.dtype),
        ((2, 3), (2, 3)), "aten.add.Tensor"),
    "where_constant_condition": Case(lambda x, y: torch.where(TRI, x, y), ((3, 3), (3,)),
                                     "aten.where.self"),
    "where_scalar_branch": Case(lambda x: torch.where(TRI, 0.0, x), ((3, 3),),
                                "aten.where.self"),
    "where_input_condition": Case(lambda x, y, z: torch.where(x > 0, y, z),
                                  ((2, 3), (2, 3), (2, 3)), "aten.where.self"),
    "where_partly_constant_condition": Case(
        lambda x, y, z: torch.where(x * like(AZ, x) > 0, y, z), ((2, 3), (2, 3), (2, 3)),
        "aten.where.self"),
    "masked_fill": Case(lambda x: x.masked_fill(TRI, -1.0), ((3, 3),),
                        "aten.masked_fill.Scalar"),
    "masked_fill_a_computed_value": Case(lambda x, y: x.masked_fill(TRI, y.sum()),
                                         ((3, 3), (2,)), "aten.masked_fill.Tensor"),
    "masked_fill_input_mask": Case(lambda x, y: x.masked_fill(y > 0, 0.0), ((2, 3), (2, 3)),
                                   "aten.masked_fill.Scalar"),
    "tril": Case(lambda x: x.tril(), ((3, 4),), "aten.tril.default"),
    "triu_diagonal": Case(lambda x: x.triu(1), ((2, 3, 3),), "aten.triu.default"),
    "tril_in_place": Case(lambda x: x.clone().tril_(-1), ((3, 3),), "aten.tril_.default"),
    "copy_broadcast": Case(lambda x: torch.zeros(3, 4).copy_(x), ((4,),), "aten.copy_.default"),
    "zeros_like": Case(lambda x: torch.zeros_like(x) + x.new_ones(2, 3), ((2, 3),),
                       "aten.zeros_like.default"),
    "fill_with_a_computed_value": Case(lambda x: torch.zeros(2, 2).fill_(x.sum()), ((3,),),
                                       "aten.fill_.Tensor"),
    "index_put": Case(lambda x, v: x.index_put((IDX[:2],), v), ((3, 2), (2, 2)),
                      "aten.index_put.default"),
    "index_put_accumulate": Case(lambda x, v: x.index_put((IDX,), v, accumulate=True),
                                 ((3, 2), (3, 2)), "aten.index_put.default"),
    "index_put_into_a_constant": Case(
        lambda v: torch.zeros(3, 2, dtype=v.dtype).index_put((IDX[:2],), v), ((2,),),
        "aten.index_put.default"),
    "index_put_constant_values": Case(
        lambda x: x.index_put((IDX[:2],), x.new_ones(2)), ((3, 2),), "aten.index_put.default"),
    "index_put_in_place": Case(lambda x, v: x.clone().index_put_((IDX[:2], IDX[1:]), v),
                               ((3, 3), (2,)), "aten.index_put_.default"),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise(name):
    check(ELEMENTWISE[name])


def per_row(groups: int):
    """Output row ``r`` (of ``groups`` equal blocks) depends on every input of block ``r``."""
    def expect(truth):
        n_out, n_in = truth.shape
        return torch.eye(groups, dtype=torch.bool).repeat_interleave(n_out // groups, 0) \
            .repeat_interleave(n_in // groups, 1)
    return expect


RM, RV = torch.zeros(3), torch.ones(3)
GAMMA = const((3,), 4)


def rms(x):
    with torch.inference_mode():
        return aten._fused_rms_norm.default(x, [2], None, 1e-5)


def _running(x):
    rm = torch.zeros(3, dtype=x.dtype)
    F.batch_norm(x, rm, torch.ones(3, dtype=x.dtype), training=True)
    return rm  # updated in place with the batch's means


REDUCTIONS = {
    "sum": Case(lambda x: x.sum(1), ((2, 3),), "aten.sum.dim_IntList"),
    "sum_keepdim": Case(lambda x: x.sum(-1, keepdim=True), ((2, 3),), "aten.sum.dim_IntList"),
    "sum_all": Case(lambda x: x.sum(), ((2, 3),), "aten.sum.default"),
    "mean_all": Case(lambda x: x.mean(), ((2, 3),), "aten.mean.default"),
    "min_all": Case(lambda x: x.min(), ((2, 3),), "aten.min.default"),
    "any_all": Case(lambda x: (x > 0).any().float(), ((2, 2),), "aten.any.default",
                    expect=everything),  # one element alone rarely changes it
    "amax_two_axes": Case(lambda x: x.amax((0, 2)), ((2, 3, 2),), "aten.amax.default"),
    "max_values": Case(lambda x: x.max(1).values, ((2, 3),), "aten.max.dim"),
    "max_indices_keepdim": Case(lambda x: x.max(0, keepdim=True).indices.float(), ((3, 2),),
                                "aten.max.dim"),
    "argmax": Case(lambda x: x.argmax(-1).float(), ((2, 3),), "aten.argmax.default"),
    "argmax_all": Case(lambda x: x.argmax().float(), ((2, 2),), "aten.argmax.default",
                       expect=everything),  # a change of one element may not move it
    "sum_over_no_axes_is_over_all": Case(lambda x: x.sum([]), ((2, 3),), "aten.sum.dim_IntList"),
    "amax_keepdim": Case(lambda x: x.amax(0, keepdim=True), ((2, 3),), "aten.amax.default"),
    "logsumexp_keepdim": Case(lambda x: x.logsumexp(1, True), ((2, 3),),
                              "aten.logsumexp.default"),
    "prod": Case(lambda x: x.prod(0), ((2, 3),), "aten.prod.dim_int"),
    "count_nonzero": Case(lambda x: torch.count_nonzero(x, 1).float(), ((2, 3),),
                          "aten.count_nonzero.default"),
    "count_nonzero_axes": Case(lambda x: torch.count_nonzero(x, (0, 2)).float(), ((2, 2, 2),),
                               "aten.count_nonzero.dim_IntList"),
    "vector_norm": Case(lambda x: torch.linalg.vector_norm(x, dim=1), ((2, 3),),
                        "aten.linalg_vector_norm.default"),
    "vector_norm_keepdim": Case(lambda x: torch.linalg.vector_norm(x, dim=0, keepdim=True),
                                ((2, 3),), "aten.linalg_vector_norm.default"),
    "vector_norm_all": Case(lambda x: torch.linalg.vector_norm(x), ((2, 3),),
                            "aten.linalg_vector_norm.default"),
    "var_keepdim": Case(lambda x: x.var(1, keepdim=True), ((2, 3),), "aten.var.correction"),
    "std_all": Case(lambda x: x.std(), ((2, 3),), "aten.std.correction"),
    "var_mean": Case(lambda x: torch.stack(torch.var_mean(x, 0)), ((2, 3),),
                     "aten.var_mean.correction"),
    "std_mean_keepdim": Case(lambda x: torch.cat(torch.std_mean(x, -1, keepdim=True)),
                             ((2, 3),), "aten.std_mean.correction"),
    "cumsum": Case(lambda x: x.cumsum(1), ((2, 4),), "aten.cumsum.default"),
    "cumsum_last_axis": Case(lambda x: x.cumsum(-1), ((2, 3),), "aten.cumsum.default"),
    "cumsum_of_a_vector": Case(lambda x: x.cumsum(-1), ((4,),), "aten.cumsum.default"),
    "cumsum_a_broadcast_axis": Case(lambda x: dense(x).cumsum(-1), ((2, 4),),
                                    "aten.cumsum.default"),
    "cummax": Case(lambda x: x.cummax(0).values, ((3, 2),),
                           "aten.cummax.default"),
    "layer_norm": Case(lambda x: F.layer_norm(x, (3,), like(GAMMA, x)), ((2, 3),),
                       "aten.native_layer_norm.default"),
    "layer_norm_two_axes": Case(lambda x: F.layer_norm(x, (2, 2)), ((2, 2, 2),),
                                "aten.native_layer_norm.default"),
    "layer_norm_computed_weight": Case(lambda x, w: F.layer_norm(x, (3,), w), ((2, 3), (3,)),
                                       "aten.native_layer_norm.default"),
    "layer_norm_statistics": Case(lambda x: torch.cat(aten.native_layer_norm(
        x, [3], None, None, 1e-5)[1:]), ((2, 3),), "aten.native_layer_norm.default"),
    "rms_norm": Case(lambda x: rms(x)[0], ((3, 2),), "aten._fused_rms_norm.default"),
    "rms_norm_computed_weight": Case(lambda x, w: inference(F.rms_norm)(x, (2,), w),
                                     ((3, 2), (2,)), "aten.rms_norm.default"),
    "fused_rms_norm_computed_weight": Case(
        lambda x, w: inference(aten._fused_rms_norm.default)(x, [2], w, 1e-5)[0],
        ((3, 2), (2,)), "aten._fused_rms_norm.default"),
    "rms_norm_statistics": Case(lambda x: rms(x)[1], ((3, 2),), "aten._fused_rms_norm.default"),
    "batch_norm_eval": Case(lambda x: F.batch_norm(x, like(RM, x), like(RV, x), like(GAMMA, x)),
                            ((2, 3, 2),), "aten.native_batch_norm.default"),
    "batch_norm_eval_computed_weight_and_mean": Case(
        lambda x, w, m: F.batch_norm(x, m, like(RV, x), w, like(GAMMA, x)),
        ((2, 3, 2), (3,), (3,)), "aten.native_batch_norm.default"),
    "batch_norm_eval_legit_computed_bias": Case(
        lambda x, b: aten._native_batch_norm_legit_no_training(
            x, None, b, like(RM, x), like(RV, x), 0.1, 1e-5)[0], ((2, 3, 2), (3,)),
        "aten._native_batch_norm_legit_no_training.default"),
    "batch_norm_of_a_constant_computed_weight": Case(
        lambda w: F.batch_norm(like(W43, w).reshape(2, 3, 2), None, None, w, training=True),
        ((3,),), "aten.native_batch_norm.default"),
    "batch_norm_eval_legit": Case(lambda x: aten._native_batch_norm_legit_no_training(
        x, None, None, like(RM, x), like(RV, x), 0.1, 1e-5)[0], ((2, 3, 2),),
        "aten._native_batch_norm_legit_no_training.default"),
    "batch_norm_train": Case(lambda x: F.batch_norm(x, None, None, training=True),
                             ((2, 3, 2),), "aten.native_batch_norm.default"),
    "batch_norm_train_statistics": Case(lambda x: torch.cat(aten.native_batch_norm(
        x, None, None, None, None, True, 0.1, 1e-5)[1:]), ((2, 3, 2),),
        "aten.native_batch_norm.default"),
    "batch_norm_train_running_mean": Case(_running, ((2, 3, 2),),
                                          "aten.native_batch_norm.default"),
    "batch_norm_legit_train": Case(lambda x: aten._native_batch_norm_legit(
        x, None, None, like(RM, x), like(RV, x), True, 0.1, 1e-5)[0], ((2, 3, 2),),
        "aten._native_batch_norm_legit.default"),
    "batch_norm_legit_eval": Case(lambda x: aten._native_batch_norm_legit(
        x, None, None, like(RM, x), like(RV, x), False, 0.1, 1e-5)[0], ((2, 3, 2),),
        "aten._native_batch_norm_legit.default"),
    "batch_norm_functional_statistics": Case(lambda x: torch.cat(
        aten._native_batch_norm_legit_functional(
            x, None, None, like(RM, x), like(RV, x), True, 0.1, 1e-5)[1:]), ((2, 3, 2),),
        "aten._native_batch_norm_legit_functional.default"),
    "group_norm": Case(lambda x: F.group_norm(x, 1), ((2, 2, 2),),
                       "aten.native_group_norm.default"),
    "group_norm_computed_weight_and_bias": Case(
        lambda x, w, b: F.group_norm(x, 2, w, b), ((2, 2, 2), (2,), (2,)),
        "aten.native_group_norm.default", expect=lambda t: torch.hstack(
            [per_row(2)(t[:, :8]), torch.eye(2).bool().repeat_interleave(2, 0).repeat(2, 2)])),
    "group_norm_statistics": Case(lambda x: torch.cat(aten.native_group_norm(
        x, None, None, 2, 2, 2, 1, 1e-5)[1:]), ((2, 2, 2),), "aten.native_group_norm.default",
        expect=lambda t: per_row(2)(t[:2]).repeat(2, 1)),
    "softmax": Case(lambda x: x.softmax(-1), ((2, 3),), "aten._softmax.default"),
    "log_softmax": Case(lambda x: x.log_softmax(0), ((2, 3),), "aten._log_softmax.default"),
    "softmax_inference": Case(inference(lambda x: x.softmax(1)), ((2, 3),), "aten.softmax.int"),
    # each row (column) keeps two live logits: one alone would be a constant weight of 1
    "softmax_minus_inf_mask": Case(lambda x: (x + minus_inf(x, SPARSE)).softmax(-1), ((3, 3),),
                                   "aten._softmax.default"),
    "softmax_min_and_inf_mask": Case(lambda x: (x + minus_inf(x, SPARSE) + minus_inf(
        x, SPARSE.T, torch.finfo(x.dtype).min)).softmax(0), ((3, 3),), "aten._softmax.default"),
    "safe_softmax_mask": Case(lambda x: aten._safe_softmax(x + minus_inf(x, SPARSE), -1),
                              ((3, 3),), "aten._safe_softmax.default"),
}


# (``batch_norm_legit_*``: an op that writes two tensors in place, its running statistics, and
# returns three new ones; the returned ones had no summary at all before the tracer ruled them)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions(name):
    check(REDUCTIONS[name])


def masked_taps(out_channels, in_channels, k, seed, zeros):
    return const((out_channels, in_channels, k), seed, zeros=zeros)


CONV_W = masked_taps(3, 2, 3, 5, torch.tensor([[[0, 0, 1], [0, 1, 1]], [[1, 0, 1], [0, 0, 0]],
                                               [[0, 1, 1], [1, 1, 1]]]).bool())
SHARED_W = masked_taps(2, 2, 3, 6, torch.tensor([0, 1, 0]).bool().expand(2, 2, 3))
PIXEL_W = const((2, 1, 3, 3), 7, zeros=torch.tensor([[0, 0, 0], [0, 1, 1], [1, 1, 1]]).bool()
                .expand(2, 1, 3, 3))
A_BATCH = const((2, 2, 3), 8, zeros=torch.tensor([[1, 0, 0], [0, 1, 0]]).bool().expand(2, 2, 3))


def channels_alike(x):
    """(1, 2, T): both channels the same input (a summary broadcast over channels)."""
    return x.expand(1, 2, x.shape[-1])


CONTRACTIONS = {
    "mm_dense": Case(lambda x: x @ like(W43, x), ((2, 4),), "aten.mm.default"),
    "mm_structural_zeros_right": Case(lambda x: x @ like(WZ, x), ((2, 3),), "aten.mm.default"),
    "mm_structural_zeros_left": Case(lambda x: like(AZ, x) @ x, ((3, 2),), "aten.mm.default"),
    "mm_dense_left": Case(lambda x: like(W43, x) @ x, ((3, 2),), "aten.mm.default"),
    "mm_two_inputs": Case(lambda x, y: x @ y, ((2, 3), (3, 2)), "aten.mm.default"),
    # zeros computed from the input (a ReLU's) are zero at this run only: no structure
    "mm_by_zeros_of_the_input": Case(lambda x, y: F.relu(x) @ F.relu(y), ((2, 3), (3, 2)),
                                     "aten.mm.default"),
    "mm_rows_alike": Case(lambda x: x.expand(2, 3) @ like(WZ, x), ((2, 1),), "aten.mm.default"),
    "mm_rows_alike_dense": Case(lambda x: x.expand(2, 4) @ like(W43, x), ((2, 1),),
                                "aten.mm.default"),
    "mm_columns_alike": Case(lambda y: like(AZ, y) @ y.expand(3, 4), ((1, 4),),
                             "aten.mm.default"),
    "mm_columns_alike_zero_row": Case(lambda y: like(AZ * torch.tensor([[1.0], [0.0]]), y)
                                      @ y.expand(3, 4), ((1, 4),), "aten.mm.default"),
    "mm_columns_alike_dense": Case(lambda y: like(W43, y) @ y.expand(3, 2), ((1, 2),),
                                   "aten.mm.default"),
    "mm_columns_alike_zeros_both": Case(lambda y: like(AZ, y) @ (y.expand(3, 4) * like(WZ, y)),
                                        ((1, 4),), "aten.mm.default"),
    "bmm": Case(lambda x: x @ like(A_BATCH, x).transpose(1, 2), ((2, 2, 3),), "aten.bmm.default"),
    "bmm_left_constant": Case(lambda x: like(A_BATCH, x) @ x, ((2, 3, 2),), "aten.bmm.default"),
    "matmul_inference": Case(inference(lambda x: x @ like(WZ, x)), ((2, 3),),
                             "aten.matmul.default"),
    "matmul_vector_inference": Case(inference(lambda x: x @ like(WZ, x)), ((3,),),
                                    "aten.matmul.default"),
    "matmul_by_a_vector_inference": Case(inference(lambda x: like(AZ, x) @ x), ((3,),),
                                         "aten.matmul.default"),
    "mv": Case(lambda x: torch.mv(like(AZ, x), x), ((3,),), "aten.mv.default"),
    "mv_of_an_input_matrix": Case(lambda x: torch.mv(x, like(AZ[1], x)), ((2, 3),),
                                  "aten.mv.default"),
    "dot": Case(lambda x: torch.dot(x, like(AZ[0], x)).reshape(1), ((3,),), "aten.dot.default"),
    "vector_times_matrix": Case(lambda x: x @ like(WZ, x), ((3,),), "aten.mm.default"),
    "linear": Case(lambda x: F.linear(x, like(WZ.T, x), like(W43[:, 0], x)), ((2, 3),),
                   "aten.addmm.default"),
    "linear_computed_bias": Case(lambda x, b: F.linear(x, like(WZ.T, x), b), ((2, 3), (4,)),
                                 "aten.addmm.default"),
    "addmm_beta_zero": Case(lambda x, b: torch.addmm(b, x, like(WZ, x), beta=0),
                            ((2, 3), (4,)), "aten.addmm.default"),
    "addmv": Case(lambda x, b: torch.addmv(b, like(AZ, x), x), ((3,), (2,)), "aten.addmv.default"),
    "baddbmm": Case(lambda x, b: torch.baddbmm(b, like(A_BATCH, x), x), ((2, 3, 2), (2, 1)),
                    "aten.baddbmm.default"),
    "addbmm": Case(lambda x, b: torch.addbmm(b, like(A_BATCH, x), x), ((2, 3, 2), (2, 2)),
                   "aten.addbmm.default"),
    "conv_masked_taps": Case(lambda x: F.conv1d(x, like(CONV_W, x), padding=1), ((1, 2, 4),),
                             "aten.convolution.default"),
    "conv_shared_taps": Case(lambda x: F.conv1d(x, like(SHARED_W, x), padding=2, dilation=2),
                             ((1, 2, 5),), "aten.convolution.default"),
    "conv_one_channel_strided": Case(lambda x: F.conv1d(
        channels_alike(x), like(CONV_W, x), stride=2, padding=2, dilation=2), ((1, 1, 6),),
        "aten.convolution.default"),
    "conv_one_channel_grouped": Case(lambda x: F.conv1d(
        channels_alike(x), like(CONV_W[:2, :1], x), groups=2), ((1, 1, 4),),
        "aten.convolution.default"),
    "conv_one_channel_shifts": Case(lambda x: F.conv1d(
        channels_alike(x), like(SHARED_W, x), stride=2, padding=1), ((1, 1, 5),),
        "aten.convolution.default"),
    "conv_grouped": Case(lambda x: F.conv1d(x, like(CONV_W[:2, :1], x), groups=2), ((1, 2, 4),),
                         "aten.convolution.default"),
    "conv2d_masked": Case(lambda x: F.conv2d(x, like(PIXEL_W, x), padding=1), ((1, 1, 3, 3),),
                          "aten.convolution.default"),
    "conv_transposed": Case(lambda x: F.conv_transpose1d(x, like(CONV_W, x), stride=2),
                            ((1, 3, 3),),
                            "aten.convolution.default"),
    "conv_transposed_shared_taps": Case(lambda x: F.conv_transpose1d(
        x, like(SHARED_W, x), stride=2, padding=1, output_padding=1), ((1, 2, 3),),
        "aten.convolution.default"),
    "conv_computed_bias": Case(lambda x, b: F.conv1d(x, like(CONV_W, x), b), ((1, 2, 4), (3,)),
                               "aten.convolution.default"),
    "conv_constant_input_computed_bias": Case(lambda b: F.conv1d(
        torch.ones(1, 2, 4, dtype=b.dtype), like(CONV_W, b), b), ((3,),),
        "aten.convolution.default"),
    "conv_computed_weight": Case(lambda x, w: F.conv1d(x, w), ((1, 1, 3), (1, 1, 2)),
                                 "aten.convolution.default", expect=everything),
}


@pytest.mark.parametrize("name", sorted(CONTRACTIONS))
def test_contractions(name):
    check(CONTRACTIONS[name])


def attention_bound(q, k, v, allowed=None, n=None, extra=(), logsumexp=False):
    """The bound attention must prove, from the input columns each element of ``q``, ``k``,
    ``v`` reads (int tensors of their shapes): ``out[i, e]`` reads every feature of ``q[i]``
    and of ``k[j]``, and feature ``e`` of ``v[j]``, for each key ``j`` allowed to query ``i``
    (every key when ``allowed`` is None), and every column in ``extra`` (an input mask)."""
    b, h, length, _ = q.shape
    groups = h // k.shape[1]
    n = n if n is not None else int(max(q.max(), k.max(), v.max())) + 1 + len(extra)
    allowed = torch.ones(length, k.shape[2], dtype=torch.bool) if allowed is None else allowed
    out = torch.zeros(b, h, length, v.shape[-1], n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for i in range(length):
                row = out[bi, hi, i]
                row[:, q[bi, hi, i]] = True
                row[:, list(extra)] = True
                for j in allowed[i].nonzero().flatten().tolist():
                    row[:, k[bi, hi // groups, j]] = True
                    row[torch.arange(v.shape[-1]), v[bi, hi // groups, j]] = True
    if logsumexp:
        out = out.any(3)
    return out.reshape(-1, n)


def columns(*shapes):
    """The input columns of separate inputs of these shapes, in order."""
    out, start = [], 0
    for s in shapes:
        count = torch.Size(s).numel()
        out.append(torch.arange(start, start + count).reshape(s))
        start += count
    return out


def sdpa_case(shapes, allowed=None, extra=0, logsumexp=False, op="flash", **options):
    """q, k, v (and an input mask) as separate inputs."""
    def fn(q, k, v, *mask):
        if mask:
            options["attn_mask"] = (mask[0] > 0) | torch.eye(*mask[0].shape, dtype=torch.bool)
        if logsumexp:
            return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)[1]
        return F.scaled_dot_product_attention(q, k, v, **options)

    cols = columns(*shapes)
    extra = cols[3].flatten().tolist() if len(cols) > 3 else []
    n = sum(c.numel() for c in cols)
    expect = attention_bound(*cols[:3], allowed, n, extra, logsumexp)
    return Case(fn, shapes, f"aten._scaled_dot_product_{op}_attention_for_cpu.default",
                expect=lambda truth: expect)


QKV = ((1, 1, 3, 2),) * 3
CAUSAL = torch.ones(3, 3, dtype=torch.bool).tril()
BAND = CAUSAL & ~torch.ones(3, 3, dtype=torch.bool).tril(-2)  # the key before and the query


def float_mask(dtype):
    """Keys at 0 or -5 are live; -inf, finfo.min, 0.75 and 0.5 (the threshold) finfo.min are
    masked."""
    low = torch.finfo(dtype).min
    return torch.tensor([[0.0, float("-inf"), 0.75 * low], [-5.0, 0.0, low],
                         [0.0, 0.5 * low, 0.0]], dtype=dtype)


def _heads_alike_bound():
    """Four query heads; two key and value heads, both the same input (broadcast heads)."""
    q, x = columns((1, 4, 3, 2), (1, 1, 3, 2))
    kv = x.expand(1, 2, 3, 2)
    return attention_bound(q, kv, kv, CAUSAL)


def _shifted_values(x):
    """q and k see the past only; the values are the next position's: a leak through v."""
    return F.scaled_dot_product_attention(x, x, x.roll(-1, 2), is_causal=True)


def _shifted_values_bound(truth):
    (x,) = columns((1, 1, 4, 2))
    return attention_bound(x, x, x.roll(-1, 2), torch.ones(4, 4, dtype=torch.bool).tril())


torch.manual_seed(0)
LAYER = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).eval()
LAYERS = {torch.float32: LAYER, torch.float64: copy.deepcopy(LAYER).double()}
SQUARE = nn.Transformer.generate_square_subsequent_mask(3)


def encoder(mask=None, **options):
    def fn(x):
        m = mask(x.dtype) if callable(mask) else mask
        return LAYERS[x.dtype](x, src_mask=m, **options)
    return fn


ATTENTION = {
    "sdpa_causal": sdpa_case(QKV, CAUSAL, is_causal=True),
    "sdpa_no_mask": sdpa_case(QKV),
    "sdpa_two_samples_two_heads": sdpa_case(((2, 2, 3, 2),) * 3, CAUSAL, is_causal=True),
    "sdpa_bool_mask": sdpa_case(QKV, BAND, attn_mask=BAND),
    "sdpa_float_mask": Case(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask(q.dtype)),
        QKV, "aten._scaled_dot_product_flash_attention_for_cpu.default",
        expect=lambda t: attention_bound(*columns(*QKV), float_mask(torch.float32) > -10)),
    "sdpa_input_mask": sdpa_case(QKV + ((3, 3),), None),
    "sdpa_grouped_queries": sdpa_case(((1, 4, 2, 2), (1, 2, 3, 2), (1, 2, 3, 2)),
                                      CAUSAL[:2], is_causal=True, enable_gqa=True),
    "sdpa_no_mask_two_heads": sdpa_case(((1, 2, 3, 2),) * 3),
    "sdpa_grouped_queries_as_many_samples": sdpa_case(
        ((4, 4, 2, 1), (4, 2, 2, 1), (4, 2, 2, 1)), CAUSAL[:2, :2], is_causal=True,
        enable_gqa=True),
    "sdpa_grouped_queries_two_samples": sdpa_case(((2, 4, 2, 4), (2, 2, 2, 4), (2, 2, 2, 4)),
                                                  CAUSAL[:2, :2], is_causal=True,
                                                  enable_gqa=True),
    "sdpa_grouped_queries_heads_alike": Case(
        lambda q, x: F.scaled_dot_product_attention(
            q, x.expand(1, 2, 3, 2), x.expand(1, 2, 3, 2), is_causal=True, enable_gqa=True),
        ((1, 4, 3, 2), (1, 1, 3, 2)), "aten._scaled_dot_product_flash_attention_for_cpu.default",
        expect=lambda t: _heads_alike_bound()),
    "sdpa_values_of_the_next_position": Case(
        _shifted_values, ((1, 1, 4, 2),), "aten._scaled_dot_product_flash_attention_for_cpu"
        ".default", expect=_shifted_values_bound),
    "sdpa_logsumexp": sdpa_case(QKV, CAUSAL, logsumexp=True),
    "encoder_float_mask": Case(encoder(lambda dtype: SQUARE.to(dtype)), ((1, 3, 4),),
                               "aten._transformer_encoder_layer_fwd.default"),
    "encoder_bool_mask": Case(encoder(SQUARE.isinf()), ((1, 3, 4),),
                              "aten._transformer_encoder_layer_fwd.default"),
    "encoder_bool_mask_per_head": Case(encoder(SQUARE.isinf().expand(2, 3, 3)), ((1, 3, 4),),
                                       "aten._transformer_encoder_layer_fwd.default"),
    "encoder_float_mask_per_head": Case(encoder(lambda dtype: SQUARE.to(dtype).expand(2, 3, 3)),
                                        ((1, 3, 4),),
                                        "aten._transformer_encoder_layer_fwd.default"),
    "encoder_padding_mask_only": Case(
        encoder(src_key_padding_mask=torch.zeros(1, 3, dtype=torch.bool)), ((1, 3, 4),),
        "aten._transformer_encoder_layer_fwd.default"),
    "encoder_no_mask": Case(encoder(), ((1, 3, 4),),
                            "aten._transformer_encoder_layer_fwd.default"),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention(name):
    check(ATTENTION[name])


def test_efficient_attention_is_ruled_like_flash_attention():
    """The CUDA kernel's rule, traced on the meta device (shapes only): causal pairs for the
    output; its other outputs (a padded logsumexp, the RNG state) get everything."""
    q = torch.empty(1, 1, 3, 2, device="meta")

    def output(i):
        return lambda q, k, v: aten._scaled_dot_product_efficient_attention(
            q, k, v, None, True, 0.0, True)[i]

    bound, ops, lost, _ = proved(output(0), [q, q, q])
    assert "aten._scaled_dot_product_efficient_attention.default" in ops and not lost
    assert torch.equal(bound, attention_bound(*columns(*QKV), CAUSAL))
    for i in (1, 2):
        bound, _, lost, _ = proved(output(i), [q, q, q])
        assert bound.all() and not lost


def test_the_fallback_gives_constants_for_constants_and_everything_otherwise():
    """An op without a rule: each output element may depend on all that any input does."""
    from properties.evidence.certificate.rules import fallback

    tracer = Tracer(3, (3,), torch.arange(3), {}, False)
    x, c = torch.zeros(2), torch.ones(2)
    tracer.track_input(x, torch.tensor([[True, False, False], [False, False, True]]))
    outs = [torch.zeros(2, 2), torch.zeros(())]
    assert fallback(tracer, (c, 1), {}, outs) == [None, None]
    found = fallback(tracer, (c,), {"other": x}, outs)
    width = tracer.n  # the 3 inputs, then the slots of unknown origin (empty here)
    assert [tuple(d.shape) for d in found] == [(1, 1, width), (width,)]
    assert all(deps.dense(d).reshape(-1).tolist() == [True, False, True] + [False] * (width - 3)
               for d in found)


def test_a_registered_rule_is_the_one_the_tracer_uses(monkeypatch):
    """``rule(op)`` registers a function for an op (here a precise rule for ``sort`` along
    a row, which has none): the tracer then applies it instead of the fallback."""
    from properties.evidence.certificate import rules
    from properties.evidence.certificate.rules import base

    monkeypatch.setattr(base, "RULES", dict(base.RULES))
    monkeypatch.setattr(rules, "RULES", base.RULES)
    sort = aten.sort.default
    x = torch.randn(2, 3)

    def rows(ctx, args, kwargs, outs):  # each row sorted on its own
        d = ctx.deps(args[0]).any(1, keepdim=True)
        return [d, d]

    assert base.rule(sort, aten.sort.stable)(rows) is rows
    assert base.RULES[sort] is rows and base.RULES[aten.sort.stable] is rows
    bound, ops, lost, _ = proved(lambda x: x.sort(1).values, [x])
    assert "aten.sort.default" in ops and not lost
    assert torch.equal(bound, per_row(2)(bound))


def summary_shape(fn, x):
    n = x.numel()
    tracer = Tracer(n, (n,), torch.arange(n), {}, False)
    tracer.know(preexisting(None, [fn]))
    x = x.clone()
    tracer.track_input(x, torch.eye(n, dtype=torch.bool).reshape(*x.shape, n))
    with torch.no_grad(), tracer:
        y = fn(x)
    return tuple(deps.columns(tracer.deps(y), n).shape)


@pytest.mark.parametrize("fn, shape, summary", [
    # a dense product: every feature of a row depends on the same inputs: one bit per input
    (lambda x: x @ like(W43, x), (2, 4), (2, 1, 8)),
    # structural zeros that leave every output column live: still one row of bits
    (lambda x: x.expand(2, 3) @ like(WZ[:, :3], x), (2, 1), (2, 1, 2)),
    (lambda x: like(AZ[:, :2], x) @ x.expand(2, 3), (1, 3), (1, 3, 3)),
    (lambda x: like(WZ[:, :3].T, x) @ x.expand(3, 2), (1, 2), (1, 2, 2)),
    (lambda x: F.conv1d(x.expand(1, 2, 4), like(SHARED_W, x), padding=1), (1, 1, 4),
     (1, 1, 4, 4)),
])
def test_summaries_stay_broadcast_where_every_element_is_alike(fn, shape, summary):
    """The cost of a summary is kept at position granularity (docs of ``deps``): a summary
    broadcast over features stays broadcast through a product or a convolution that treats
    every feature alike."""
    x = torch.randn(shape)
    assert summary_shape(fn, x) == summary
