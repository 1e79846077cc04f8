"""Perturbation evidence: replace the future, watch the past.

For a cut ``c`` (a rank), every input of rank ``>= c`` is replaced and the predictions are
compared with the unperturbed ones:

- a change at an output of rank ``< c`` means that output sees the future (mode ``none``);
- a change at the output of rank ``c`` itself means it sees the present (mode ``inclusive``).

Two searches, both black-box (they work on thresholds, integer ops, anything):

- a *sweep* over cuts (every cut on small grids, a sample on large ones) with one wide
  perturbation per cut, batched when the model is batch-independent;
- a *Hypothesis search* (:func:`hypothesis.find`) over cuts, kinds, magnitudes (1e-3 .. 1e4) and
  seeds, which shrinks any failure to the earliest cut and the smallest change: that minimal
  counterexample is what a user needs to find the bug.

Tolerances are measured, not guessed: the *noise floor* is the largest difference between two runs
of the same input (same RNG state) and between batch slots; a change counts when it exceeds
``SAFETY`` times that floor (any change at all when the floor is zero, as it is for causal models
in float64 and usually in float32).
"""

from dataclasses import dataclass, field, fields
from random import Random

import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from properties import progress
from properties.errors import ModelError
from properties.evidence import strategies
from properties.evidence.replacements import ZEROS, Perturbation, apply, replace_one
from properties.evidence.sharding import chunked, copies_per_pass, share, spread
from properties.subject import memory
from properties.subject.calls import check_outputs_finite, float64_copy, forward
from properties.subject.canonical import Subject
from properties.verdict import Kind, Source, Violation

__all__ = [
    "BATCH_DEPENDENCE",
    "CONFIRM_RATIO",
    "LOCALIZE_LIMIT",
    "OBVIOUS",
    "OUTPUT_PER_PASS",
    "POSITIONS_PER_PASS",
    "PerturbationReport",
    "Runner",
    "SAFETY",
    "batch_interaction",
    "chunk_copies",
    "hypothesis_search",
    "measure_noise_floor",
    "merge_reports",
    "perturbation_evidence",
    "sweep",
    "sweep_violations",
]

SAFETY = 4.0
BATCH_DEPENDENCE = 1e-4  # slot differences above this (relative) mean samples interact
LOCALIZE_LIMIT = 64  # positions tried one by one to name the input behind a leak
POSITIONS_PER_PASS = 1 << 16  # positions x samples in one stacked forward pass
CONFIRM_RATIO = 1e-3  # float64 change / float32 change below this: rounding, not dependency
# A float32 change above this fraction of the outputs' scale is no rounding (that would need
# intermediates 1e5 times larger than the outputs): it counts without a float64 pass.
OBVIOUS = 1e-2
# Output bytes one stacked pass may produce: beyond that a pass is bound by memory traffic (the
# logits of a language model) and stacking more copies saves nothing.
OUTPUT_PER_PASS = 256 << 20


def _first_set(values):
    return next((v for v in values if v), values[0])


def _combined(how, default):
    """A report's scalar field, and how the shards' values of it combine into the whole's."""
    return field(default=default, metadata={"merge": how})


@dataclass
class PerturbationReport:
    # the evidence itself (merged by merge_reports, record by record)
    sweep: dict[int, tuple[int, float, Kind]] = field(default_factory=dict)  # see sweep()
    found: list[Violation] = field(default_factory=list)  # Hypothesis' minimal violations
    counterexamples: dict[Kind, Perturbation] = field(default_factory=dict)
    # scalars: each says how the shards' values combine
    train: bool = _combined(_first_set, False)  # gathered in training mode
    noise_floor: float = _combined(max, 0.0)
    tolerance: float = _combined(max, 0.0)
    batch_independent: bool = _combined(all, True)
    cuts_swept: int = _combined(sum, 0)
    examples: int = _combined(sum, 0)
    rounding: int = _combined(sum, 0)  # float32 changes dismissed as rounding
    # why small changes were counted without a float64 confirmation
    unconfirmed: str = _combined(_first_set, "")

    @classmethod
    def scalars(cls) -> tuple[str, ...]:
        """The scalar fields (what a shard file writes as they are)."""
        return tuple(f.name for f in fields(cls) if "merge" in f.metadata)

    def violations(self, subject: Subject) -> list[Violation]:
        """Hypothesis' minimal violations first, then the sweep's, by output rank."""
        return self.found + sweep_violations(subject, self.sweep, self.train)

    def notes(self, train: bool) -> list[str]:
        notes = []
        if not self.batch_independent:
            notes.append(
                "predictions depend on the other samples of the batch"
                + (" (expected in training mode)" if train else "")
            )
        if self.rounding:
            notes.append(
                f"{self.rounding} changes of float32 predictions vanished in float64: rounding "
                "in arithmetic where the future cancels only on paper (x_t subtracted back out "
                "of a sum, a kernel that mixes neighbouring inputs), not a dependency; not counted"
            )
        if self.unconfirmed:
            notes.append(
                "small float32 changes counted without a float64 confirmation, so rounding may "
                f"count: on the float64 copy, {self.unconfirmed}"
            )
        return notes


