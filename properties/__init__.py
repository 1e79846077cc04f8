"""properties: prove (or refute) that a model's predictions never see the future.

Works on any model that maps a sequence or an image to per-position predictions::

    import properties
    result = properties.audit_model(model, grid=(64,), layout="BCT->BTC", predicts="current")
    assert result.causal, properties.explain(result.subject, result.violations[0])

In a test, :func:`assert_causal` does both and fails with a readable message::

    from properties import assert_causal
    assert_causal(model, grid=(256,), layout="BCT->BTC", predicts="current")

See :func:`make_subject` (the canonical form), :func:`audit` (every check) and
:mod:`properties.strategies` (Hypothesis strategies).

The names below are imported on first use, not with the package: pytest imports
``properties.plugin`` (and so this file) at startup, and ``pytest --help`` must not pay for torch.
"""

import importlib
import sys
import types

from .errors import AdapterError, AuditError, TargetError

# Public name -> the submodule that defines it.
_EXPORTS = {
    "CHECKS": "audit",
    "AuditResult": "audit",
    "audit": "audit",
    "Violation": "causality",
    "DependencyMap": "gradients",
    "dependency_map": "gradients",
    "explain": "report",
    "render_text": "report",
    "to_dict": "report",
    "Subject": "subject",
    "make_subject": "subject",
    "assert_causal": "testing",
    "Certificate": "certificate",
    "certify": "certificate",
}
_SUBMODULES = (
    "architectures",
    "causality",
    "certificate",
    "cli",
    "facts",
    "gradients",
    "layout",
    "loss",
    "perturbations",
    "pictures",
    "plugin",
    "report",
    "running",
    "strategies",
    "subject",
    "target",
    "testing",
    "zoo",
)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


class _Package(types.ModuleType):
    """``properties.audit`` is the function, as it was when this file imported it eagerly: the
    import system binds a submodule to its package's attribute when it first loads it, and the
    submodule ``properties.audit`` would otherwise hide the function of the same name."""

    def __setattr__(self, name, value):
        if name == "audit" and isinstance(value, types.ModuleType):
            value = value.audit
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def audit_model(
    model,
    *,
    grid,
    checks=None,
    train=False,
    exact=False,
    seed=0,
    max_examples=None,
    shard=None,
    memory=None,
    budget=None,
    progress=None,
    **subject_options,
):
    """:func:`make_subject` then :func:`audit`, in one call (``checks``: default every check,
    the certificate up to 1024 positions; ``memory`` GB, ``budget`` seconds and ``progress`` as
    in :func:`audit`)."""
    from .audit import audit
    from .subject import make_subject

    subject = make_subject(model, grid=grid, **subject_options)
    return audit(
        subject,
        checks=checks,
        train=train,
        exact=exact,
        seed=seed,
        max_examples=max_examples,
        shard=shard,
        memory=memory,
        budget=budget,
        progress=progress,
    )


__all__ = [
    "CHECKS",
    "AdapterError",
    "AuditError",
    "AuditResult",
    "Certificate",
    "DependencyMap",
    "Subject",
    "TargetError",
    "Violation",
    "assert_causal",
    "audit",
    "audit_model",
    "certify",
    "dependency_map",
    "explain",
    "make_subject",
    "render_text",
    "to_dict",
]
