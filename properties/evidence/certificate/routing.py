"""Token dispatch by a permutation: dropless mixture-of-experts routing, proved in the frame the
permutation undoes.

A dropless router sorts the (token, expert) pairs by expert (``sort``), gathers the tokens in
that order, runs each group through its expert (``_grouped_mm`` with the group boundaries), and
puts the rows back (``x[inverse]``, ``index_add_``, ``scatter_add``). Each row's result depends
on its own token and its own expert choice; but the permutation ``P`` depends on every token's
choice, so an op-by-op bound says "every row may be any token" and proves nothing.

The argument. A tensor tagged *rows of P* (:class:`Info` with ``perm``) is ``O[P]`` for a
tensor ``O`` of the *original frame* whose summary ``orig`` is known: for every input, along
this path, ``R = O[P]`` with ``O``'s element ``e`` depending on ``orig[e]`` only. The sort makes
the first ones: ``P = arange[P]`` (``O`` a constant) and the sorted values ``ids[P]``. An op
that treats rows alike (pointwise with operands broadcast over the rows, views and reductions
that keep axis 0 as the rows, products with a right operand the same for every row) maps
``O[P]`` to ``f(O)[P]``; ``f(O)``'s summary is the op's ordinary rule run on the original
frame: the tagged operands' values un-permuted (``R[P^-1]``, taken before the op runs) with
their ``orig`` summaries. A gather ``x[I]`` of an untagged ``x`` by rows of ``P`` is
``x[I_O][P]``. ``_grouped_mm`` is per row only when its offsets are the exact group boundaries
of the rows' own sorted expert ids (``cumsum`` of ``histc``/``bincount`` of the same ids, every
one in ``[0, E)``, sorted ascending, ``E`` experts): then row ``i`` of the original frame is
``O[i] @ W[ids[i]]``. The proof steps, where the coarse bound is replaced: ``R[P^-1]`` is ``O``
(``P^-1`` from ``argsort(P)`` or ``inv[P] = arange``), ``out[P] = R`` is ``O``, and a sum of rows
into an untagged target at rows of ``P`` (``index_add``, ``index_put`` accumulating,
``scatter_add`` along axis 0) is the same sum in the original frame (a sum does not see the
order of its terms; the proof is of exact arithmetic, as the FFT convolution's).

A tag holds while its tensor is untouched (version counter, geometry, and the summary object the
tracer holds: any write, taint or change of either ends it). Anything else a tagged tensor meets
(a capacity that truncates groups, a sum over rows, offsets that are not the boundaries, another
permutation) ends the tags, and the ordinary bound, computed for every op as always, stands.
Ops whose output shape is read from values (``nonzero``, boolean masks: a loop over experts)
still reach Python and are not proved.
"""

from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from . import rules
from .deps import any_over, everything, is_runs, union
from .origin import storage_key, version

aten = torch.ops.aten

STARTS = {"topk", "argmax", "argmin", "max", "min", "sort", "argsort"}
CARRY = {"view", "reshape", "_unsafe_view", "flatten", "clone", "contiguous", "_to_copy",
         "alias", "detach", "lift_fresh"}  # the same values (a multiset, a count) move on
VIEWS = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze",
         "split", "split_with_sizes", "chunk", "narrow", "slice", "select", "expand",
         "transpose", "permute", "unbind", "clone", "contiguous", "_to_copy", "alias", "detach"}
REDUCTIONS = {"sum", "mean", "amax", "amin"}
NORMS = {"native_layer_norm", "_fused_rms_norm", "rms_norm"}
SOFTMAX = {"_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax"}
PRODUCTS = {"mm", "addmm"}
EXACT_MANTISSA = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


@dataclass(eq=False)
class Perm:
    p: torch.Tensor  # the permutation's value at this run (a copy)
    inv: torch.Tensor  # its inverse
    ids: object  # summary of the sorted tensor (the original frame's expert ids)
    key: object  # the sorted tensor's multiset of values (a :class:`Values`), or None
    ascending: bool

    @property
    def n(self) -> int:
        return self.p.shape[0]