def merge_reports(reports: list[PerturbationReport]) -> PerturbationReport:
    """One report from the reports of shards that swept disjoint cuts (the first shard ran the
    Hypothesis search): the same report one process would have made."""
    order = (Kind.FUTURE, Kind.PRESENT)  # the order one process searches in
    found = sorted((v for r in reports for v in r.found), key=lambda v: order.index(v.kind))
    merged = PerturbationReport(
        found=found,
        counterexamples={
            k: r.counterexamples[k] for k in order for r in reports if k in r.counterexamples
        },
        **{
            f.name: f.metadata["merge"]([getattr(r, f.name) for r in reports])
            for f in fields(PerturbationReport)
            if "merge" in f.metadata
        },
    )
    for report in reports:
        for t, (cut, effect, kind) in report.sweep.items():
            _record(merged.sweep, t, cut, effect, kind)
    return merged


class Runner:
    """Evaluates perturbations against cached unperturbed outputs, in one mode, one RNG seed.

    Changes seen in a float32 (or lower) model are confirmed on a float64 copy before they count:
    a genuine dependency moves the float64 prediction as much as the float32 one, while rounding
    (an exclusive prefix sum computed as ``cumsum(x) - x`` "depends" on ``x_t`` through its
    last bits) shrinks by the ratio of the two machine epsilons.
    """

    def __init__(self, subject: Subject, *, seed: int, pool_size: int = 2, confirm: bool = True):
        self.subject = subject
        self.seed = seed
        self.pool_size = pool_size
        self._pools: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.tolerance = 0.0
        self._confirm = confirm and subject.dtype != torch.float64
        self._double: Runner | None = None
        self.rounding = 0  # violations dismissed as rounding
        self.cost: memory.PassCost | None = None  # of one pool, measured on its first pass
        self.scale = 0.0  # largest |output| of the first pool
        self.unconfirmed = ""  # why small float32 changes could not be confirmed in float64

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.subject, x, seed=self.seed).detach()

    def pool(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._pools:
            generator = torch.Generator().manual_seed(self.seed * 1000 + index)
            # class-valued subjects get class values: the loss check reads its targets here
            x = self.subject.draw_inputs(self.pool_size, generator, integral=True)
            if self.cost is None:  # the first pass is the probe that sizes every later one
                y, self.cost = memory.measure(lambda: self.run(x))
                self.scale = float(y.abs().max())
                self.copies(cap=1)  # not even one pool fits: say so before going on
            else:
                y = self.run(x)
            check_outputs_finite(y)
            self._pools[index] = (x, y)
        return self._pools[index]

    def copies(self, cap: int) -> int:
        """Pools one stacked forward pass may hold within the memory budget (at most ``cap``),
        by the cost the first pool's pass measured (create a pool first). It does not make the
        pool itself: the first pool asks this before it is stored, and would run twice."""
        what = f"one forward pass of {self.pool_size} sample(s)"
        return memory.copies(self.cost.per_copy, cap, what=what)

    def changes(self, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """(N,) largest change per position over samples and outputs (NaN-aware)."""
        return _changes(y0, y1)

    def changes_at(self, pool: int, x1: torch.Tensor) -> torch.Tensor:
        return self.changes(self.pool(pool)[1], self.run(x1))

    def evaluate(self, p: Perturbation) -> tuple[torch.Tensor, torch.Tensor]:
        """Changes per position for ``p``, and the perturbed inputs."""
        x, _ = self.pool(p.pool)
        x1 = apply(self.subject, x, p)
        return self.changes_at(p.pool, x1), x1

    def genuine(
        self, pool: int, x1: torch.Tensor, changes: torch.Tensor, outputs: torch.Tensor
    ) -> torch.Tensor:
        """The ``outputs`` whose change survives in float64 (all of them for float64 models)."""
        if not self._confirm or len(outputs) == 0:
            return outputs
        if bool((changes[outputs] > OBVIOUS * self.scale).all()):
            return outputs
        try:
            double = self._float64()
            if double is None:
                return outputs
            changes64 = double.changes_at(pool, x1)
        except ModelError:  # the float64 copy does not run (a dtype fixed inside the model)
            self._confirm = False
            return outputs
        except memory.MemoryBudgetError as exc:  # counted unconfirmed, and said so
            self._confirm = False
            self.unconfirmed = f"{exc.problem} ({exc.fix})"
            return outputs
        keep = changes64[outputs] > torch.maximum(
            torch.full_like(changes64[outputs], double.tolerance),
            CONFIRM_RATIO * changes[outputs],
        )
        # A NaN on one side is an infinite change in both dtypes (inf > 1e-3 * inf is false):
        # it is no rounding.
        keep |= torch.isinf(changes64[outputs])
        self.rounding += int((~keep).sum())
        return outputs[keep]

    def _float64(self) -> "Runner | None":
        if self._double is None:
            copy, note = float64_copy(self.subject)
            if note or copy is self.subject:
                self._confirm = False
                return None
            self._double = Runner(copy, seed=self.seed, pool_size=self.pool_size, confirm=False)
            self._double.tolerance = SAFETY * self._double.noise_floor(2)[0]
        return self._double

    def noise_floor(self, copies: int, *, stacked: bool = True) -> tuple[float, bool]:
        """See :func:`measure_noise_floor` (at the first pool)."""
        x, y0 = self.pool(0)
        return measure_noise_floor(self.subject, x, y0, copies, seed=self.seed, stacked=stacked)


def measure_noise_floor(
    subject: Subject,
    x: torch.Tensor,
    y0: torch.Tensor,
    copies: int,
    *,
    seed: int,
    stacked: bool = True,
) -> tuple[float, bool]:
    """The noise floor of ``subject`` at ``x`` (whose outputs are ``y0``), and whether its
    samples are independent of each other.

    The floor is the largest difference between two runs of ``x`` and, when the caller will
    stack copies (``stacked``), between ``x`` alone and ``x`` stacked 2 and ``copies`` times:
    float32 kernels round differently with the batch size. Independence: the outputs of the
    first samples do not move when the *other* samples of the batch change (same slots, same
    RNG state, so dropout masks match; BatchNorm's batch statistics do not).
    """

    def run(inputs):
        return forward(subject, inputs, seed=seed).detach()

    floor = _changes(y0, run(x)).max()
    alongside_self, independent = batch_interaction(subject, x, seed=seed)
    if stacked and independent:
        floor = torch.maximum(floor, _changes(y0, alongside_self).max())
        if copies > 2:
            reps = run(x.repeat(copies, *([1] * (x.dim() - 1)))).reshape(copies, *y0.shape)
            floor = torch.maximum(floor, _changes(y0, reps).max())
    return float(floor), independent


def batch_interaction(
    subject: Subject, x: torch.Tensor, *, seed: int
) -> tuple[torch.Tensor, bool]:
    """Whether the samples of ``x`` are independent of the other samples of their batch: their
    outputs alongside a copy of ``x`` and alongside fresh samples (same slots, same RNG state)
    differ by at most ``BATCH_DEPENDENCE`` of the outputs' scale. Also returns the first
    outputs, ``x``'s alongside its copy. Two forward passes of ``2 * len(x)`` samples."""

    def run(inputs):
        return forward(subject, inputs, seed=seed).detach()

    fresh = subject.draw_inputs(len(x), torch.Generator().manual_seed(seed + 99))
    alongside_self = run(torch.cat([x, x]))[: len(x)]
    alongside_other = run(torch.cat([x, fresh.to(x.dtype)]))[: len(x)]
    interaction = float(_changes(alongside_self, alongside_other).max())
    scale = float(alongside_self.abs().max().clamp_min(1e-30))
    return alongside_self, interaction <= BATCH_DEPENDENCE * scale


def _changes(y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    """Largest change per position: ``y0`` is ``(B, N, K)``, ``y1`` is ``(..., B, N, K)``;
    the result is ``(..., N)`` (one row per leading index of ``y1``), in float64.

    A NaN on one side only is an infinite change; NaN on both sides is none. The common case
    (no NaN) takes one subtraction in the outputs' own dtype: this runs on every forward pass.
    Stacked copies are reduced one at a time, so the comparison holds one copy's difference (a
    language model's logits are positions x vocabulary), never the whole stack's, nor in float64.
    """
    if y1.dim() > y0.dim() and y1.shape[0] > 1:
        return torch.stack([_changes(y0, one) for one in y1])
    fast = (y1 - y0).abs().amax(dim=(-3, -1))
    if not torch.isnan(fast).any():
        return fast.double()
    diff = (y1.double() - y0.double()).abs()
    nan0, nan1 = torch.isnan(y0), torch.isnan(y1)
    diff = torch.where(nan0 & nan1, torch.zeros_like(diff), diff)
    diff = torch.where(nan0 ^ nan1, torch.full_like(diff, float("inf")), diff)
    return diff.amax(dim=(-3, -1))


# ---------------------------------------------------------------------------------------------
# Violations from the changes of one cut


def _future(subject: Subject, changes: torch.Tensor, cut: int, tol: float) -> torch.Tensor:
    return ((subject.ranks < cut) & (changes > tol)).nonzero().flatten()


def _present(subject: Subject, changes: torch.Tensor, cut: int, tol: float) -> torch.Tensor:
    return ((subject.ranks == cut) & (changes > tol)).nonzero().flatten()


def _position_of_rank(subject: Subject, rank: int) -> int:
    return int((subject.ranks == rank).nonzero()[0])


# ---------------------------------------------------------------------------------------------
# The sweep


def chunk_copies(runner: Runner, items: int) -> int:
    """How many perturbed copies of the pool one stacked forward pass holds: as many as the
    memory budget allows (measured on the pool's own pass), at most ``POSITIONS_PER_PASS``
    position-samples (beyond that a bigger batch is no faster), and few enough that ``items``
    cuts make ``MIN_CHUNKS`` chunks (for shards to share)."""
    cap = copies_per_pass(runner.pool_size, runner.subject.n_positions, POSITIONS_PER_PASS)
    runner.pool(0)
    cap = min(cap, max(1, OUTPUT_PER_PASS // max(1, runner.cost.output)))
    return runner.copies(spread(cap, items))


def sweep(runner: Runner, cut_list: list[int], *, per_chunk: int, shard=None, observe=None) -> dict:
    """At each cut, the future replaced by the lecture's zeros (wide values are the Hypothesis
    search's job). Returns ``{output: (cut, effect, kind)}``: for each output seen to move, the
    furthest cut that moved it (its furthest future input), or its own cut when it only sees
    the present. ``observe(cut, outputs)`` sees every perturbed output (the loss check)."""
    subject = runner.subject
    x, y0 = runner.pool(0)
    records: dict[int, tuple[int, float, str]] = {}
    for chunk in chunked(cut_list, per_chunk, shard):
        perturbed = [apply(subject, x, Perturbation(c, ZEROS, 0.0, seed=c)) for c in chunk]
        y1 = runner.run(torch.cat(perturbed)).reshape(len(chunk), *y0.shape)
        progress.advance(len(chunk))
        if observe is not None:
            for c, y in zip(chunk, y1, strict=True):
                observe(c, y)
        changes = runner.changes(y0, y1)  # (cuts, N)
        cuts = torch.tensor(chunk)[:, None]
        moved = (changes > runner.tolerance) & (subject.ranks[None, :] <= cuts)
        for i in moved.any(1).nonzero().flatten().tolist():
            c = chunk[i]
            outputs = runner.genuine(0, perturbed[i], changes[i], moved[i].nonzero().flatten())
            for t in outputs.tolist():
                kind_ = Kind.FUTURE if subject.ranks[t] < c else Kind.PRESENT
                _record(records, t, c, float(changes[i, t]), kind_)
    return records


def _record(records: dict, t: int, cut: int, effect: float, kind: Kind) -> None:
    """Keep, per output, a future violation over a present one, and the furthest cut."""
    old = records.get(t)
    if old is None or (kind == Kind.FUTURE and (old[2] == Kind.PRESENT or old[0] < cut)):
        records[t] = (cut, effect, kind)


def sweep_violations(subject: Subject, records: dict, train: bool) -> list[Violation]:
    return [
        Violation(
            output=t,
            input=_position_of_rank(subject, c),
            kind=kind,
            source=Source.SWEEP,
            effect=effect,
            detail=f"positions of rank >= {c} were replaced",
            train=train,
        )
        for t, (c, effect, kind) in sorted(
            records.items(), key=lambda kv: int(subject.ranks[kv[0]])
        )
    ]


# ---------------------------------------------------------------------------------------------
# The Hypothesis search


def hypothesis_search(
    runner: Runner,
    kind: Kind,
    *,
    max_examples: int,
    seed: int,
    train: bool = False,
    over=None,
) -> tuple[Violation | None, Perturbation | None, int]:
    """Find, then shrink, a perturbation that shows a ``kind`` ("future"/"present") violation.

    Returns the violation (output, localized input, effect), the minimal perturbation and the
    number of examples tried. ``over()``: true once the time budget is spent; the search then
    stops trying new examples (a shrink in progress keeps what it has).
    """
    subject = runner.subject
    test = _future if kind == Kind.FUTURE else _present
    calls = [0]

    def shows_violation(p: Perturbation) -> bool:
        if over is not None and over():
            return False
        calls[0] += 1
        progress.advance()
        changes, x1 = runner.evaluate(p)
        moved = test(subject, changes, p.cut, runner.tolerance)
        return len(runner.genuine(p.pool, x1, changes, moved)) > 0

    config = settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    try:
        p = find(
            strategies.perturbations(subject), shows_violation, settings=config, random=Random(seed)
        )
    except NoSuchExample:
        return None, None, calls[0]
    changes, x1 = runner.evaluate(p)
    outputs = runner.genuine(p.pool, x1, changes, test(subject, changes, p.cut, runner.tolerance))
    output = (
        int(outputs[torch.argmax(subject.ranks[outputs])])
        if kind == Kind.FUTURE
        else int(outputs[0])
    )
    source = _localize(runner, p, x1, output, over)
    violation = Violation(
        output=output,
        input=source,
        kind=kind,
        source=Source.SEARCH,
        effect=float(changes[output]),
        detail=p.describe(subject.vocab),
        train=train,
    )
    return violation, p, calls[0]


def _localize(runner: Runner, p: Perturbation, x1: torch.Tensor, output: int, over=None) -> int:
    """The first position (in rank order, from the cut) whose lone replacement moves ``output``;
    the cut's own position when no single position does (the leak needs several at once)."""
    subject = runner.subject
    x, y0 = runner.pool(p.pool)
    order = torch.argsort(subject.ranks)
    candidates = order[p.cut : p.cut + LOCALIZE_LIMIT].tolist()
    for position in candidates:
        if over is not None and over():
            break
        x_one = replace_one(subject, x, x1, position)
        changes = runner.changes(y0, runner.run(x_one))
        moved = torch.tensor([output]) if changes[output] > runner.tolerance else torch.tensor([])
        if len(runner.genuine(p.pool, x_one, changes, moved.long())):
            return position
    return _position_of_rank(subject, p.cut)


# ---------------------------------------------------------------------------------------------
# Putting it together


def perturbation_evidence(
    subject: Subject,
    *,
    cut_list: list[int],
    max_examples: int,
    seed: int = 0,
    train: bool = False,
    shard: tuple[int, int] | None = None,
    search: bool = True,
    observe=None,
    timing=None,
) -> PerturbationReport:
    """Sweep the given cuts, then (``search``) let Hypothesis search and shrink, in one mode. A
    ``shard`` sweeps its chunks of cuts only; the search for future leaks runs on shard 0, the
    one for the present on shard 1 (mod n). ``observe``: a callable made with the pool and its
    outputs, ``observe(x, y0)``, that returns the sweep's observer (see :func:`sweep`).
    ``timing``: the audit's time budget (:class:`~properties.auditing.time_budget.Plan`): the
    searches try the examples it affords and stop at its deadline."""
    # One base sample per pool in inference (samples are independent there, and every forward
    # pass of the sweep costs one sample per cut); two in training mode, where batch statistics
    # couple the samples and a batch of one would hide that.
    runner = Runner(subject, seed=seed, pool_size=2 if train else 1)
    report = PerturbationReport(train=train)
    copies = chunk_copies(runner, len(cut_list))
    floor, independent = runner.noise_floor(copies, stacked=not train)
    runner.tolerance = SAFETY * floor
    report.noise_floor, report.tolerance = floor, runner.tolerance
    report.batch_independent = independent
    batched = independent and not train
    observer = None if observe is None else observe(*runner.pool(0), runner.tolerance)
    per_chunk = copies if batched else 1
    report.cuts_swept = len(share(cut_list, per_chunk, shard))
    progress.phase("sweep", report.cuts_swept)
    report.sweep = sweep(runner, cut_list, per_chunk=per_chunk, shard=shard, observe=observer)
    searches = (Kind.FUTURE, Kind.PRESENT)
    kinds = [k for i, k in enumerate(searches) if shard is None or i % shard[1] == shard[0]]
    if timing is not None and search:
        max_examples = min(max_examples, timing.search_examples(len(kinds)))
    for kind in kinds if search and max_examples > 0 else ():
        progress.phase(f"hypothesis: {kind}", max_examples)
        found, p, n = hypothesis_search(
            runner,
            kind,
            max_examples=max_examples,
            seed=seed,
            train=train,
            over=None if timing is None else timing.over,
        )
        report.examples += n
        if found is not None:
            report.found.append(found)
            report.counterexamples[kind] = p
    report.rounding = runner.rounding
    report.unconfirmed = runner.unconfirmed
    return report
