"""Samplers element by element (``bernoulli(p)``, ``poisson(rate)``, ``normal(mean, std)``): each
output element depends on its own parameters, and on the generator's state (the tracer adds the
state: see :mod:`..seeded`)."""

from .base import aten, rule
from .elementwise import pointwise


@rule(aten.bernoulli.default, aten.bernoulli.p, aten.bernoulli.Tensor, aten.poisson.default,
      aten._standard_gamma.default, aten.binomial.default, aten.normal.Tensor_Tensor,
      aten.normal.Tensor_float, aten.normal.float_Tensor, aten.bernoulli_.Tensor, runs=True)
def per_element(ctx, args, kwargs, outs):
    return pointwise(ctx, args, kwargs, outs)