@dataclass(eq=False)
class Values:
    """Integers in ``[0, bound)``: a top-k's or an argmax's indices. One object per multiset:
    tensors that share it hold the same values, in some order and shape."""
    bound: int


@dataclass(eq=False)
class Groups:
    key: Values  # the multiset counted
    bins: int
    cumulative: bool  # offsets (running counts), not counts
    total: int  # how many ids were counted: every count and offset lies in [0, total]


@dataclass(eq=False)
class Info:
    stamp: tuple
    coarse: object  # the summary the tracer held when tagged (the same object, or no tag)
    perm: Perm | None = None  # rows of this permutation
    orig: object = None  # their summary in the original frame
    values: Values | None = None
    groups: Groups | None = None
    inverse: Perm | None = None  # this tensor is ``inverse.p``'s inverse


def tags(tracer) -> WeakTensorKeyDictionary:
    found = getattr(tracer, "_routes", None)
    if found is None:
        found = tracer._routes = WeakTensorKeyDictionary()
    return found


def _stamp(t: torch.Tensor, bump: int = 0) -> tuple:
    return (version(t) + bump, tuple(t.shape), t.stride(), t.storage_offset(), t.dtype,
            torch._C.TensorBase.data_ptr(t))


def valid(tracer, t) -> Info | None:
    """``t``'s tag, while nothing touched ``t`` since it was tagged."""
    if not isinstance(t, torch.Tensor):
        return None
    info = tags(tracer).get(t)
    if info is None:
        return None
    try:
        same = _stamp(t) == info.stamp
    except Exception:
        same = False
    if not same or tracer.table.get(t) is not info.coarse:
        tags(tracer).pop(t, None)
        return None
    return info


def _tag(tracer, t: torch.Tensor, **fields) -> None:
    coarse = tracer.table.get(t)
    if coarse is None or version(t) < 0:  # a constant, or no counter to tell writes
        return
    if fields.get("perm") is None and not any(fields.get(k) for k in ("values", "groups",
                                                                       "inverse")):
        return
    # a tensor the op writes has its counter bumped after the op returns (autograd's
    # ADInplaceOrView kernel, above the mode): the tracer's own allowance for it
    bump = tracer.bumps if any(t is w for w in getattr(tracer, "_route_written", ())) else 0
    base = getattr(tracer, "_route_base", None)
    if base is not None and not bump:
        # a view's counter becomes its base's once the op returns (the same kernel)
        bump = max(0, base - version(t))
    try:
        stamp = _stamp(t, bump)
        old = tags(tracer).get(t)
        if old is not None and old.stamp == stamp and old.coarse is coarse:  # more facts
            fields = {**{k: v for k, v in vars(old).items() if k not in ("stamp", "coarse")},
                      **{k: v for k, v in fields.items() if v is not None or k == "orig"}}
        tags(tracer)[t] = Info(stamp, coarse, **fields)
    except Exception:  # no geometry to stamp (no storage): no tag
        return


# -- before an op: the original frame of its operands ---------------------------------------------

@dataclass
class Plan:
    name: str
    infos: dict  # id(input) -> its valid Info
    args: tuple = ()  # the operands in the original frame (tagged rows un-permuted)
    kwargs: dict = None
    deps: dict = None  # id(operand in the frame) -> its summary there
    keep: list = None  # the un-permuted copies (alive while ids key them)
    lookup: bool = False  # a constant integer table read at indices from the input


def before(tracer, func, args, kwargs, inputs) -> Plan | None:
    """Before an op runs: what it will need to say what its outputs are (None: nothing)."""
    try:
        return _plan(tracer, func, args, kwargs, inputs)
    except Exception:  # no frame: no tags from this op, the ordinary bound stands
        return None


