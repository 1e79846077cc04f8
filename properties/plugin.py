"""The pytest plugin (entry point ``pytest11: causal_audit``): options, a marker and a fixture.

- ``--causal-train`` (also audit in training mode) and ``--causal-exact`` (every cut, output and
  position) change the defaults of :func:`properties.assert_causal` for the whole run;
- ``@pytest.mark.causal(grid=..., layout=..., predicts=..., ...)`` sets per-test defaults for
  the ``causal_audit`` fixture (any keyword of ``assert_causal``; a class's or module's marker
  applies to its tests, the closest one wins);
- the ``causal_audit`` fixture is ``assert_causal`` with the marker's keywords applied (keywords
  of the call win over the marker's, which win over the command line's).

Under ``pytest -n`` (xdist) each worker runs ``pytest_configure`` with the controller's options,
so the defaults reach every worker. Nothing heavy is imported here: ``pytest --help`` does not
load torch; the harness loads on the first audit.
"""

import pytest

__all__ = [
    "MARKER",
    "causal_audit",
    "marker_options",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
]

MARKER = "causal"


def pytest_addoption(parser):
    group = parser.getgroup("autoregressive-audit", "autoregressive-audit: is the model causal?")
    group.addoption(
        "--causal-train",
        action="store_true",
        default=False,
        help="assert_causal and the causal_audit fixture also audit in training mode "
        "(BatchNorm statistics over time, dropout)",
    )
    group.addoption(
        "--causal-exact",
        action="store_true",
        default=False,
        help="assert_causal and the causal_audit fixture cover every cut, output and position "
        "(slower on large grids)",
    )


def pytest_configure(config):
    from properties import testing

    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): per-test defaults for the causal_audit fixture "
        "(grid=..., layout=..., predicts=..., train=..., exact=..., any assert_causal keyword)",
    )
    previous = testing.set_defaults(
        train=config.getoption("causal_train"), exact=config.getoption("causal_exact")
    )
    config.stash[_previous_defaults] = previous


def pytest_unconfigure(config):
    from properties import testing

    previous = config.stash.get(_previous_defaults, None)
    if previous is not None:  # a session inside a session (pytester) restores the outer's
        testing.set_defaults(**previous)


_previous_defaults = pytest.StashKey[dict]()


def marker_options(node) -> dict:
    """The keywords of every ``causal`` marker on ``node``, the closest marker winning."""
    options: dict = {}
    for mark in reversed(list(node.iter_markers(MARKER))):  # furthest first
        if mark.args:
            raise pytest.UsageError(
                f"@pytest.mark.{MARKER} takes keywords only (grid=..., layout=...), got "
                f"positional {mark.args!r} on {node.nodeid}"
            )
        options.update(mark.kwargs)
    return options


@pytest.fixture
def causal_audit(request):
    """``assert_causal`` with this test's ``@pytest.mark.causal(...)`` keywords applied and the
    run's ``--causal-train`` / ``--causal-exact`` defaults; returns the audit result."""
    from properties.testing import assert_causal

    defaults = marker_options(request.node)

    def check(model, **options):
        __tracebackhide__ = True
        return assert_causal(model, **{**defaults, **options})

    return check
