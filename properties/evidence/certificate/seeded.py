"""The random number generator as a tracked value.

A seeded op (``randn_like``, dropout, ``poisson``: ATen tags them ``nondeterministic_seeded``)
reads the generator's state, and its output depends on whatever that state depends on. It also
writes the state: by an amount fixed by the shapes for most samplers, but by an amount that
depends on the *values* for rejection samplers (``poisson``, ``_standard_gamma``, ``binomial``,
``multinomial``...): after one of those, every later sample depends on the values it read. A
state set from data (``set_rng_state(x)``) depends on that data. The tracer keeps one summary row
per generator object (``None``: the state depends on no input).
"""

import torch

# samplers that draw a number of values fixed by their shapes (anything else: by the values)
FIXED_DRAWS = {
    "bernoulli", "bernoulli_", "native_dropout", "dropout", "feature_dropout", "alpha_dropout",
    "_fused_dropout", "rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
    "randperm", "uniform_", "normal_", "normal", "random_", "exponential_", "cauchy_",
    "log_normal_", "geometric_", "rrelu_with_noise", "rrelu_with_noise_", "_rrelu_with_noise",
    # attention kernels with a dropout argument: a Philox offset fixed by the shapes
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_flash_attention_forward",
    "_efficient_attention_forward", "_transformer_encoder_layer_fwd",
    "_native_multi_head_attention",
}


def is_seeded(func) -> bool:
    return torch.Tag.nondeterministic_seeded in func.tags


def draws_by_value(func) -> bool:
    """Whether the op may draw a number of values that depends on its inputs' values."""
    return func.namespace != "aten" or func._schema.name.split("::")[-1] not in FIXED_DRAWS


def generator_of(func, args, kwargs, outs):
    """The generator the op draws from: its ``generator`` argument, else the default one of the
    device it runs on."""
    for i, arg in enumerate(func._schema.arguments):
        if arg.name == "generator":
            value = args[i] if i < len(args) and not arg.kwarg_only else kwargs.get("generator")
            if value is not None:
                return value
    device = next((t.device for t in outs if isinstance(t, torch.Tensor)), torch.device("cpu"))
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index or 0]
    return torch.default_generator


class Generators:
    """Generator object -> summary row of its state (absent: depends on nothing)."""

    def __init__(self):
        self._rows: dict[int, tuple[torch.Generator, torch.Tensor]] = {}

    def row(self, gen) -> torch.Tensor | None:
        found = self._rows.get(id(gen))
        return None if found is None else found[1]

    def add(self, gen, row: torch.Tensor | None) -> None:
        if row is None:
            return
        old = self.row(gen)
        self._rows[id(gen)] = (gen, row if old is None else old | row)

    def set(self, gen, row: torch.Tensor | None) -> None:
        if row is None:
            self._rows.pop(id(gen), None)
        else:
            self._rows[id(gen)] = (gen, row)