def _plan(tracer, func, args, kwargs, inputs) -> Plan | None:
    name = func._schema.name.split("::")[-1] if func.namespace == "aten" else ""
    if not name:
        return None
    lookup = name == "index" and _lookup(tracer, args)
    if name not in STARTS and not lookup and not len(tags(tracer)):
        return None
    infos = {}
    for x in inputs:
        info = valid(tracer, x)
        if info is not None:
            infos[id(x)] = info
    if not infos and name not in STARTS and not lookup:
        return None
    plan = Plan(name, infos, lookup=lookup)
    perms = {id(i.perm): i.perm for i in infos.values() if i.perm is not None}
    if len(perms) == 1:  # the original frame: values before the op (it may write them)
        (perm,) = perms.values()
        deps, keep = {}, []

        def frame(x):
            if not isinstance(x, torch.Tensor):
                return x
            info = infos.get(id(x))
            if info is not None and info.perm is perm:
                y = x.index_select(0, perm.inv.to(x.device))
                deps[id(y)] = info.orig
            else:
                y = x
                deps[id(y)] = tracer.deps(x)
            keep.append(y)
            return y

        plan.args, plan.kwargs = tree_map(frame, (tuple(args), dict(kwargs)))
        plan.deps, plan.keep = deps, keep
    return plan


# -- after an op: tag what it made, or replace the coarse bound where a proof step ends ------------

def after(tracer, plan: Plan, func, args, kwargs, outs, written) -> None:
    if written and any(not any(o is w for w in written) for o in outs):
        return  # writes some tensors and returns others: not an op this module knows
    targets = written or outs
    handler = _STARTERS.get(plan.name)
    from .tracer import _returns_views

    tracer._route_written = written
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    tracer._route_base = version(first) if first is not None and _returns_views(func) else None
    try:
        if handler is not None and handler(tracer, plan, func, args, kwargs, targets):
            return
        if plan.infos:
            _follow(tracer, plan, func, args, kwargs, targets, bool(written))
        if plan.lookup:  # (besides what the index's rows are)
            _start_lookup(tracer, plan, func, args, kwargs, targets)
    except Exception:  # a handler that cannot say: no tag, the ordinary bound stands
        return
    finally:
        tracer._route_written, tracer._route_base = (), None


def _follow(tracer, plan, func, args, kwargs, outs, inplace):
    name, infos = plan.name, plan.infos
    first = infos.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
    if name in CARRY and first is not None and len(outs) == 1 and not inplace:
        extra = {}
        if func._overloadname == "dtype":  # a bit cast: rows stay rows, values do not
            pass
        elif first.values is not None and _exact_cast(first.values, outs[0]):
            extra = dict(values=first.values)
        elif first.groups is not None and _exact_cast(Values(first.groups.total + 1), outs[0]):
            extra = dict(groups=first.groups)
        if first.perm is None and extra:
            _tag(tracer, outs[0], **extra)
            return
        if first.perm is not None:
            _rowwise(tracer, plan, func, args, kwargs, outs, first.perm, extra)
            return
    if name == "cat" and not inplace and len(outs) == 1:  # ids side by side: ids again
        found = [infos.get(id(x)) for x in args[0]]
        if all(f is not None and f.values is not None and f.perm is None for f in found):
            _tag(tracer, outs[0], values=Values(max(f.values.bound for f in found)))
        return
    special = _SPECIAL.get(name)
    if special is not None:
        special(tracer, plan, func, args, kwargs, outs)
        return
    perms = {id(i.perm): i.perm for i in infos.values() if i.perm is not None}
    if len(perms) == 1:
        _rowwise(tracer, plan, func, args, kwargs, outs, next(iter(perms.values())), {})


def _exact_cast(values: Values, out: torch.Tensor) -> bool:
    """Integers in ``[0, bound)`` survive a cast to ``out``'s dtype."""
    if out.dtype in EXACT_MANTISSA:
        return values.bound <= 2 ** EXACT_MANTISSA[out.dtype]
    if out.dtype == torch.bool or out.is_complex():
        return False
    return values.bound - 1 <= torch.iinfo(out.dtype).max


