"""Schedules: the ways of cutting one sequence into the calls of a stepped evaluation (cached,
chunked, streamed), the fixed ones every check runs, the Hypothesis strategy that searches the
others, and the shrinker that makes a diverging schedule minimal.

A schedule runs positions ``0 .. n - 1`` in chunks that start at its *cuts*: no cut is one call
of ``n`` positions, every cut is token by token, ``(4, 5, 6, ...)`` a prefill of 4 then decoding.
A *branch* saves the state at one cut and runs the rest of the sequence several times from it:

- ``fresh=True``, a prefix computed once and reused by several continuations (each continuation
  after the first gets inputs of its own after the prefix, as a server reuses a prompt's cache);
- ``fresh=False``, state saved and restored: the first continuation runs on the state itself
  (which a stepper may change in place), the next ones on the copy saved before it.

``variant`` picks one of a stepper's ways of running (a Hugging Face dynamic or static cache).

Minimal means: removing any cut, the branch, or the variant, or moving any cut earlier, gives a
schedule that no longer diverges (:func:`minimize`). Hypothesis' shrinker gets there most of the
way; :func:`minimize` finishes the job, and is what a failure of a fixed schedule gets.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = ["Branch", "Schedule", "fixed_schedules", "minimize", "schedules"]

CONTINUATIONS = (2, 3)  # continuations of a branch the search draws
MAX_CUTS = 8  # cuts the search draws besides a decoding run (more is token by token)
MAX_DECODE = 16  # positions a drawn decoding run steps one by one (token by token is fixed)


@dataclass(frozen=True)
class Branch:
    """State saved at position ``at`` (a cut) and ``count`` continuations run from it."""

    at: int
    count: int = 2
    fresh: bool = True  # continuations after the first get fresh inputs (prefix reuse)

    def to_json(self) -> dict:
        return {"at": self.at, "continuations": self.count, "fresh_inputs": self.fresh}


@dataclass(frozen=True)
class Schedule:
    n: int
    cuts: tuple[int, ...] = ()  # sorted, in (0, n): where a new chunk starts
    branch: Branch | None = None
    variant: int = 0

    def __post_init__(self):
        cuts = tuple(self.cuts)
        if list(cuts) != sorted(set(cuts)) or any(not 0 < c < self.n for c in cuts):
            raise ValueError(f"cuts {cuts} are not sorted distinct positions in (0, {self.n})")
        if self.branch is not None and self.branch.at not in cuts:
            raise ValueError(f"a branch at {self.branch.at} is not at a cut of {cuts}")
        object.__setattr__(self, "cuts", cuts)

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``(begin, end)`` of every chunk, in order."""
        edges = (0, *self.cuts, self.n)
        return list(zip(edges[:-1], edges[1:], strict=True))

    @property
    def chunks(self) -> list[int]:
        return [b - a for a, b in self.spans]

    @property
    def continuations(self) -> int:
        return 1 if self.branch is None else self.branch.count

    @property
    def steps(self) -> int:
        """Calls of the stepper the schedule makes (its cost)."""
        if self.branch is None:
            return len(self.spans)
        prefix = sum(1 for a, _ in self.spans if a < self.branch.at)
        return prefix + self.branch.count * (len(self.spans) - prefix)

    @property
    def size(self) -> tuple:
        """What "smaller" means when schedules are shrunk (fewest cuts first)."""
        return (len(self.cuts), self.branch is not None, self.variant, self.cuts)

    def describe(self, variants: list[str] | None = None) -> str:
        text = _chunks_text(self.chunks)
        if self.branch is not None:
            b = self.branch
            before = _list([e - a for a, e in self.spans if e <= b.at])
            after = _list([e - a for a, e in self.spans if a >= b.at])
            if b.fresh:
                text = (
                    f"a prefix of {b.at} positions ({before}) computed once, then {b.count} "
                    f"continuations with inputs of their own, each {after}"
                )
            else:
                again = "again" if b.count == 2 else f"{b.count - 1} more times"
                text = (
                    f"{before}, the state saved at position {b.at}, {after}, then the state "
                    f"restored and {after} run {again}"
                )
        if variants and len(variants) > 1:
            text += f" with {variants[self.variant]}"
        return text

    def to_json(self, variants: list[str] | None = None) -> dict:
        return {
            "chunks": self.chunks,
            "cuts": list(self.cuts),
            "branch": None if self.branch is None else self.branch.to_json(),
            "variant": variants[self.variant] if variants else self.variant,
            "description": self.describe(variants),
        }


def _chunks_text(chunks: list[int]) -> str:
    """``[4, 1, 1, 1]`` as "chunks [4, 1 x 3]"; one chunk of n as "one chunk [n]"."""
    if len(chunks) == 1:
        return f"one chunk [{chunks[0]}]"
    if all(c == 1 for c in chunks):
        return f"token by token [1 x {len(chunks)}]"
    return f"chunks {_list(chunks)}"


def _list(chunks: list[int]) -> str:
    """``[4, 1, 1, 1]`` as "[4, 1 x 3]" (runs of three or more equal chunks counted)."""
    parts, i = [], 0
    while i < len(chunks):
        j = i
        while j < len(chunks) and chunks[j] == chunks[i]:
            j += 1
        run = j - i  # a run of equal chunks: three or more are written once, with a count
        parts.extend([f"{chunks[i]} x {run}"] if run >= 3 else [str(chunks[i])] * run)
        i = j
    return f"[{', '.join(parts)}]"


