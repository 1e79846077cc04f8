"""Hypothesis' ``find``, detached from the pytest test that runs the audit.

Every search of the audit (the perturbation search, the batch, padding and incremental ones)
is a ``hypothesis.find`` whose "failure" is the audit's counterexample. Under pytest, Hypothesis
records a failure's example on the running test item, and its pytest plugin then prints
"`git apply .hypothesis/patches/...` to add failing test cases to your code": a patch adding our
counterexample as an ``@example`` to the user's test, whose arguments it does not even take.
The search is the audit's business, not the test's: while it runs, no pytest item is current.
"""

from random import Random

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

__all__ = ["find_detached", "search"]


def search(strategy, condition, *, max_examples: int, seed: int):
    """The audit's search: the minimal example of ``strategy`` for which ``condition`` holds,
    or None. Generate and shrink only, seeded, no database (a verdict must not depend on an
    earlier run), no deadline and no health checks (``condition`` runs the model)."""
    config = settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    try:
        return find_detached(strategy, condition, settings=config, random=Random(seed))
    except NoSuchExample:
        return None


def find_detached(strategy, condition, **kwargs):
    """``hypothesis.find(strategy, condition, **kwargs)`` with no pytest item current."""
    item = _current_pytest_item()
    if item is None:
        return find(strategy, condition, **kwargs)
    with item.with_value(None):
        return find(strategy, condition, **kwargs)


def _current_pytest_item():
    """Hypothesis' record of the running pytest item (internal: None where a version lacks it,
    and then the search runs as before, with the stray patch message)."""
    try:
        from hypothesis.internal.escalation import current_pytest_item
    except ImportError:
        return None
    return current_pytest_item if hasattr(current_pytest_item, "with_value") else None