def _dim_arg(args, kwargs, position, name, default):
    if len(args) > position and not isinstance(args[position], bool):
        return args[position]
    return kwargs.get(name, default)


def _start_selection(tracer, plan, func, args, kwargs, outs):
    x = args[0]
    if plan.name == "topk":
        dim = _dim_arg(args, kwargs, 2, "dim", -1)
        indices = outs[1]
    elif plan.name in ("max", "min"):  # (values, indices) along one axis
        if func._overloadname != "dim" or len(outs) != 2:
            return True
        dim, indices = args[1], outs[1]
    else:  # argmax / argmin along one axis
        dim = _dim_arg(args, kwargs, 1, "dim", None)
        if dim is None:
            return True
        indices = outs[0]
    if x.dim() == 0 or indices.dtype != torch.int64:
        return True
    _tag(tracer, indices, values=Values(x.shape[dim % x.dim()]))
    return True


def _start_sort(tracer, plan, func, args, kwargs, outs):
    x = args[0]
    stable = func._overloadname == "stable"
    if stable:
        dim, descending = kwargs.get("dim", -1), kwargs.get("descending", False)
    else:
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
        descending = args[2] if len(args) > 2 else kwargs.get("descending", False)
    if x.dim() != 1 or dim not in (0, -1) or x.shape[0] < 1:
        return True
    indices = outs[-1] if plan.name == "sort" else outs[0]
    if indices.dtype != torch.int64:
        return True
    info = plan.infos.get(id(x))
    if info is not None and info.perm is not None and info.orig is None and not descending \
            and torch.equal(
            plan.args[0], torch.arange(x.shape[0], device=x.device, dtype=x.dtype)):
        _tag(tracer, indices, inverse=info.perm)  # argsort(P) is P's inverse
        return True
    p = indices.detach().clone()
    perm = Perm(p, torch.argsort(p), tracer.deps(x),
                info.values if info is not None else None, not descending)
    _tag(tracer, indices, perm=perm, orig=None)
    if plan.name == "sort":  # the sorted values: ids[P], the same multiset
        _tag(tracer, outs[0], perm=perm, orig=tracer.deps(x),
             values=info.values if info is not None else None)
    return True


def _lookup(tracer, args) -> bool:
    """``table[tokens]``: a constant integer table read at indices from the input."""
    table = args[0]
    return isinstance(table, torch.Tensor) and tracer.deps(table) is None and \
        not table.is_floating_point() and not table.is_complex() and table.dtype != torch.bool \
        and table.numel() > 0 and any(tracer.deps(i) is not None for i in args[1]
                                      if isinstance(i, torch.Tensor))


def _start_lookup(tracer, plan, func, args, kwargs, outs):
    """A hash router's experts: whatever the index, the values are the constant table's, all
    in ``[0, max + 1)`` (read from the constant: the same for every input)."""
    table = args[0]
    low, high = int(table.min()), int(table.max())
    if low >= 0 and len(outs) == 1:
        _tag(tracer, outs[0], values=Values(high + 1))
    return True


_STARTERS = {"topk": _start_selection, "argmax": _start_selection,
             "argmin": _start_selection, "max": _start_selection, "min": _start_selection,
             "sort": _start_sort, "argsort": _start_sort}


# -- ops that treat rows alike ---------------------------------------------------------------------

def _rowwise(tracer, plan, func, args, kwargs, outs, perm, extra):
    """An op that treats rows alike: its outputs are rows of ``P``, with the summary its rule
    gives in the original frame."""
    n = perm.n
    if not outs or any(o.dim() == 0 or o.shape[0] != n for o in outs):
        return
    if not _keeps_rows(plan, func, args, kwargs, outs, perm):
        return
    found = _in_frame(tracer, plan, func, outs)
    if found is None:
        return
    for o, d in zip(outs, found, strict=True):
        _tag(tracer, o, perm=perm, orig=d, **extra)


