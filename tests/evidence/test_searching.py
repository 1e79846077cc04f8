"""The audit's searches leave the pytest test that runs them alone: no stray "git apply
.hypothesis/patches/..." offering to add the audit's counterexample to the user's test (a
``@given`` test that audits drawn models, as with our strategies)."""

from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.internal.escalation import current_pytest_item

from properties import audit, make_subject
from properties.evidence.searching import find_detached
from properties.extra.architectures import Architecture

ATTRIBUTE = "_hypothesis_failing_examples"  # where Hypothesis records them on the pytest item
ONCE = settings(max_examples=1, database=None, deadline=None)


@ONCE
@given(st.just(0))
def test_plain_find_records_its_example_on_the_running_test(_):
    """The positive control: the mechanism the detached search avoids."""
    item = current_pytest_item.value
    assert item is not None
    assert find(st.integers(), lambda v: v > 10) == 11
    assert getattr(item, ATTRIBUTE, None)
    delattr(item, ATTRIBUTE)  # this test's own run must not print a patch either


@ONCE
@given(st.just(0))
def test_the_detached_search_records_nothing(_):
    item = current_pytest_item.value
    assert find_detached(st.integers(), lambda v: v > 10) == 11
    assert item is not None and not getattr(item, ATTRIBUTE, None)


@ONCE
@given(st.just(Architecture(1, (5,), (1,), bug="same_padding")))
def test_an_audit_that_finds_a_leak_records_nothing_on_the_test(arch):
    item = current_pytest_item.value
    subject = make_subject(arch.build(), grid=(12,), layout="BCT")
    result = audit(subject, max_examples=10, checks=("causality",))
    assert result.causal is False
    assert any(r.counterexamples for r in result.perturbations.values())
    assert item is not None and not getattr(item, ATTRIBUTE, None)
