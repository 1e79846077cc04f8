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

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from properties.certificate.deps import expanded
from properties.certificate.tracer import Tracer

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
    inputs = [x.clone() for x in inputs]
    start = 0
    for x in inputs:
        eye = torch.eye(n, dtype=torch.bool)[start : start + x.numel()]
        tracer.track_input(x, eye.reshape(*x.shape, n))
        start += x.numel()
    ruled = Ruled()
    with torch.no_grad(), tracer, ruled:
        y = fn(*inputs)
    d = tracer.deps(y)
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
    "index_select_input_index": Case(lambda x: x.index_select(0, (x[:, 0] > 0).long()),
                                     ((3, 2),), "aten.index_select.default", expect=everything,
                                     lost="aten.index_select.default (input-dependent index)"),
    "index_ints": Case(lambda x: x[:, IDX], ((2, 3),), "aten.index.Tensor"),
    "index_bools": Case(lambda x: x[:, KEEP], ((2, 3),), "aten.index.Tensor"),
    "index_two_axes": Case(lambda x: x[IDX[:2], IDX[1:]], ((3, 3),), "aten.index.Tensor"),
    "index_last_axis": Case(lambda x: x[:, :, IDX[1:]], ((2, 2, 3),), "aten.index.Tensor"),
    "index_a_broadcast_summary": Case(lambda x: dense(x)[IDX[:2]], ((3, 4),),
                                      "aten.index.Tensor"),
    "index_input_ints": Case(lambda x: x[(x[:, 0] > 0).long()], ((3, 2),), "aten.index.Tensor",
                             expect=everything, lost="aten.index.Tensor (input-dependent index)"),
    "index_input_bools": Case(lambda x: x[x > 0].sum().reshape(1), ((2, 2),),
                              "aten.index.Tensor", expect=everything, path_dependent=True,
                              lost="aten.index.Tensor (input-dependent index)"),
    "gather": Case(lambda x: x.gather(1, torch.tensor([[2, 0], [1, 1]])), ((2, 3),),
                   "aten.gather.default"),
    "gather_input_index": Case(lambda x: x.gather(1, (x > 0).long()), ((2, 2),),
                               "aten.gather.default", expect=everything,
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
