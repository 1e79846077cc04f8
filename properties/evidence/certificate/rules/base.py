"""The registry of rules, the sound fallback, and helpers every family of rules uses."""

import torch

from ..deps import compress, constant_where, dense, everything, expanded, in_form, union_rows

aten = torch.ops.aten
RULES: dict = {}  # OpOverload (full name: a custom op never gets aten's rule) -> rule
HIGHER_ORDER: dict = {}  # a higher-order operator's name (flex_attention) -> rule
# A softmax weight whose logit is a constant at or below this fraction of the dtype's most
# negative value is exactly zero for every finite input-dependent logit of the row (exp
# underflows): the masks of GPT-2 and friends fill with finfo.min, others with -inf.
DEAD_FRACTION = 0.5


def rule(*ops, runs: bool = False):
    """Register ``fn`` as the rule of ``ops``. ``runs``: written with the helpers of ``deps``
    that take either form of summary; a rule without it only knows the dense form, and the
    tracer runs it there when the certificate uses runs (:func:`through_dense`)."""
    def register(fn):
        for op in ops:
            RULES[op] = fn
        fn.runs = runs or getattr(fn, "runs", False)
        return fn

    return register


def knows_runs(fn) -> bool:
    return getattr(fn, "runs", False)


class _Dense:
    """The tracer as a dense-only rule sees it: summaries in the dense form, and what the rule
    says of the tensors it writes back in the run form."""

    def __init__(self, ctx):
        object.__setattr__(self, "_ctx", ctx)

    def deps(self, t):
        return dense(self._ctx.deps(t))

    def assume(self, t, d):
        self._ctx.assume(t, in_form(d, "runs"))

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value):  # a rule's word (``path_dependent``) is the tracer's
        setattr(self._ctx, name, value)


def through_dense(fn, ctx, args, kwargs, outs):
    """A dense-only rule on a run-form certificate: its inputs made dense, its outputs made runs
    again (the same bound, at the dense form's cost)."""
    ctx.converted[ctx.op_name] += 1
    found = fn(_Dense(ctx), args, kwargs, outs)
    return [in_form(d, "runs") for d in found]


def higher_order(*names):
    def register(fn):
        for name in names:
            HIGHER_ORDER[name] = fn
        return fn

    return register


def _dim(d: int, ndim: int) -> int:
    return d % max(ndim, 1)


def fallback(ctx, args, kwargs, outs):  # (either form)
    """Sound for any op: each output element may depend on everything any input depends on."""
    row = union_rows([everything(ctx.deps(t)) for t in ctx.tensors_in(args, kwargs)])
    if row is None:
        return [None] * len(outs)
    return [row.reshape((1,) * o.dim() + (-1,)) for o in outs]


def _reshaped(d, shape, new_shape):
    """The summary of a tensor of ``shape`` (row-major order) at ``new_shape`` (a view where
    the expanded summary allows one, a copy otherwise)."""
    return compress(expanded(d, shape).reshape(*new_shape, d.shape[-1]))


def _spread(d, out):
    """An index's dependencies, given to every element it selects (conservative)."""
    row = everything(d)
    return None if row is None else row.reshape((1,) * out.dim() + (-1,))


def _dead_logits(x: torch.Tensor, d) -> torch.Tensor | None:
    """Constant logits at or below ``DEAD_FRACTION * finfo.min`` (or -inf)."""
    if not x.is_floating_point():
        return None
    threshold = DEAD_FRACTION * torch.finfo(x.dtype).min
    return constant_where(x, d, lambda v: v <= threshold)


fallback.runs = True
