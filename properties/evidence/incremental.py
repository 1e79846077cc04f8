"""The incremental check: every way of running a model a chunk at a time (cached, chunked,
streamed) gives, at every position, the predictions of one full pass.

This is the other side of the lecture's equivalence (slides 2 to 4): synthesis position by
position equals the full pass. Users break it in the paths a model takes to generate or stream:
KV caches whose positions restart per chunk, sliding windows the cache forgets, static caches
read past what was written, ALiBi built over the query only, streaming convolutions or recurrent
states that lose their state between calls. The check runs, on one random input:

- one full pass (and one per continuation with inputs of its own);
- the fixed schedules of :func:`~properties.evidence.schedules.fixed_schedules` (one chunk,
  token by token, prefill then decode, prefix reuse, save/restore, cuts across the window),
  on every way the stepper has (a Hugging Face dynamic and static cache);
- a Hypothesis search over cut points, chunk sizes, branches and variants (cuts drawn at a
  sliding window's and a static cache's lengths too), which shrinks a divergence, and
  :func:`~properties.evidence.schedules.minimize`, which makes it minimal;

and compares the predictions at every position. Unwritten cache slots that a stepper can reach
are poisoned with a large finite value (litgpt's trick; NaN would also poison a correct masked
read, since ``0 * NaN`` is NaN): an unsliced read of them shows.

Rounding is not a bug. The two paths sum in different orders, so in float32 they differ by a
few ulps. A difference counts in the model's dtype when it exceeds ``ulps * eps(dtype)`` of the
outputs' scale (never looser than ``CAP``); it is then confirmed on a float64 copy of the model,
as the audit's perturbations are: a genuine divergence keeps its size in float64, rounding
shrinks with the machine epsilon (by about 1e-9), whatever the size of the intermediates that
caused it. So a position diverges in float64 when its difference exceeds both ``ulps *
eps(float64)`` of the scale and ``CONFIRM_RATIO`` of its float32 difference; a schedule whose
differences all vanish there is rounding (counted, not reported). A float32 difference above
``OBVIOUS`` of the scale counts without a float64 run (rounding that large would need
intermediates 1e5 times the outputs). A float64 model is decided at its own tolerance. The
minimal divergence is reported with both differences, its first diverging position (the
float64 copy's, when it ran: a real divergence below the float32 tolerance shows there), and
the first module whose output diverges (:mod:`properties.evidence.first_module`).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from properties import progress
from properties.errors import AdapterError, AuditError, ModelError, describe
from properties.evidence.schedules import Schedule, fixed_schedules, minimize, schedules
from properties.evidence.searching import search
from properties.subject.calls import float64_copy, model_mode, seeded
from properties.subject.canonical import Subject
from properties.subject.steppers import Stepper, preserved_buffers, steppers_for

__all__ = ["IncrementalReport", "Outcome", "incremental_evidence"]

ULPS = 256  # a difference within this many ulps of the outputs' scale is rounding
CAP = 1e-4  # the model dtype's relative tolerance is never looser (half types: float64 decides)
OBVIOUS = 1e-2  # a float32 difference above this fraction of the scale is no rounding
CONFIRM_RATIO = 1e-3  # float64 difference / float32 difference below this: rounding
POISON = 1e4  # what unwritten cache slots hold (large, finite: 0 * POISON is still 0)
EQUAL, ROUNDING, DIVERGES = "equal", "rounding", "diverges"


@dataclass(eq=False)  # compared by identity (its tensors have no truth value)
class Outcome:
    """One schedule run and compared with the full pass."""

    schedule: Schedule
    diffs: torch.Tensor  # (n,) largest |stepped - full| per position, in the model's dtype
    tolerance: float  # in the model's dtype
    verdict: str = EQUAL
    position: int | None = None  # the first diverging position
    continuation: int = 0  # the continuation whose prediction diverges there
    error: str | None = None  # the step raised (at ``position``)
    diffs64: torch.Tensor | None = None  # the same on the float64 copy, when it ran
    tolerance64: float | None = None
    owners: torch.Tensor | None = None  # (n,) the continuation with the largest difference

    @property
    def diverges(self) -> bool:
        return self.verdict == DIVERGES

    @property
    def max_diff(self) -> float:
        return float(self.diffs.max())

    @property
    def max_diff64(self) -> float | None:
        return None if self.diffs64 is None else float(self.diffs64.max())

    def at(self, diffs: torch.Tensor | None) -> float | None:
        """The difference at the first diverging position (``diffs``: either dtype's)."""
        if diffs is None or self.position is None:
            return None
        return float(diffs[self.position])


@dataclass
class IncrementalReport:
    """What the incremental check found (the JSON section ``incremental``)."""

    adapter: str  # the kind of stepper
    variants: list[str]  # its ways of running (a Hugging Face dynamic and static cache)
    dtype: str
    ulps: float = ULPS  # the rounding tolerance, in ulps of the scale
    scale: float = 0.0  # largest |prediction| of the full pass
    tolerance: float = 0.0  # in the model's dtype
    tolerance64: float | None = None
    tried: list[Outcome] = field(default_factory=list)  # every schedule run, in order
    fixed: int = 0  # of them, the fixed schedules (they come first)
    examples: int = 0  # schedules Hypothesis drew (shrinking included; a repeat is not rerun)
    divergence: Outcome | None = None  # the minimal diverging schedule
    module: dict | None = None  # the first module whose output diverges
    rounding: int = 0  # schedules whose difference vanished in float64
    poisoned: int = 0  # unwritten cache values poisoned
    steps: int = 0  # calls of the stepper
    full_seconds: float = 0.0  # one full pass
    seconds: float = 0.0
    budgeted: bool = False  # the time budget stopped the check early
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return self.divergence is None


class _OutOfTime(Exception):
    pass


def _relative(dtype: torch.dtype, ulps: float) -> float:
    return min(ulps * torch.finfo(dtype).eps, CAP) if dtype != torch.float64 else (
        ulps * torch.finfo(torch.float64).eps
    )


def position_diffs(y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    """``(B, n, K)`` twice -> ``(n,)`` largest absolute difference, NaN-aware (NaN on one side
    only is an infinite difference, on both sides none), in float64."""
    diff = (y1.double() - y0.double()).abs()
    nan0, nan1 = torch.isnan(y0), torch.isnan(y1)
    diff = torch.where(nan0 & nan1, torch.zeros_like(diff), diff)
    diff = torch.where(nan0 ^ nan1, torch.full_like(diff, math.inf), diff)
    return diff.amax(dim=(0, 2))


class Checker:
    """Runs schedules on one subject (one dtype) and compares them with its full passes."""

    def __init__(self, subject: Subject, steppers: list[Stepper], x: torch.Tensor, *, seed: int,
                 ulps: float, over: Callable[[], bool], fresh: dict | None = None):
        self.subject, self.steppers, self.x, self.seed = subject, steppers, x, seed
        self.ulps, self.over = ulps, over
        self.rel = _relative(subject.dtype, ulps)
        self.fresh = {} if fresh is None else fresh  # k -> an input of its own (shared by dtypes)
        self._full: dict[tuple, torch.Tensor] = {}
        self.scale = 0.0  # largest finite |prediction| of the full pass on the base input
        self.steps = 0
        self.double: Checker | None = None  # the float64 copy's, made on first use
        self.no_double: str | None = None  # why there is none
        self.on_step: Callable | None = None  # (continuation or None, begin, end) before a step

    # -- inputs and full passes ------------------------------------------------------------
    def inputs(self, schedule: Schedule) -> list[tuple[tuple, torch.Tensor]]:
        """``(key, input)`` of every continuation: the base input, or (prefix reuse) the base
        input's prefix followed by an input of its own."""
        found = [((0,), self.x)]
        b = schedule.branch
        for k in range(1, schedule.continuations):
            if not b.fresh:
                found.append(((0,), self.x))
                continue
            if k not in self.fresh:
                generator = torch.Generator().manual_seed(self.seed * 1000 + 17 + k)
                self.fresh[k] = self.subject.draw_inputs(1, generator)
            x = torch.cat([self.x[:, : b.at], self.fresh[k][:, b.at :]], 1)
            found.append(((k, b.at), x))
        return found

    def full(self, key: tuple, x: torch.Tensor) -> torch.Tensor:
        if key not in self._full:
            with seeded(self.subject, self.seed):
                y = self.subject(x).detach()
            self._full[key] = y
            if key == (0,):
                finite = y[torch.isfinite(y)].abs()
                self.scale = float(finite.max()) if finite.numel() else 0.0
        return self._full[key]

    @property
    def tolerance(self) -> float:
        return self.rel * self.scale

    # -- one schedule ----------------------------------------------------------------------
    def stepped(self, schedule: Schedule, xs: list[torch.Tensor]):
        """The predictions of every continuation (``(1, n, K)``, NaN after a step that raised),
        and ``(position, description)`` of the step that raised (or None)."""
        stepper = self.steppers[schedule.variant]
        at = schedule.n if schedule.branch is None else schedule.branch.at
        state = stepper.start()
        prefix: list[torch.Tensor] = []
        try:
            for a, b in schedule.spans:
                if a >= at:
                    break
                y, state = self._step(stepper, xs[0], a, b, state, None)
                prefix.append(y)
        except _Raised as raised:
            return [self._padded(prefix, schedule.n)] * len(xs), (raised.position, raised.text)
        saved = [stepper.save(state) for _ in xs[1:]]  # before the first continuation runs
        outputs, failure = [], None
        for k, x in enumerate(xs):
            ys, st = list(prefix), state if k == 0 else saved[k - 1]
            try:
                for a, b in schedule.spans:
                    if a >= at:
                        y, st = self._step(stepper, x, a, b, st, k)
                        ys.append(y)
            except _Raised as raised:
                failure = failure or (raised.position, raised.text)
            outputs.append(self._padded(ys, schedule.n))
            if failure:
                outputs.extend(outputs[-1:] * (len(xs) - len(outputs)))
                break
        return outputs, failure

    def _step(self, stepper, x, a, b, state, continuation):
        if self.over():
            raise _OutOfTime
        if self.on_step is not None:
            self.on_step(continuation, a, b)
        self.steps += 1
        try:
            y, state = stepper.step(x[:, a:b], a, state)
        except AuditError:
            raise
        except Exception as exc:
            raise _Raised(a, describe(exc)) from None
        return y.detach(), state

    @staticmethod
    def _padded(ys: list[torch.Tensor], n: int) -> torch.Tensor:
        if not ys:
            return torch.full((1, n, 1), math.nan)
        y = torch.cat(ys, 1)
        missing = n - y.shape[1]
        return torch.cat([y, y.new_full((1, missing, y.shape[2]), math.nan)], 1) if missing else y

    def compare(self, schedule: Schedule) -> Outcome:
        """Run ``schedule`` in this dtype and compare it with the full passes."""
        self.full((0,), self.x)
        keyed = self.inputs(schedule)
        fulls = [self.full(key, x) for key, x in keyed]
        outputs, failure = self.stepped(schedule, [x for _, x in keyed])
        per = torch.stack([self._diffs(f, y) for f, y in zip(fulls, outputs, strict=True)])
        if failure is not None:
            per[:, failure[0] :] = math.inf
        diffs, which = per.max(0)  # (n,): the worst continuation at each position
        outcome = Outcome(schedule, diffs, self.tolerance, owners=which)
        over = (diffs > outcome.tolerance).nonzero().flatten()
        if len(over):
            outcome.verdict, outcome.position = DIVERGES, int(over[0])
            outcome.continuation = int(which[outcome.position])
        if failure is not None:
            outcome.error = failure[1]
        return outcome

    @staticmethod
    def _diffs(full: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.shape[-1] != full.shape[-1] and not torch.isnan(y).all():
            raise AdapterError(
                f"the stepped path gives {y.shape[-1]} values per position, the full pass "
                f"{full.shape[-1]}",
                "return the same predictions from a step as from the full pass (--output)",
            )
        if y.shape != full.shape:  # nothing ran: a step raised first
            return torch.full(full.shape[1:2], math.inf, dtype=torch.float64)
        return position_diffs(full, y.to(full.dtype))

    # -- verdicts --------------------------------------------------------------------------
    def outcome(self, schedule: Schedule, *, confirm_all: bool = False) -> Outcome:
        """``schedule``'s outcome, its divergence confirmed on the float64 copy (rounding
        otherwise); ``confirm_all`` runs the copy even when the divergence is obvious (for the
        report's numbers)."""
        outcome = self.compare(schedule)
        if not outcome.diverges:
            return outcome
        obvious = outcome.error is not None or (
            self.subject.dtype.itemsize >= 4 and outcome.max_diff > OBVIOUS * self.scale
        )
        if self.subject.dtype == torch.float64 or (obvious and not confirm_all):
            return outcome
        double = self._float64()
        if double is None:
            return outcome  # counted unconfirmed; the report says why
        o64 = double.compare(schedule)
        outcome.diffs64, outcome.tolerance64 = o64.diffs, o64.tolerance
        # genuine where float64 keeps the difference; inf (a NaN, a step that raised) always
        floor = torch.clamp(CONFIRM_RATIO * outcome.diffs, min=o64.tolerance)
        genuine = ((o64.diffs > floor) | torch.isinf(o64.diffs)).nonzero().flatten()
        if len(genuine):
            outcome.position = int(genuine[0])
            outcome.continuation = int(o64.owners[outcome.position])
            outcome.error = outcome.error or o64.error
        elif not obvious:
            outcome.verdict, outcome.position = ROUNDING, None
        return outcome

    def _float64(self) -> "Checker | None":
        if self.double is None and self.no_double is None:
            copy, note = float64_copy(self.subject)
            if copy is self.subject:
                self.no_double = note or "the model could not be copied to float64"
                return None
            steppers = [s.on(copy) for s in self.steppers]
            self.double = Checker(copy, steppers, self.x, seed=self.seed, ulps=self.ulps,
                                  over=self.over, fresh=self.fresh)
        return self.double


class _Raised(Exception):
    def __init__(self, position: int, text: str):
        self.position, self.text = position, text


# ---------------------------------------------------------------------------------------------
# The check


def incremental_evidence(
    subject: Subject,
    *,
    seed: int = 0,
    max_examples: int = 25,
    ulps: float = ULPS,
    poison: float | None = POISON,
    deadline: float | None = None,
) -> IncrementalReport:
    """Run the fixed schedules and the Hypothesis search on ``subject``'s steppers and report
    the minimal divergence (see the module's docstring). ``deadline``: a
    ``time.perf_counter()`` value at which the check stops (the report says it was budgeted).
    Raises :class:`~properties.errors.AdapterError` when the subject cannot be stepped at all
    (no step interface, or one chunk of the whole sequence raises)."""
    started = time.perf_counter()
    steppers = steppers_for(subject)
    for s in steppers:
        s.poison = poison
    report = IncrementalReport(
        adapter=type(steppers[0]).__name__,
        variants=[s.name for s in steppers],
        dtype=str(subject.dtype).replace("torch.", ""),
        ulps=ulps,
    )

    def over() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    x = subject.draw_inputs(1, torch.Generator().manual_seed(seed + 31))
    with model_mode(subject, train=False), torch.no_grad(), preserved_buffers(subject.module):
        checker = Checker(subject, steppers, x, seed=seed, ulps=ulps, over=over)
        try:
            _run(checker, report, max_examples, seed, over)
        finally:
            for s in steppers + (checker.double.steppers if checker.double else []):
                s.finish()
            report.poisoned = sum(s.poisoned for s in steppers)
            if report.tolerance64 is None and checker.double is not None:
                report.tolerance64 = checker.double.tolerance
            report.steps = checker.steps + (checker.double.steps if checker.double else 0)
    report.seconds = time.perf_counter() - started
    return report


def _run(checker: Checker, report: IncrementalReport, max_examples: int, seed, over) -> None:
    n = checker.subject.n_positions
    t = time.perf_counter()
    checker.full((0,), checker.x)
    report.full_seconds = time.perf_counter() - t
    report.scale, report.tolerance = checker.scale, checker.tolerance
    branches = _probe(checker, report)
    window = next((s.window for s in checker.steppers if s.window), None)
    limit = next((s.limit for s in checker.steppers if s.limit), None)
    variants = len(checker.steppers)
    failing: list[Outcome] = []
    memo: dict[Schedule, Outcome] = {}  # Hypothesis may ask for a schedule twice

    def run(schedule: Schedule, counted: bool = False) -> Outcome | None:
        if schedule in memo:
            return memo[schedule]
        try:
            outcome = memo[schedule] = checker.outcome(schedule)
        except _OutOfTime:
            report.budgeted = True
            return None
        progress.advance(1 if counted else schedule.steps)
        report.tried.append(outcome)
        report.rounding += outcome.verdict == ROUNDING
        if outcome.diverges:
            failing.append(outcome)
        return outcome

    fixed = fixed_schedules(n, variants=variants, window=window, branches=branches)
    progress.phase("incremental: fixed schedules", sum(s.steps for s in fixed))
    for schedule in fixed:
        if run(schedule) is None:
            break
    report.fixed = len(report.tried)
    if max_examples > 0 and n > 1 and not over():
        progress.phase("incremental: Hypothesis", max_examples)
        strategy = schedules(n, variants=variants, window=window, limit=limit, branches=branches)

        def diverges(schedule: Schedule) -> bool:
            report.examples += 1  # what Hypothesis drew, run or remembered
            outcome = run(schedule, counted=True)
            return outcome is not None and outcome.diverges

        search(strategy, diverges, max_examples=max_examples, seed=seed)
    if failing:
        _conclude(checker, report, failing, over)
    if checker.no_double and (failing or report.rounding):
        report.notes.append(
            f"differences were not confirmed in float64 ({checker.no_double}): rounding may "
            "count as a divergence"
        )


def _probe(checker: Checker, report: IncrementalReport) -> bool:
    """One chunk of the whole sequence on every variant: the plain call of the step interface.
    The first variant must run (else the subject cannot be stepped: an error); a later one that
    raises is left out, with a note. Returns whether states can be saved (for branches)."""
    n = checker.subject.n_positions
    kept, saves = [], True
    for v, stepper in enumerate(checker.steppers):
        try:
            _, state = stepper.step(checker.x, 0, stepper.start())
        except AuditError:
            raise
        except Exception as exc:
            if v == 0:
                raise ModelError(
                    f"{stepper.name} raised {describe(exc)} on one chunk of {n} positions",
                    _fix(stepper),
                ) from None
            report.notes.append(f"{stepper.name}: raised {describe(exc)}; not checked")
            continue
        kept.append(stepper)
        try:
            stepper.save(state)
        except AdapterError as exc:
            if saves:
                report.notes.append(f"{exc.problem}: prefix reuse and save/restore not checked")
            saves = False
    checker.steppers[:] = kept
    report.variants = [s.name for s in kept]
    return saves


def _fix(stepper: Stepper) -> str:
    from properties.subject.steppers import HOOK_FIX

    return f"fix the model's step interface, or {HOOK_FIX}"


def _conclude(checker: Checker, report: IncrementalReport, failing: list[Outcome], over) -> None:
    """The minimal diverging schedule (the smallest found, then minimized), with its float64
    numbers and the first module whose output diverges."""
    from properties.evidence.first_module import first_diverging_module

    best = min(failing, key=lambda o: o.schedule.size)
    seen: dict[Schedule, bool] = {o.schedule: o.diverges for o in report.tried}

    def fails(schedule: Schedule) -> bool:
        if schedule not in seen:
            try:
                seen[schedule] = checker.outcome(schedule).diverges
            except _OutOfTime:
                return False
        return seen[schedule]

    minimal = minimize(best.schedule, fails, over)
    try:
        outcome = checker.outcome(minimal, confirm_all=True)
    except _OutOfTime:
        outcome = best
        report.budgeted = True
    if not outcome.diverges:  # cannot happen for a deterministic model: say so, keep the best
        report.notes.append(
            f"the minimal schedule ({minimal.describe(report.variants)}) did not diverge again "
            "when rerun: the stepped path is not deterministic"
        )
        outcome = best
    report.divergence = outcome
    report.tolerance64 = outcome.tolerance64
    where = checker.double if outcome.diffs64 is not None and checker.double else checker
    if not over():
        report.module = first_diverging_module(where, outcome)