def landmarks(n: int, window: int | None = None, limit: int | None = None) -> list[int]:
    """Cuts where a sliding window or a static cache changes regime: just before, at and just
    after its length, and at twice it (a window that slid once)."""
    marks = set()
    for length in (window, limit):
        if length:
            marks.update({length - 1, length, length + 1, 2 * length})
    return sorted(c for c in marks if 0 < c < n)


def fixed_schedules(
    n: int, *, variants: int = 1, window: int | None = None, branches: bool = True
) -> list[Schedule]:
    """The schedules every check runs, most telling first: one chunk (the plain call of the step
    interface) on every variant, token by token (on the first: it is ``n`` calls), a prefill of
    half then decoding on every variant, the prefix reused by two fresh continuations (in two
    chunks each: decoding is covered above), the state saved and restored, and cuts across a
    sliding window on every variant. About ``2 n`` calls in all."""
    half = n // 2
    tail = tuple(range(max(1, half), n))
    found = [Schedule(n, (), variant=v) for v in range(variants)]
    found.append(Schedule(n, tuple(range(1, n))))
    if half > 0:
        found += [Schedule(n, tail, variant=v) for v in range(variants)]
        if branches:
            split = tuple(sorted({half, half + max(1, (n - half) // 2)} - {n}))
            found.append(Schedule(n, split, Branch(half, 2, fresh=True)))
            found.append(Schedule(n, (half,), Branch(half, 2, fresh=False)))
    if window is not None and 0 < window < n:
        found += [Schedule(n, tuple(landmarks(n, window)), variant=v) for v in range(variants)]
    return list(dict.fromkeys(found))  # in order, without repeats (small n makes some equal)


def schedules(
    n: int,
    *,
    variants: int = 1,
    window: int | None = None,
    limit: int | None = None,
    branches: bool = True,
    max_cuts: int = MAX_CUTS,
):
    """Schedules of ``n`` positions for Hypothesis to search.

    Draw order is shrink order: the cuts (a failure shrinks to fewer, earlier cuts; some drawn
    at the window's and the static cache's ``landmarks``), then a decoding run (up to
    ``MAX_DECODE`` positions from some point on, one chunk each: a prefill, decoding, and the
    rest in one chunk, as a server interleaves them), then a branch (prefix reuse or
    save/restore; shrinks to none), then the variant (shrinks to the first).
    """
    if not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"n must be a positive integer, got {n!r}")
    if variants < 1:
        raise InvalidArgument(f"variants must be >= 1, got {variants}")
    if max_cuts < 0:
        raise InvalidArgument(f"max_cuts must be >= 0, got {max_cuts}")
    if n == 1:
        return st.builds(Schedule, st.just(1), st.just(()), variant=st.integers(0, variants - 1))
    marks = landmarks(n, window, limit)
    cut = st.integers(1, n - 1)
    if marks:
        cut = cut | st.sampled_from(marks)
    return _schedules(n, variants, cut, branches, min(max_cuts, n - 1))


@st.composite
def _schedules(draw, n, variants, cut, branches, max_cuts):
    cuts = set(draw(st.lists(cut, unique=True, max_size=max_cuts)))
    decode = draw(st.none() | st.tuples(st.integers(1, n - 1), st.integers(1, MAX_DECODE)))
    if decode is not None:
        start, length = decode
        cuts.update(range(start, min(n, start + length + 1)))
    cuts = tuple(sorted(cuts))
    branch = None
    if branches and cuts and draw(st.booleans()):
        branch = Branch(
            at=draw(st.sampled_from(cuts)),
            count=draw(st.sampled_from(CONTINUATIONS)),
            fresh=draw(st.booleans()),
        )
    variant = draw(st.integers(0, variants - 1))
    return Schedule(n, cuts, branch, variant)


def minimize(
    schedule: Schedule, fails: Callable[[Schedule], bool], over: Callable[[], bool] | None = None
) -> Schedule:
    """A minimal schedule that still ``fails``, from one that does: drop the branch, the
    variant, every cut it can, then move every cut as early as it can, until nothing changes
    (or ``over()``). Each try is one call of ``fails``."""

    def try_(candidate: Schedule) -> bool:
        return not (over is not None and over()) and fails(candidate)

    current, changed = schedule, True
    while changed:
        changed = False
        for candidate in _smaller(current):
            if candidate.size < current.size and try_(candidate):
                current, changed = candidate, True
                break
    return current


def _smaller(s: Schedule):
    """Candidates one step smaller than ``s``, the biggest steps first."""
    if s.branch is not None:
        yield replace(s, branch=None)
    if s.variant:
        yield replace(s, variant=0)
    for i in range(len(s.cuts)):  # drop one cut (keeping the branch's)
        if s.branch is None or s.cuts[i] != s.branch.at:
            yield replace(s, cuts=s.cuts[:i] + s.cuts[i + 1 :])
    for i, c in enumerate(s.cuts):  # move one cut earlier: to the earliest place first
        low = s.cuts[i - 1] + 1 if i else 1
        for earlier in sorted({low, (low + c) // 2, c - 1}):
            if low <= earlier < c:
                cuts = s.cuts[:i] + (earlier,) + s.cuts[i + 1 :]
                branch = s.branch
                if branch is not None and branch.at == c:
                    branch = replace(branch, at=earlier)
                yield replace(s, cuts=cuts, branch=branch)