def _operands(plan, args, kwargs):
    leaves, _ = tree_flatten((args, kwargs))
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _broadcast_ok(plan, tensors, out_dim, perm) -> bool:
    """Rows of ``P`` at axis 0 of the output, every other operand the same for every row."""
    for x in tensors:
        info = plan.infos.get(id(x))
        if info is not None and info.perm is perm:
            if x.dim() != out_dim or x.shape[0] != perm.n:
                return False
        elif info is not None:
            return False  # another tag (an inverse, offsets): not rows of data
        elif x.dim() >= out_dim and x.shape[0] != 1:
            return False  # rows in the token order, mixed with permuted ones
    return True


def _keeps_rows(plan, func, args, kwargs, outs, perm) -> bool:
    name = plan.name
    if torch.Tag.nondeterministic_seeded in func.tags:
        return False  # random numbers drawn in the permuted order: not the same per row
    tensors = _operands(plan, args, kwargs)
    info0 = plan.infos.get(id(args[0])) if isinstance(args[0], torch.Tensor) else None
    own = (func.namespace == "aten" and torch.Tag.pointwise in func.tags) or \
        rules.RULES.get(func) is rules.pointwise
    if own or name in ("where", "masked_fill", "_to_copy", "clone", "contiguous"):
        return all(o.dim() == max(x.dim() for x in tensors) for o in outs) and \
            _broadcast_ok(plan, tensors, outs[0].dim(), perm)
    if info0 is None or info0.perm is not perm:
        return name in PRODUCTS and name == "addmm" and _product_ok(plan, args, perm)
    x, nd = args[0], args[0].dim()
    if len(tensors) > 1 and name not in NORMS and name not in PRODUCTS:
        return False
    if name in ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "alias", "detach"):
        return all(o.shape[0] == x.shape[0] for o in outs)
    if name == "expand":
        return all(o.dim() == nd and o.shape[0] == x.shape[0] for o in outs)
    if name == "unsqueeze":
        return args[1] % (nd + 1) != 0
    if name == "squeeze":
        dims = args[1] if len(args) > 1 else list(range(nd))
        dims = [dims] if isinstance(dims, int) else list(dims)
        return all(d % nd != 0 for d in dims)
    if name in ("split", "split_with_sizes", "chunk"):
        return _dim_arg(args, kwargs, 2, "dim", 0) % nd != 0
    if name in ("narrow", "slice", "select", "unbind"):
        return _dim_arg(args, kwargs, 1, "dim", 0) % nd != 0
    if name == "transpose":
        return args[1] % nd != 0 and args[2] % nd != 0
    if name == "permute":
        return list(args[1])[0] % nd == 0
    if name in REDUCTIONS:
        dims = _dim_arg(args, kwargs, 1, "dim", None)
        dims = [dims] if isinstance(dims, int) else dims
        return bool(dims) and all(d % nd != 0 for d in dims)
    if name in SOFTMAX:
        return args[1] % nd != 0
    if name in NORMS:
        return len(args[1]) < nd and all(
            plan.infos.get(id(w)) is None for w in tensors[1:])
    if name in PRODUCTS:
        return _product_ok(plan, args, perm)
    return False


def _product_ok(plan, args, perm) -> bool:
    """``R @ W`` (``addmm``: ``b + R @ W``): the right operand the same for every row."""
    if plan.name == "mm":
        a, w, bias = args[0], args[1], None
    else:
        bias, a, w = args[0], args[1], args[2]
    ia, iw = plan.infos.get(id(a)), plan.infos.get(id(w))
    if ia is None or ia.perm is not perm or iw is not None or a.dim() != 2:
        return False
    if bias is None:
        return True
    ib = plan.infos.get(id(bias))
    if ib is not None:
        return ib.perm is perm and bias.dim() == 2 and bias.shape[0] == perm.n
    return bias.dim() < 2 or bias.shape[0] == 1


