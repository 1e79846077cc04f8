"""properties/evidence/schedules.py: the schedules of a stepped run, the fixed ones, the
Hypothesis strategy and the shrinker that makes a failing schedule minimal."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from properties.evidence.schedules import (
    Branch,
    Schedule,
    fixed_schedules,
    landmarks,
    minimize,
    schedules,
)


def test_a_schedule_is_its_chunks():
    s = Schedule(10, (4, 5, 6))
    assert s.spans == [(0, 4), (4, 5), (5, 6), (6, 10)]
    assert s.chunks == [4, 1, 1, 4]
    assert s.steps == 4 and s.continuations == 1
    assert Schedule(10).chunks == [10]


def test_a_branch_runs_the_rest_once_per_continuation():
    s = Schedule(10, (4, 7), Branch(4, 3))
    assert s.steps == 1 + 3 * 2 and s.continuations == 3


@pytest.mark.parametrize(
    "bad",
    [
        dict(cuts=(3, 2)),  # not sorted
        dict(cuts=(2, 2)),  # repeated
        dict(cuts=(0,)),  # a chunk of no positions
        dict(cuts=(10,)),
        dict(cuts=(3,), branch=Branch(4)),  # a branch away from every cut
    ],
)
def test_malformed_schedules_are_refused(bad):
    with pytest.raises(ValueError):
        Schedule(10, **bad)


@pytest.mark.parametrize(
    "schedule, text",
    [
        (Schedule(8), "one chunk [8]"),
        (Schedule(4, (1, 2, 3)), "token by token [1 x 4]"),
        (Schedule(8, (4, 5, 6, 7)), "chunks [4, 1 x 4]"),
        (Schedule(8, (1, 2)), "chunks [1, 1, 6]"),
        (
            Schedule(8, (4, 6), Branch(4, 2, fresh=True)),
            "a prefix of 4 positions ([4]) computed once, then 2 continuations with inputs of "
            "their own, each [2, 2]",
        ),
        (
            Schedule(8, (4,), Branch(4, 2, fresh=False)),
            "[4], the state saved at position 4, [4], then the state restored and [4] run again",
        ),
    ],
)
def test_schedules_read_as_what_they_do(schedule, text):
    assert schedule.describe() == text


def test_the_variant_is_named_when_there_are_several():
    s = Schedule(4, (2,), variant=1)
    assert s.describe(["a dynamic cache", "a static cache"]) == "chunks [2, 2] with a static cache"
    assert s.to_json(["a dynamic cache", "a static cache"])["variant"] == "a static cache"


def test_fixed_schedules_cover_the_classic_ways_of_running():
    found = fixed_schedules(8, variants=2, window=3)
    chunks = [(s.chunks, s.branch, s.variant) for s in found]
    for v in (0, 1):
        assert ([8], None, v) in chunks  # one chunk: the plain call
        assert ([4, 1, 1, 1, 1], None, v) in chunks  # prefill, then decoding
        assert ([2, 1, 1, 2, 2], None, v) in chunks  # cuts at the window's landmarks 2, 3, 4, 6
    assert ([1] * 8, None, 0) in chunks and ([1] * 8, None, 1) not in chunks  # token by token
    reuse, restore = [s for s in found if s.branch is not None]
    assert reuse.chunks == [4, 2, 2] and reuse.branch == Branch(4, 2, fresh=True)
    assert restore.chunks == [4, 4] and restore.branch == Branch(4, 2, fresh=False)
    assert len(found) == len(set(found))
    assert not any(s.branch for s in fixed_schedules(8, branches=False))
    assert sum(s.steps for s in fixed_schedules(512, variants=2)) <= 2 * 512 + 16


def test_landmarks_sit_at_a_window_and_a_static_cache():
    assert landmarks(20, window=4) == [3, 4, 5, 8]
    assert landmarks(20, window=4, limit=9) == [3, 4, 5, 8, 9, 10, 18]
    assert landmarks(5, limit=4) == [3, 4]


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 30), st.integers(1, 3))
def test_drawn_schedules_are_well_formed(data, n, variants):
    s = data.draw(schedules(n, variants=variants, window=4, limit=6))
    assert s.n == n and 0 <= s.variant < variants
    assert sum(s.chunks) == n
    assert s.branch is None or s.branch.at in s.cuts
    assert len(s.cuts) <= 8 + 17  # the drawn cuts and one decoding run


def test_the_search_draws_cuts_at_the_landmarks_and_branches():
    seen_cuts, branches = set(), set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(schedules(40, window=7))
    def collect(s):
        seen_cuts.update(s.cuts)
        if s.branch is not None:
            branches.add(s.branch.fresh)

    collect()
    assert {6, 7, 8, 14} <= seen_cuts
    assert branches == {True, False}


def test_bad_arguments_are_invalid():
    for bad in (dict(n=0), dict(n=4, variants=0), dict(n=4, max_cuts=-1)):
        with pytest.raises(InvalidArgument):
            schedules(**bad).example()


def test_minimize_removes_every_cut_it_can_and_moves_the_rest_early():
    """A bug that needs a chunk boundary at or after position 5: the minimal schedule has one
    cut, at 5, no branch, the first variant."""

    def fails(s):
        return any(c >= 5 for c in s.cuts)

    start = Schedule(12, (2, 6, 7, 9, 11), Branch(6, 3, fresh=False), variant=1)
    assert minimize(start, fails) == Schedule(12, (5,))


def test_minimize_keeps_what_the_failure_needs():
    def fails(s):  # needs two boundaries, and a restore
        return len(s.cuts) >= 2 and s.branch is not None and not s.branch.fresh

    start = Schedule(12, (3, 6, 8, 10), Branch(8, 2, fresh=False))
    small = minimize(start, fails)
    assert len(small.cuts) == 2 and small.branch is not None and fails(small)
    assert small.cuts == (1, 2)


def test_minimize_stops_when_the_time_is_over():
    calls = []

    def fails(s):
        calls.append(s)
        return True

    start = Schedule(12, (2, 6, 9))
    assert minimize(start, fails, over=lambda: True) == start and not calls
