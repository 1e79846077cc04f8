"""The certificate's tests on both forms of summary (``deps``: dense bits, runs of positions).

A module that sets ``pytestmark = pytest.mark.usefixtures("summary_form")`` runs every test
twice, once per form: every certificate made inside (``certify``, or a tracer given
``deps.in_form(..., deps.form_for(n))``) uses that form, whatever the number of positions. In
the run form, score matrices are kept factored at any size (``outer.MIN_PAIRS``: 0), so that
the small cases reach the factored paths of attention too.
"""

import pytest

from properties.evidence.certificate import deps, outer


@pytest.fixture(params=deps.FORMS)
def summary_form(request, monkeypatch):
    if request.param == deps.RUNS:
        monkeypatch.setattr(outer, "MIN_PAIRS", 0)
    with deps.forced(request.param):
        yield request.param
