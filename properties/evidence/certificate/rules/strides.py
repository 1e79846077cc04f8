"""Views given by explicit strides (``as_strided``, ``_reshape_alias``): an element is read at the
storage offset its strides say, which need not be row-major order (``_reshape_alias`` of a
transpose). The summary is read from the storage's elements, as the tracer keeps them for writes
through aliases."""

import torch

from ..deps import compress, move
from .base import aten, rule
from .moves import same


@rule(aten.as_strided.default, aten._reshape_alias.default, aten.as_strided_copy.default,
      runs=True)
def as_strided(ctx, args, kwargs, outs):
    x, size, stride = args[0], list(args[1]), list(args[2])
    offset = args[3] if len(args) > 3 and args[3] is not None else \
        kwargs.get("storage_offset") or x.storage_offset()
    if ctx.deps(x) is None:
        return [None]
    if offset == x.storage_offset() and x.is_contiguous() and stride == _row_major(size):
        return same(ctx, args, kwargs, outs)  # a reshape: row-major order is the truth
    storage = ctx._storage_summary(x)
    if storage is None:
        raise ValueError("aliases of other element sizes")
    elements = torch.arange(storage.shape[0]).as_strided(size, stride, offset)
    return [compress(move(storage, lambda s: s[elements]))]


def _row_major(size) -> list[int]:
    strides, step = [], 1
    for s in reversed(size):
        strides.append(step)
        step *= max(s, 1)
    return list(reversed(strides))