class _Frame:
    """The tracer as the rules see it in the original frame: operands' summaries there; what
    the rules note stays here (the ordinary rule already spoke for the op)."""

    def __init__(self, tracer, deps):
        object.__setattr__(self, "_tracer", tracer)
        object.__setattr__(self, "_deps", deps)
        object.__setattr__(self, "lost", Counter())

    def deps(self, t):
        if not isinstance(t, torch.Tensor):
            return None
        if id(t) in self._deps:
            return self._deps[id(t)]
        return self._tracer.deps(t)

    def assume(self, t, d):
        raise ValueError("a rule that writes another tensor: no frame")

    def __getattr__(self, name):
        return getattr(self._tracer, name)

    def __setattr__(self, name, value):  # ``path_dependent``: the tracer's, soundly
        setattr(self._tracer, name, value)


def _in_frame(tracer, plan, func, outs):
    """The op's rule on the original frame (None: no rule to say it)."""
    from .tracer import _fit, _rule_for

    rule = _rule_for(func)
    if rule is None or plan.deps is None:
        return None
    if all(d is None for d in plan.deps.values()):
        return [None] * len(outs)  # constants in the original frame (the rules assume one is not)
    frame = _Frame(tracer, plan.deps)
    object.__setattr__(frame, "op_name", str(func))
    if rules.knows_runs(rule) or not any(is_runs(d) for d in plan.deps.values()):
        found = rule(frame, plan.args, plan.kwargs, outs)
    else:
        found = rules.through_dense(rule, frame, plan.args, plan.kwargs, outs)
    return [_fit(d, o) for d, o in zip(found, outs, strict=True)]


# -- the ops that count groups, gather, multiply by groups, and undo the permutation ---------------

def _counts(tracer, plan, func, args, kwargs, outs):
    """``histc(ids, bins=E, min=0, max=E-1)``, ``bincount(ids, minlength=E)``: the number of
    ids equal to each ``e < E``, checked on every value ``[0, bound)`` can take."""
    info = plan.infos.get(id(args[0]))
    if info is None or info.values is None or len(outs) != 1 or args[0].dim() != 1:
        return
    bound, x = info.values.bound, args[0]
    if plan.name == "histc":
        bins = _dim_arg(args, kwargs, 1, "bins", 100)
        low, high = _dim_arg(args, kwargs, 2, "min", 0), _dim_arg(args, kwargs, 3, "max", 0)
        if bins < 2 or low != 0 or high != bins - 1 or bound > bins:
            return
        every = torch.histc(torch.arange(bins, dtype=x.dtype, device=x.device), bins, 0,
                            bins - 1)
        if not torch.equal(every, torch.ones_like(every)):
            return  # the binning of some integer is not its own bin
    else:
        weights = _dim_arg(args, kwargs, 1, "weights", None)
        bins = _dim_arg(args, kwargs, 2, "minlength", 0)
        if weights is not None or bound > bins:
            return
    if outs[0].shape != (bins,):
        return
    _tag(tracer, outs[0], groups=Groups(info.values, bins, False, x.numel()))


def _cumsum(tracer, plan, func, args, kwargs, outs):
    info = plan.infos.get(id(args[0]))
    if info is None or info.groups is None or info.groups.cumulative or args[0].dim() != 1:
        return
    g = info.groups
    if not _exact_cast(Values(g.total + 1), outs[0]):
        return
    _tag(tracer, outs[0], groups=Groups(g.key, g.bins, True, g.total))


