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

from properties.errors import AdapterError, AuditError, TargetError

# Public name -> the module that defines it.
_EXPORTS = {
    "CHECKS": "properties.auditing.gather",
    "AuditResult": "properties.auditing.gather",
    "audit": "properties.auditing.gather",
    "merge": "properties.auditing.gather",
    "Violation": "properties.verdict",
    "DependencyMap": "properties.evidence.gradients",
    "dependency_map": "properties.evidence.gradients",
    "explain": "properties.output.report",
    "render_text": "properties.output.report",
    "to_dict": "properties.output.report",
    "Subject": "properties.subject.canonical",
    "make_subject": "properties.subject.canonical",
    "assert_causal": "properties.testing",
    "Certificate": "properties.evidence.certificate",
    "certify": "properties.evidence.certificate",
}
# The rooms and the public modules, loaded on first use as attributes of the package.
_SUBMODULES = (
    "auditing",
    "cli",
    "errors",
    "evidence",
    "extra",
    "output",
    "plugin",
    "progress",
    "strategies",
    "subject",
    "target",
    "testing",
    "verdict",
)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


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
    from properties.auditing.gather import audit
    from properties.subject.canonical import make_subject

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
    "merge",
    "render_text",
    "to_dict",
]
