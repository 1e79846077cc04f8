"""Signed zeros: a structural zero is structural for its value, not for its sign.

``x * 0`` is ``-0.0`` for a negative ``x``, and a sum of such products is ``-0.0`` when every term
is: the rules that drop a dependency at a constant zero factor (``mul``, matrix products,
convolutions) are right about the value and wrong about its sign bit. Most consumers cannot
tell ``-0.0`` from ``+0.0`` (sums, products, ``exp``, comparisons, softmax...), but some read it:
``1 / -0.0`` is ``-inf``, ``atan2(-0.0, -1) = -pi``, ``copysign``, ``signbit``, ``rsqrt``, a
bit cast to integers. So the tracer keeps, per tensor, a second summary row: the inputs its
zeros' signs may depend on (made where a rule dropped a dependency at a constant zero, carried
by every op that can pass a zero's sign on). At an op that reads signs, that row becomes a
dependency of every output element; an op whose outputs never carry an input zero's sign
(``abs``, ``exp``, squares...) drops it. Ops without a rule, and pointwise ops not known to be
blind to signs, count as readers.
"""

import torch

aten = torch.ops.aten

# ops whose rule drops dependencies at a constant zero factor: their outputs' zeros carry signs
PRODUCERS = {
    "mul", "mul_", "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "mv", "dot", "addmv",
    "_addmm_activation", "convolution", "_convolution",
}
# pointwise ops whose value is the same for +0 and -0 inputs (at most the sign of a zero output
# follows theirs)
BLIND = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "neg", "neg_", "relu", "relu_", "gelu",
    "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "exp2", "expm1",
    "log", "log1p", "log2", "log10", "sqrt", "sqrt_", "sin", "cos", "tan", "sinh", "cosh",
    "asin", "atan", "asinh", "atanh", "erf", "erfc", "erfinv", "softplus", "clamp", "clamp_",
    "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "where", "eq", "ne", "lt", "le", "gt",
    "ge", "isnan", "isinf", "isfinite", "isneginf", "isposinf", "logical_and", "logical_or",
    "logical_not", "logical_xor", "_to_copy", "to", "leaky_relu", "hardtanh", "hardtanh_",
    "elu", "selu", "celu", "mish", "hardswish", "hardsigmoid", "ceil", "floor", "round", "trunc",
    "frac", "sign", "sgn", "nan_to_num", "lerp", "addcmul", "maximum", "minimum", "fmax",
    "fmin", "square", "abs", "abs_", "logit", "hypot", "xlogy", "logaddexp", "logaddexp2",
    "heaviside", "masked_fill", "masked_fill_", "fill_", "zero_", "copy_", "clone", "detach",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "remainder", "fmod",
    "gelu_", "threshold", "sigmoid_backward", "_softmax", "_log_softmax", "pow",
}
# ops whose outputs carry no input zero's sign
KILLING = {"abs", "abs_", "exp", "exp_", "exp2", "expm1", "sigmoid", "sigmoid_", "cos", "cosh",
           "square", "_softmax", "_log_softmax", "softmax", "log_softmax", "eq", "ne", "lt",
           "le", "gt", "ge", "isnan", "isinf", "isfinite", "logical_and", "logical_or",
           "logical_not", "softplus", "fill_", "zero_", "erfc", "_safe_softmax"}
# (op, argument positions whose sign it reads)
READERS = {
    "div": (1,), "div_": (1,), "true_divide": (1,), "floor_divide": (1,), "reciprocal": (0,),
    "reciprocal_": (0,), "rsqrt": (0,), "rsqrt_": (0,), "atan2": (0, 1), "atan2_": (0, 1),
    "copysign": (1,), "copysign_": (1,), "signbit": (0,), "nextafter": (0, 1),
}


def name_of(func) -> str:
    return func._schema.name.split("::")[-1] if func.namespace == "aten" else ""


def produces(func) -> bool:
    return name_of(func) in PRODUCERS


def kills(func, args) -> bool:
    name = name_of(func)
    if name in ("pow", "pow_") and len(args) > 1 and isinstance(args[1], (int, float)):
        return args[1] == int(args[1]) and int(args[1]) % 2 == 0 and args[1] > 0
    return name in KILLING


def read_positions(func, args, ruled_by_fallback: bool) -> tuple[int, ...] | None:
    """The argument positions whose zeros' signs ``func`` reads (None: none; every tensor
    argument for ops without a rule and pointwise ops not known to be blind)."""
    name = name_of(func)
    if name in READERS:
        return READERS[name]
    if name in ("pow", "pow_"):
        exponent = args[1] if len(args) > 1 else None
        if isinstance(exponent, (int, float)) and exponent >= 0:
            return None
        return (0,)  # 0 ** -1 is +-inf by the zero's sign; a tensor exponent may be negative
    if name == "view" and func._overloadname == "dtype":
        return (0,)  # a bit cast: the sign bit becomes a value
    if ruled_by_fallback:
        return tuple(range(len(args)))
    if torch.Tag.pointwise in func.tags and name not in BLIND:
        return tuple(range(len(args)))
    return None