def _grouped_mm(tracer, plan, func, args, kwargs, outs):
    """Rows in the exact groups of their own sorted expert ids: row ``i`` of the original
    frame is ``x[i] @ W[ids[i]]``: its own features and its own expert choice."""
    x, weight = args[0], args[1]
    offs = _dim_arg(args, kwargs, 2, "offs", None)
    bias = _dim_arg(args, kwargs, 3, "bias", None)
    ix, io = plan.infos.get(id(x)), plan.infos.get(id(offs))
    if ix is None or ix.perm is None or io is None or io.groups is None or bias is not None:
        return
    perm, g = ix.perm, io.groups
    if not (g.cumulative and perm.ascending and perm.key is not None and g.key is perm.key
            and g.total == perm.n):
        return
    if plan.infos.get(id(weight)) is not None or weight.dim() != 3 or x.dim() != 2 or \
            weight.shape[0] != g.bins or offs.shape != (g.bins,) or x.shape[0] != perm.n or \
            perm.ids is None or outs[0].shape[0] != perm.n:
        return
    if perm.ids.dim() != 2:
        return
    ids = perm.ids.reshape(perm.ids.shape[0], 1, -1)  # (n or 1 broadcast, 1, inputs)
    rows = None if ix.orig is None else any_over(ix.orig, [1])
    spread = everything(tracer.deps(weight))
    spread = None if spread is None else spread.reshape(1, 1, -1)
    _tag(tracer, outs[0], perm=perm, orig=union([rows, ids, spread], 2))


def _index(tracer, plan, func, args, kwargs, outs):
    """``x[I]`` along axis 0: by rows of ``P`` of an untagged ``x`` (rows of ``P``), or by
    ``P``'s inverse of rows of ``P`` (the original frame: the proof step)."""
    src = args[0]
    if plan.name == "index":
        indices = list(args[1])
        if len(indices) != 1 or indices[0] is None:
            return
        idx = indices[0]
    else:  # index_select
        if args[1] % max(src.dim(), 1) != 0:
            return
        idx = args[2]
    i_src, i_idx = plan.infos.get(id(src)), plan.infos.get(id(idx))
    if i_idx is None or idx.dtype in (torch.bool, torch.uint8) or len(outs) != 1:
        return
    if i_idx.inverse is not None and i_src is not None and i_src.perm is i_idx.inverse:
        perm = i_idx.inverse
        if idx.shape == (perm.n,) and src.shape[0] == perm.n:
            _replace(tracer, outs[0], i_src.orig, written=False)
        return
    if i_src is not None or i_idx.perm is None or idx.dim() < 1 or \
            idx.shape[0] != i_idx.perm.n:
        return
    found = _in_frame(tracer, plan, func, outs)
    if found is not None:
        _tag(tracer, outs[0], perm=i_idx.perm, orig=found[0])


def _is_p(plan, x, info) -> bool:
    """``x`` is ``P`` itself: rows of ``P`` that are ``arange`` in the original frame (read
    from the frame's copy, taken before the op ran)."""
    if info is None or info.perm is None or info.orig is not None or x.dim() != 1:
        return False
    value = plan.args[1][0]
    return torch.equal(value, torch.arange(x.shape[0], device=x.device, dtype=x.dtype))


def _index_put(tracer, plan, func, args, kwargs, outs):
    """``inv[P] = arange(n)`` (``inv`` is ``P``'s inverse), ``out[P] = R`` (``out`` is ``O``),
    ``out[I] += R`` (the same sum in the original frame)."""
    x, indices, values = args[0], list(args[1]), args[2]
    accumulate = _dim_arg(args, kwargs, 3, "accumulate", False)
    if len(indices) != 1 or indices[0] is None or len(outs) != 1:
        return
    idx = indices[0]
    ix, ii, iv = (plan.infos.get(id(t)) for t in (x, idx, values))
    if ii is None or ii.perm is None or ix is not None or idx.dtype in (torch.bool, torch.uint8):
        return
    if not _apart(x, idx, values):
        return
    perm = ii.perm
    inplace = plan.name.endswith("_")
    if accumulate:
        if idx.dim() == 1 and tuple(values.shape) == (perm.n,) + tuple(x.shape[1:]):
            _sum_back(tracer, plan, func, outs, perm, iv, values, inplace)
        return
    if not _is_p(plan, idx, ii) or x.shape[0] != perm.n:
        return
    if iv is None and x.dim() == 1 and tracer.deps(values) is None and \
            values.shape == (perm.n,) and not x.is_floating_point() and \
            torch.equal(values, torch.arange(perm.n, dtype=values.dtype, device=values.device)):
        row = everything(ii.coarse)  # every element written once: what was there is gone
        _replace(tracer, outs[0], None if row is None else row.reshape(1, -1), written=inplace)
        _tag(tracer, outs[0], inverse=perm)
        return
    if iv is not None and iv.perm is perm and values.shape == x.shape:
        _replace(tracer, outs[0], iv.orig, written=inplace)  # out[P[j]] = O[P[j]]: out is O


