"""Test-wide settings: Hypothesis profiles, one torch thread per worker, a seeded torch RNG.

Profiles (select with HYPOTHESIS_PROFILE=name or ``pytest --hypothesis-profile=name``):

- ``dev``: the default on a workstation; quick feedback.
- ``ci``: Hypothesis' own ``ci`` profile (derandomized, no database, no health-check noise
  from slow machines) with our example count; what ``.ci/run`` uses.
- ``nightly``: a thorough search, ten times the examples; for scheduled runs.
- ``mutation``: ``ci`` with a third of the examples, for ``tox -e mutation``.

``deadline=None`` everywhere: torch's first call on a shape is slow (kernels are selected and
cached), which says nothing about the code under test.
"""

import os

import torch
from hypothesis import HealthCheck, settings

# nested_given: property tests draw a model with @given, then audit it, and the audit runs its own
# Hypothesis search (find) inside: quadratic by design, and small.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.nested_given]

settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    max_examples=25,
    deadline=None,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "nightly", max_examples=250, deadline=None, suppress_health_check=_SLOW_OK
)
# mutation testing (tox -e mutation): every mutant reruns the tests that reach it, so fewer
# examples; derandomized, so that a mutant is killed by the tests, not by the draw.
settings.register_profile("mutation", parent=settings.get_profile("ci"), max_examples=8)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config):
    # Each xdist worker is its own process: two workers with two intra-op threads each would
    # fight over two cores and run slower than one thread each.
    torch.set_num_threads(1)


def pytest_runtest_setup(item):
    # Every test starts from the same global RNG state, whatever ran before it on this worker.
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    # Under mutmut (tox -e mutation) a mutant's tests run with -x: the fastest first, so that a
    # killed mutant is killed in the first second instead of after the slow audits. mutmut
    # records each test's duration in mutmut-stats.json, in the directory it runs from.
    if "MUTANT_UNDER_TEST" not in os.environ or not os.path.exists("mutmut-stats.json"):
        return
    import json

    with open("mutmut-stats.json") as f:
        durations = json.load(f).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
