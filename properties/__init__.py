"""properties: prove (or refute) that a model's predictions never see the future.

Works on any model that maps a sequence or an image to per-position predictions::

    import properties
    result = properties.audit_model(model, grid=(64,), layout="BCT->BTC", predicts="current")
    assert result.causal, properties.explain(result.subject, result.violations[0])

See :func:`make_subject` (the canonical form), :func:`audit` (every check) and
:mod:`properties.strategies` (Hypothesis strategies).
"""

from .audit import CHECKS, AuditResult, audit
from .causality import Violation
from .errors import AdapterError, AuditError, TargetError
from .gradients import DependencyMap, dependency_map
from .report import explain, render_text, to_dict
from .subject import Subject, make_subject


def audit_model(
    model,
    *,
    grid,
    checks=CHECKS,
    train=False,
    exact=False,
    seed=0,
    max_examples=None,
    **subject_options,
) -> AuditResult:
    """:func:`make_subject` then :func:`audit`, in one call."""
    subject = make_subject(model, grid=grid, **subject_options)
    return audit(
        subject, checks=checks, train=train, exact=exact, seed=seed, max_examples=max_examples
    )


__all__ = [
    "CHECKS",
    "AdapterError",
    "AuditError",
    "AuditResult",
    "DependencyMap",
    "Subject",
    "TargetError",
    "Violation",
    "audit",
    "audit_model",
    "dependency_map",
    "explain",
    "make_subject",
    "render_text",
    "to_dict",
]