def _index_add(tracer, plan, func, args, kwargs, outs):
    x, dim, idx, source = args[0], args[1], args[2], args[3]
    ix, ii, isrc = (plan.infos.get(id(t)) for t in (x, idx, source))
    if dim % max(x.dim(), 1) != 0 or ix is not None or ii is None or ii.perm is None:
        return
    _sum_back(tracer, plan, func, outs, ii.perm, isrc, source, plan.name.endswith("_"))


def _scatter_add(tracer, plan, func, args, kwargs, outs):
    x, dim, idx, source = args[0], args[1], args[2], args[3]
    ix, ii, isrc = (plan.infos.get(id(t)) for t in (x, idx, source))
    if dim % max(x.dim(), 1) != 0 or ix is not None or ii is None or ii.perm is None:
        return
    if idx.shape[0] != ii.perm.n:
        return
    _sum_back(tracer, plan, func, outs, ii.perm, isrc, source, plan.name.endswith("_"))


def _sum_back(tracer, plan, func, outs, perm, isrc, source, inplace):
    """A sum of rows of ``P`` into a target in the token frame, at rows of ``P``: the sum over
    ``j`` of ``O[P[j]]`` at ``I[P[j]]`` is the sum over ``i`` of ``O[i]`` at ``I_O[i]``."""
    if isrc is None or isrc.perm is not perm or source.dim() < 1 or source.shape[0] != perm.n:
        return
    if not _apart(outs[0], source):
        return
    found = _in_frame(tracer, plan, func, outs)
    if found is not None:
        _replace(tracer, outs[0], found[0], written=inplace)


def _apart(*tensors) -> bool:
    """No two of ``tensors`` share memory (a write into one cannot change another's rows)."""
    keys = [storage_key(t) for t in tensors]
    return None not in keys and len(set(keys)) == len(keys)


def _replace(tracer, out, d, written: bool) -> None:
    """The proof step: ``out``'s summary is ``d`` (in the token frame), not the coarse one."""
    from .tracer import _fit

    d = _fit(d, out)
    if written:
        tracer._write(out, d)
    else:
        tracer._set(out, d)


_SPECIAL = {"histc": _counts, "bincount": _counts, "cumsum": _cumsum,
            "_grouped_mm": _grouped_mm, "index": _index, "_unsafe_index": _index,
            "index_select": _index, "index_put": _index_put, "index_put_": _index_put,
            "_index_put_impl_": _index_put, "index_add": _index_add,
            "index_add_": _index_add, "scatter_add": _scatter_add,
            "scatter_add_": _scatter_add}


def static_count(tracer, func, args, kwargs) -> bool:
    """``bincount(ids, minlength=m)`` of ids known to lie in ``[0, m)``: its length is ``m``
    for every input (not a shape read from values)."""
    if func is not aten.bincount.default:
        return False
    info = valid(tracer, args[0])
    minlength = _dim_arg(args, kwargs, 2, "minlength", 0)
    weights = _dim_arg(args, kwargs, 1, "weights", None)
    return info is not None and info.values is not None and weights is None and \
        info.values.bound <= minlength
