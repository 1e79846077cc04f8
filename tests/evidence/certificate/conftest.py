"""The certificate's tests on both forms of summary (``deps``: dense bits, runs of positions).

A module that sets ``pytestmark = pytest.mark.usefixtures("summary_form")`` runs every test
twice, once per form: every certificate made inside (``certify``, or a tracer given
``deps.in_form(..., deps.form_for(n))``) uses that form, whatever the number of positions.
"""

import pytest

from properties.evidence.certificate import deps


@pytest.fixture(params=deps.FORMS)
def summary_form(request):
    with deps.forced(request.param):
        yield request.param
