"""Recurrences: RNN kernels and triangular solves, where element t depends on elements 0..t
(or t..T-1 for a reversed direction) through the carried state.

``mkldnn_rnn_layer`` is one LSTM (or GRU/RNN) layer in one direction, as PyTorch runs it on CPU:
output t depends on the inputs up to t (the textbook causal layer), on the initial state and on
the weights; the final states on everything. ``linalg_solve_triangular`` with a lower-triangular
matrix is forward substitution: row i of the solution depends on rows 0..i (of the right-hand
side, and of the matrix): the chunked delta rules of linear attention solve one per chunk.
"""

from ..deps import any_over, compress, cumulative, everything, union
from .base import aten, rule


def running(d, axis: int, reverse: bool = False):
    """The union of ``d`` over indices 0..t along ``axis`` (t..end when ``reverse``), in either
    form of summary."""
    if d is None or d.shape[axis] == 1:
        return d
    if reverse:
        d = d.flip([axis])
    d = cumulative(d, axis)
    return d.flip([axis]) if reverse else d


@rule(aten.mkldnn_rnn_layer.default, runs=True)
def rnn_layer(ctx, args, kwargs, outs):
    x, weights, hx, cx = args[0], args[1:5], args[5], args[6]
    reverse = bool(args[7])
    # the layer gets its input time-first (its batch_first flag is passed through, the input
    # was transposed before): the batch axis is the initial state's
    time = 1 if x.shape[1] != hx.shape[0] and x.shape[0] == hx.shape[0] else 0
    steps = any_over(ctx.deps(x), [2])  # (T, B, 1, N) or (B, T, 1, N)
    state = union([ctx.deps(hx), ctx.deps(cx)] + [ctx.deps(w) for w in weights], 2)
    state = None if state is None else everything(state).reshape(1, 1, -1)
    output = union([running(steps, time, reverse), state], 3)
    final = union([any_over(steps, [time], keepdim=False) if steps is not None else None,
                   state], 2)
    rest = [None if final is None else compress(final.reshape((1,) * o.dim() + (-1,))
                                                 if o.dim() != 2 else final)
            for o in outs[1:]]
    if len(outs) > 3:  # the workspace: anything the layer computed
        row = union([everything(output), everything(final)], 0) if output is not None else None
        rest[-1] = None if row is None else row.reshape((1,) * outs[3].dim() + (-1,))
    return [output] + rest


@rule(aten.linalg_solve_triangular.default, runs=True)
def solve_triangular(ctx, args, kwargs, outs):
    """``A X = B`` (``left``) or ``X A = B``: substitution runs along the rows of ``X``
    (columns when not ``left``), forward for a lower ``A`` on the left."""
    a, b = args[0], args[1]
    upper = kwargs.get("upper", args[2] if len(args) > 2 else False)
    left = kwargs.get("left", args[3] if len(args) > 3 else True)
    nd = outs[0].dim()
    da, db = ctx.deps(a), ctx.deps(b)
    axis = nd - 2 if left else nd - 1  # the axis substitution runs along
    reverse = bool(upper) == bool(left)  # lower-left and upper-right run forward
    parts = [running(db, axis, reverse) if db is not None else None]
    if da is not None:
        # row i of A (left) or column i (right) is read when solving for index i
        lines = any_over(da, [nd - 1 if left else nd - 2])
        parts.append(running(lines, axis, reverse))
    return [compress(union(parts, nd))]
