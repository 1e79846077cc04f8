"""causal: the lecture's causal convolutional models, real data, one-pass training, sampling.

See :mod:`causal.layers` for the building blocks, :mod:`causal.models` for the models and
:mod:`causal.registry` for the built-in models by name with their declared properties.
"""

from .registry import REGISTRY, Declared, ModelSpec, get

__all__ = ["REGISTRY", "Declared", "ModelSpec", "get"]
