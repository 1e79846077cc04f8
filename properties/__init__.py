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
    "CHECKS": "properties.auditing.options",
    "AuditOptions": "properties.auditing.options",
    "AuditResult": "properties.auditing.result",
    "CoveragePolicy": "properties.auditing.options",
    "audit": "properties.auditing.gather",
    "merge": "properties.auditing.conclude",
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


def audit_model(model, *, grid, **options):
    """:func:`make_subject` then :func:`audit`, in one call. ``options``: the subject's
    (``layout``, ``predicts``, ``vocab``, ``order``, ``forward``... of :func:`make_subject`) and
    the audit's (``checks``, ``train``, ``exact``, ``seed``, ``max_examples``, ``shard``,
    ``memory``, ``budget``, ``progress``, ``policy``: the fields of
    :class:`~properties.auditing.options.AuditOptions`)."""
    from properties.auditing.gather import audit
    from properties.auditing.options import AuditOptions
    from properties.subject.canonical import make_subject

    audit_options, subject_options = AuditOptions.split(options)
    return audit(make_subject(model, grid=grid, **subject_options), options=audit_options)


__all__ = [
    "CHECKS",
    "AdapterError",
    "AuditError",
    "AuditOptions",
    "AuditResult",
    "Certificate",
    "CoveragePolicy",
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
