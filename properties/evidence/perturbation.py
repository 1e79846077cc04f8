"""Perturbation evidence: replace the forbidden inputs, watch the outputs they are forbidden to.

The subject's contract (:mod:`properties.contracts`) gives, for each of its clauses, a family
of probes: which inputs to replace and which outputs to watch. For causality, a cut ``c`` (a
rank): every input of rank ``>= c`` is replaced and the predictions are compared with the
unperturbed ones:

- a change at an output of rank ``< c`` means that output sees the future (mode ``none``);
- a change at the output of rank ``c`` itself means it sees the present (mode ``inclusive``).

For packed documents, the documents before document ``d`` are replaced and document ``d`` is
watched; for a window ``W``, the ranks ``<= e`` are replaced and the ranks ``>= e + W`` watched.
Batch independence and padding, which relate samples rather than positions, have their probes
in :mod:`properties.evidence.batch` and :mod:`properties.evidence.padding`; their violations
join this report's.

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

import torch
from hypothesis import strategies as st

from properties import progress
from properties.contracts import FURTHER, SEARCH_ORDER, SEARCHES
from properties.errors import ModelError
from properties.evidence import rounding, strategies
from properties.evidence.replacements import ZEROS, Perturbation, apply, replace_one
from properties.evidence.searching import search
from properties.evidence.sharding import chunked, copies_per_pass, share, spread
from properties.subject import memory
from properties.subject.calls import check_outputs_finite, float64_copy, forward
from properties.subject.canonical import Subject
from properties.verdict import Kind, Source, Violation

__all__ = [
    "BATCH_DEPENDENCE",
    "CONFIRM_RATIO",
    "Dismissed",
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


def _finite_max(y: torch.Tensor) -> float:
    """The largest finite |value| (0 when there is none)."""
    finite = y[torch.isfinite(y)]
    return float(finite.abs().max()) if finite.numel() else 0.0


@dataclass
class Dismissed:
    """Changes dismissed at the rounding level that ulp jitter measured: how many, the largest,
    and the largest scale it was judged against."""

    count: int = 0
    effect: float = 0.0
    scale: float = 0.0

    def add(self, count: int, effect: float, scale: float) -> None:
        self.count += count
        self.effect = max(self.effect, effect)
        self.scale = max(self.scale, scale)


def _first_set(values):
    return next((v for v in values if v), values[0])


def _all_measured(values):
    """Every shard's samples independent (None: no shard measured it)."""
    measured = [v for v in values if v is not None]
    return all(measured) if measured else None


def _combined(how, default):
    """A report's scalar field, and how the shards' values of it combine into the whole's."""
    return field(default=default, metadata={"merge": how})


def _sum_counts(counts: list[dict]) -> dict:
    out: dict = {}
    for one in counts:
        for key, value in one.items():
            out[key] = out.get(key, 0) + value
    return out


@dataclass
class PerturbationReport:
    # the evidence itself (merged by merge_reports, record by record)
    sweep: dict[int, tuple[int, float, Kind]] = field(default_factory=dict)  # see sweep()
    # Hypothesis' minimal violations, and the batch and padding evidence's
    found: list[Violation] = field(default_factory=list)
    counterexamples: dict[Kind, Perturbation] = field(default_factory=dict)
    # the sweeps of the contract's other probe families (documents, window), as `sweep`
    probed: dict[str, dict[int, tuple[int, float, Kind]]] = field(default_factory=dict)
    reached: set[int] = field(default_factory=set)  # outputs seen to reach their window's end
    # scalars: each says how the shards' values combine
    train: bool = _combined(_first_set, False)  # gathered in training mode
    noise_floor: float = _combined(max, 0.0)
    tolerance: float = _combined(max, 0.0)
    # None: not measured (nothing was stacked, see Focus.interaction)
    batch_independent: bool | None = _combined(_all_measured, True)
    cuts_swept: int = _combined(sum, 0)
    examples: int = _combined(sum, 0)
    rounding: int = _combined(sum, 0)  # float32 changes dismissed as rounding
    # why small changes were judged without a float64 confirmation
    unconfirmed: str = _combined(_first_set, "")
    # changes at the rounding level measured by ulp jitter: how many, the largest, the scale
    at_rounding: int = _combined(sum, 0)
    rounding_effect: float = _combined(max, 0.0)
    rounding_scale: float = _combined(max, 0.0)
    dtype: str = _combined(_first_set, "")  # the model's dtype (what the jitter ran in)
    # probes swept per family besides causality's cuts (and per batch/padding check)
    swept: dict[str, int] = field(default_factory=dict, metadata={"merge": _sum_counts})

    @classmethod
    def scalars(cls) -> tuple[str, ...]:
        """The scalar fields (what a shard file writes as they are)."""
        return tuple(f.name for f in fields(cls) if "merge" in f.metadata)

    def violations(self, subject: Subject) -> list[Violation]:
        """Hypothesis' minimal violations first, then the sweep's, by output rank (causality's,
        then each other family's)."""
        out = self.found + sweep_violations(subject, self.sweep, self.train)
        for family, records in self.probed.items():
            out += sweep_violations(subject, records, self.train, family)
        return out

    def notes(self, train: bool) -> list[str]:
        notes = []
        if self.batch_independent is False:
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
        if self.at_rounding:
            notes.append(
                f"{self.at_rounding} changes of predictions at rounding level, not counted "
                f"({rounding.describe(self.rounding_effect, self.rounding_scale, self.dtype)}, "
                "the outputs' largest; ulp-jittered operands move the predictions by as much)"
                + (f"; judged without a float64 confirmation: {self.unconfirmed}"
                   if self.unconfirmed else "")
            )
        elif self.unconfirmed:
            notes.append(
                "small changes judged by their rounding level under ulp jitter, without a "
                f"float64 confirmation: {self.unconfirmed}"
            )
        return notes


def merge_reports(reports: list[PerturbationReport]) -> PerturbationReport:
    """One report from the reports of shards that swept disjoint cuts (the first shard ran the
    Hypothesis search): the same report one process would have made."""
    order = SEARCH_ORDER  # the order one process searches in
    found = sorted((v for r in reports for v in r.found), key=lambda v: order.index(v.kind))
    merged = PerturbationReport(
        found=found,
        counterexamples={
            k: r.counterexamples[k] for k in order for r in reports if k in r.counterexamples
        },
        reached={t for r in reports for t in r.reached},
        **{
            f.name: f.metadata["merge"]([getattr(r, f.name) for r in reports])
            for f in fields(PerturbationReport)
            if "merge" in f.metadata
        },
    )
    for report in reports:
        for t, (cut, effect, kind) in report.sweep.items():
            _record(merged.sweep, t, cut, effect, kind)
        for family, records in report.probed.items():
            into = merged.probed.setdefault(family, {})
            for t, (index, effect, kind) in records.items():
                _record(into, t, index, effect, kind, FURTHER[family])
    return merged


class Runner:
    """Evaluates perturbations against cached unperturbed outputs, in one mode, one RNG seed.

    A change is a dependency only when its size does not scale with the arithmetic's precision
    (:mod:`properties.evidence.rounding`). Changes seen in a float32 (or lower) model are
    confirmed on a float64 copy before they count: a genuine dependency moves the float64
    prediction as much as the float32 one, while rounding (an exclusive prefix sum computed as
    ``cumsum(x) - x`` "depends" on ``x_t`` through its last bits) shrinks by the ratio of the two
    machine epsilons. Where there is no float64 copy (a float64 model, a kernel without float64
    such as ``grouped_mm`` on CPU, a copy over the memory budget), the rounding level of the
    comparison is measured by ulp jitter in the model's own dtype, and changes at that level do
    not count either.
    """

    def __init__(self, subject: Subject, *, seed: int, pool_size: int = 2, confirm: bool = True):
        self.subject = subject
        self.seed = seed
        self.pool_size = pool_size
        self._pools: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.tolerance = 0.0
        self._confirm = confirm and subject.dtype != torch.float64
        self._judge = confirm  # the float64 copy's runner judges nothing: its caller does
        self._double: Runner | None = None
        self.rounding = 0  # violations dismissed as rounding by the float64 copy
        self.cost: memory.PassCost | None = None  # of one pool, measured on its first pass
        self.scale = 0.0  # largest |output| of the first pool
        self.unconfirmed = ""  # why small float32 changes could not be confirmed in float64
        self.jitter = Dismissed()  # changes at the rounding level ulp jitter measured
        self._levels: dict[int, float] = {}  # jitter level of each pool's unperturbed outputs

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

    def evaluate(self, p: Perturbation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Changes per position for ``p``, the perturbed inputs and their outputs."""
        x, y0 = self.pool(p.pool)
        x1 = apply(self.subject, x, p)
        y1 = self.run(x1)
        return self.changes(y0, y1), x1, y1

    def genuine(
        self,
        pool: int,
        x1: torch.Tensor,
        changes: torch.Tensor,
        outputs: torch.Tensor,
        y1: torch.Tensor,
    ) -> torch.Tensor:
        """The ``outputs`` whose change is no rounding: it survives in float64, or, without a
        float64 copy, it exceeds the comparison's rounding level (``y1``: the outputs at
        ``x1``)."""
        if not self._judge or len(outputs) == 0:
            return outputs
        # The scale of the comparison: a perturbation 1e4 times the inputs' makes intermediates,
        # and their rounding, that much larger than the unperturbed outputs.
        scale = max(self.scale, _finite_max(y1))
        obvious = changes[outputs] > OBVIOUS * scale
        if bool(obvious.all()):
            return outputs
        if self._confirm:
            kept = self._confirmed(pool, x1, changes, outputs)
            if kept is not None:
                return kept
        return outputs[obvious | ~self._at_rounding(pool, x1, y1, changes[outputs], scale)]

    def _confirmed(self, pool, x1, changes, outputs) -> torch.Tensor | None:
        """The outputs whose change survives on the float64 copy (None: there is no copy)."""
        try:
            double = self._float64()
            if double is None:
                return None
            changes64 = double.changes_at(pool, x1)
        except ModelError as exc:  # the float64 copy does not run (a dtype fixed inside it)
            self._confirm = False
            self.unconfirmed = f"the float64 copy raised ({exc.problem})"
            return None
        except memory.MemoryBudgetError as exc:
            self._confirm = False
            self.unconfirmed = f"{exc.problem} ({exc.fix})"
            return None
        keep = changes64[outputs] > torch.maximum(
            torch.full_like(changes64[outputs], double.tolerance),
            CONFIRM_RATIO * changes[outputs],
        )
        # A NaN on one side is an infinite change in both dtypes (inf > 1e-3 * inf is false):
        # it is no rounding.
        keep |= torch.isinf(changes64[outputs])
        self.rounding += int((~keep).sum())
        return outputs[keep]

    def _at_rounding(self, pool, x1, y1, effects, scale) -> torch.Tensor:
        """Which ``effects`` (changes between the pool's outputs and ``y1``) are at the
        rounding level of the two computations, measured by ulp jitter of each."""
        x0, y0 = self.pool(pool)
        if pool not in self._levels:
            self._levels[pool] = self._jitter_level(x0, y0, pool)
        level = rounding.Level(
            self._levels[pool] + self._jitter_level(x1, y1, pool), scale, self.subject.dtype
        )
        dismissed = level.explains(effects) & torch.isfinite(effects)
        if bool(dismissed.any()):
            self.jitter.add(int(dismissed.sum()), float(effects[dismissed].max()), scale)
        return dismissed

    def _jitter_level(self, x: torch.Tensor, y: torch.Tensor, pool: int) -> float:
        """The largest move of any output of ``x`` (whose outputs are ``y``) under ulp jitter."""
        classes = self.subject.classes is not None
        moves = []
        for g in rounding.generators(self.seed * 1000 + pool):
            with rounding.jittered(self.subject.module, g):
                xj = rounding.jitter_input(x, self.subject.dtype, g, classes=classes)
                moves.append(float(_changes(y, self.run(xj)).max()))
        return max(moves)

    def _float64(self) -> "Runner | None":
        if self._double is None:
            copy, note = float64_copy(self.subject)
            if note or copy is self.subject:
                self._confirm = False
                self.unconfirmed = note or "there is no float64 copy"
                return None
            self._double = Runner(copy, seed=self.seed, pool_size=self.pool_size, confirm=False)
            self._double.tolerance = SAFETY * self._double.noise_floor(2)[0]
        return self._double

    def noise_floor(
        self, copies: int, *, stacked: bool = True, interaction: bool = True
    ) -> tuple[float, bool | None]:
        """See :func:`measure_noise_floor` (at the first pool)."""
        x, y0 = self.pool(0)
        return measure_noise_floor(
            self.subject, x, y0, copies, seed=self.seed, stacked=stacked, interaction=interaction
        )


def measure_noise_floor(
    subject: Subject,
    x: torch.Tensor,
    y0: torch.Tensor,
    copies: int,
    *,
    seed: int,
    stacked: bool = True,
    interaction: bool = True,
) -> tuple[float, bool | None]:
    """The noise floor of ``subject`` at ``x`` (whose outputs are ``y0``), and whether its
    samples are independent of each other (None when ``interaction`` is false and nothing is
    stacked: not measured, two passes of two samples saved).

    The floor is the largest difference between two runs of ``x`` and, when the caller will
    stack copies (``stacked``), between ``x`` alone and ``x`` stacked 2 and ``copies`` times:
    float32 kernels round differently with the batch size. Independence: the outputs of the
    first samples do not move when the *other* samples of the batch change (same slots, same
    RNG state, so dropout masks match; BatchNorm's batch statistics do not).
    """

    def run(inputs):
        return forward(subject, inputs, seed=seed).detach()

    floor = _changes(y0, run(x)).max()
    if not (interaction or stacked):
        return float(floor), None
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


def _moved(subject: Subject, changes: torch.Tensor, p: Perturbation, kind: Kind, tol: float):
    """The outputs ``p``'s probe watches for ``kind`` that moved (for causality's future: the
    ranks before the cut; its present: the cut's own)."""
    watch = subject.contract.probe(p.family, p.cut).watching(kind)
    return (watch & (changes > tol)).nonzero().flatten()


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


def sweep(
    runner: Runner,
    cut_list: list[int],
    *,
    per_chunk: int,
    shard=None,
    observe=None,
    family: str = "causality",
    reached: set | None = None,
) -> dict:
    """At each probe of ``family`` (for causality: each cut, the future replaced), the inputs
    it names replaced by the lecture's zeros (wide values are the Hypothesis search's job).
    Returns ``{output: (cut, effect, kind)}``: for each output seen to move, the furthest probe
    that moved it (for causality: the furthest cut, its furthest future input; its own cut when
    it only sees the present). ``observe(cut, outputs, genuine)`` sees every perturbed output,
    with the positions whose change is no rounding (the loss check); ``reached`` collects the
    outputs seen to reach the far end of an exact window."""
    subject = runner.subject
    contract = subject.contract
    x, y0 = runner.pool(0)
    records: dict[int, tuple[int, float, str]] = {}
    for chunk in chunked(cut_list, per_chunk, shard):
        probes = [contract.probe(family, c) for c in chunk]
        perturbed = [
            apply(subject, x, Perturbation(c, ZEROS, 0.0, seed=c, family=family)) for c in chunk
        ]
        y1 = runner.run(torch.cat(perturbed)).reshape(len(chunk), *y0.shape)
        progress.advance(len(chunk))
        changes = runner.changes(y0, y1)  # (cuts, N)
        moved = (changes > runner.tolerance) & torch.stack([p.watched for p in probes])
        for i, (c, probe) in enumerate(zip(chunk, probes, strict=True)):
            outputs = moved[i].nonzero().flatten()
            if len(outputs):
                outputs = runner.genuine(0, perturbed[i], changes[i], outputs, y1[i])
            for t in outputs.tolist():
                kind_ = probe.kind_at(t)
                if kind_ is None:  # the far end of an exact window: seen, as it should be
                    if reached is not None:
                        reached.add(t)
                    continue
                _record(records, t, c, float(changes[i, t]), kind_, probe.further)
            if observe is not None:  # what moved beyond rounding, for the loss check
                observe(c, y1[i], set(outputs.tolist()))
    return records


def _record(
    records: dict, t: int, cut: int, effect: float, kind: Kind, further: int = 1
) -> None:
    """Keep, per output, a future violation over a present one, and the furthest cut (for the
    other families, the probe that reaches furthest: ``further`` says which way)."""
    old = records.get(t)
    if old is None or (kind == Kind.FUTURE and (old[2] == Kind.PRESENT or old[0] < cut)):
        records[t] = (cut, effect, kind)
    elif kind == old[2] and kind not in (Kind.FUTURE, Kind.PRESENT):
        if further * cut > further * old[0]:
            records[t] = (cut, effect, kind)


def sweep_violations(
    subject: Subject, records: dict, train: bool, family: str = "causality"
) -> list[Violation]:
    def named(c: int) -> tuple[int, str]:
        if family == "causality":
            return _position_of_rank(subject, c), f"positions of rank >= {c} were replaced"
        probe = subject.contract.probe(family, c)
        return probe.nearest, f"{probe.region} were replaced"

    out = []
    for t, (c, effect, kind) in sorted(records.items(), key=lambda kv: int(subject.ranks[kv[0]])):
        source, detail = named(c)
        out.append(
            Violation(
                output=t,
                input=source,
                kind=kind,
                source=Source.SWEEP,
                effect=effect,
                detail=detail,
                train=train,
            )
        )
    return out


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
    cuts: list[int] | None = None,
    pools: int = strategies.POOLS,
) -> tuple[Violation | None, Perturbation | None, int]:
    """Find, then shrink, a perturbation that shows a ``kind`` violation ("future"/"present":
    causality's cuts; "document", "window": the probes of those clauses).

    Returns the violation (output, localized input, effect), the minimal perturbation and the
    number of examples tried. ``over()``: true once the time budget is spent; the search then
    stops trying new examples (a shrink in progress keeps what it has). ``cuts``: the ranks the
    search draws its cut among (shrinking towards the first); default every cut. ``pools``: the
    pools of base inputs it draws from.
    """
    subject = runner.subject
    kind = Kind(kind)
    family = next(f for f, k in SEARCHES if k == kind)
    calls = [0]
    answers: dict[Perturbation, bool] = {}  # Hypothesis replays the minimal example at the end

    def shows_violation(p: Perturbation) -> bool:
        if p in answers:  # the same answer again, even past the deadline: never flaky
            return answers[p]
        if over is not None and over():
            return False
        calls[0] += 1
        progress.advance()
        changes, x1, y1 = runner.evaluate(p)
        moved = _moved(subject, changes, p, kind, runner.tolerance)
        answers[p] = len(runner.genuine(p.pool, x1, changes, moved, y1)) > 0
        return answers[p]

    cut = None if cuts is None else st.sampled_from(sorted(cuts))
    p = search(strategies.perturbations(subject, cut=cut, pools=pools, family=family),
               shows_violation, max_examples=max_examples, seed=seed)
    if p is None:
        return None, None, calls[0]
    changes, x1, y1 = runner.evaluate(p)
    moved = _moved(subject, changes, p, kind, runner.tolerance)
    outputs = runner.genuine(p.pool, x1, changes, moved, y1)
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
    """The first replaced position (nearest the output in rank: for causality, in rank order
    from the cut) whose lone replacement moves ``output``; the probe's nearest input (the cut's
    own position) when no single position does (the leak needs several at once)."""
    subject = runner.subject
    x, y0 = runner.pool(p.pool)
    probe = subject.contract.probe(p.family, p.cut)
    replaced = probe.replace.nonzero().flatten()
    distance = (subject.ranks[replaced] - subject.ranks[output]).abs()
    order = replaced[torch.argsort(distance * subject.n_positions + subject.ranks[replaced])]
    candidates = order[:LOCALIZE_LIMIT].tolist()
    for position in candidates:
        if over is not None and over():
            break
        x_one = replace_one(subject, x, x1, position)
        y_one = runner.run(x_one)
        changes = runner.changes(y0, y_one)
        moved = torch.tensor([output]) if changes[output] > runner.tolerance else torch.tensor([])
        if len(runner.genuine(p.pool, x_one, changes, moved.long(), y_one)):
            return position
    return probe.nearest


# ---------------------------------------------------------------------------------------------
# Putting it together


@dataclass(frozen=True)
class Focus:
    """Where an evidence plan points the perturbations (:mod:`properties.auditing.evidence_plan`);
    the default looks everywhere, as the sampled plan does.

    A *forbidden* change is one the contract forbids: at an output of a lower rank than the cut
    (the future), and for a ``current`` subject at the cut's own output too (the present)."""

    more_cuts: tuple[int, ...] = ()  # swept after ``cut_list``, unless it showed a forbidden change
    stop_at_forbidden: bool = False  # the sweep ends at the first chunk that shows one
    # per search, the cuts it draws among (absent: every cut; empty: the search does not run)
    search_cuts: dict[Kind, tuple[int, ...]] = field(default_factory=dict)
    # forward passes a search may spend (shrinking included) once a forbidden change is found:
    # its only job is then to make the counterexample minimal
    after_leak: int | None = None
    # search for the present only where it can still tell something: the contract forbids it, or
    # nothing has shown the present or the future yet (the mode is open)
    present_if_open: bool = False
    # measure whether samples interact even where no copies are stacked (the report's
    # batch_independent); where they are stacked it is always measured
    interaction: bool = True
    pools: int = strategies.POOLS  # pools of base inputs the searches draw from


EVERYWHERE = Focus()


def forbidden_kinds(subject: Subject) -> tuple[Kind, ...]:
    """The kinds of change the subject's contract forbids."""
    return (Kind.FUTURE, Kind.PRESENT) if subject.predicts == "current" else (Kind.FUTURE,)


def _shows_forbidden(subject: Subject, report: "PerturbationReport") -> bool:
    kinds = forbidden_kinds(subject)
    return any(kind in kinds for _, _, kind in report.sweep.values()) or any(
        v.kind in kinds for v in report.found
    )


def _mode_open(report: "PerturbationReport") -> bool:
    """Nothing has shown the present or the future yet."""
    return not report.sweep and not report.found


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
    probes: dict[str, list[int]] | None = None,
    focus: Focus = EVERYWHERE,
) -> PerturbationReport:
    """Sweep the given cuts, then (``search``) let Hypothesis search and shrink, in one mode. A
    ``shard`` sweeps its chunks of cuts only; the search for future leaks runs on shard 0, the
    one for the present on shard 1 (mod n). ``observe``: a callable made with the pool and its
    outputs, ``observe(x, y0)``, that returns the sweep's observer (see :func:`sweep`).
    ``timing``: the audit's time budget (:class:`~properties.auditing.time_budget.Plan`): the
    searches try the examples it affords and stop at its deadline. ``focus``: where a plan
    points the sweep and the causality searches (:class:`Focus`).

    ``probes``: the indices to sweep of the contract's other probe families (``documents``,
    ``window``); with ``search``, each of the contract's searches runs on one shard (the batch
    and padding checks too, :mod:`.batch`, :mod:`.padding`), and the loss check's masked inputs
    keep what the contract allows (a pass of their own when that is more than a cut's)."""
    # One base sample per pool in inference (samples are independent there, and every forward
    # pass of the sweep costs one sample per cut); two in training mode, where batch statistics
    # couple the samples and a batch of one would hide that.
    runner = Runner(subject, seed=seed, pool_size=2 if train else 1)
    contract = subject.contract
    report = PerturbationReport(train=train)
    copies = chunk_copies(runner, len(cut_list) + len(focus.more_cuts))
    # where nothing is stacked (and in inference) the floor is run-to-run only, when asked
    measured = focus.interaction or train or copies > 1
    floor, independent = runner.noise_floor(
        copies, stacked=measured and not train, interaction=measured
    )
    runner.tolerance = SAFETY * floor
    report.noise_floor, report.tolerance = floor, runner.tolerance
    report.batch_independent = independent
    batched = bool(independent) and not train
    observer = None if observe is None else observe(*runner.pool(0), runner.tolerance)
    per_chunk = copies if batched else 1
    in_sweep = observer if contract.only_causal else None  # its cuts are the loss's masks
    _sweep_rounds(runner, report, [cut_list, list(focus.more_cuts)], per_chunk, shard, in_sweep,
                  focus)
    for family, indices in (probes or {}).items():
        report.swept[family] = len(share(indices, per_chunk, shard))
        progress.phase(f"sweep: {family}", report.swept[family])
        report.probed[family] = sweep(
            runner, indices, per_chunk=per_chunk, shard=shard, family=family,
            reached=report.reached,
        )
    if observer is not None and not contract.only_causal:
        loss_sweep(runner, cut_list, observer, per_chunk=per_chunk, shard=shard)
    if search:
        _searches(runner, report, max_examples, seed, train, shard, timing, focus)
    report.rounding = runner.rounding
    report.unconfirmed = runner.unconfirmed
    report.at_rounding = runner.jitter.count
    report.rounding_effect, report.rounding_scale = runner.jitter.effect, runner.jitter.scale
    report.dtype = str(subject.dtype).replace("torch.", "")
    return report


def _sweep_rounds(runner, report, rounds, per_chunk, shard, observer, focus) -> None:
    """The sweep, round after round; with ``focus.stop_at_forbidden`` it ends at the first
    chunk that shows a forbidden change, else a later round only runs while none is shown."""
    subject = runner.subject
    planned = sum(len(share(r, per_chunk, shard)) for r in rounds)
    progress.phase("sweep", planned)
    if not focus.more_cuts and not focus.stop_at_forbidden:  # one round: the plain sweep
        report.cuts_swept = planned
        report.sweep = sweep(runner, rounds[0], per_chunk=per_chunk, shard=shard, observe=observer)
        return
    for cuts in rounds:
        if _shows_forbidden(subject, report):
            break
        for chunk in chunked(cuts, per_chunk, shard):
            found = sweep(runner, chunk, per_chunk=len(chunk), observe=observer)
            for t, (cut, effect, kind) in found.items():
                _record(report.sweep, t, cut, effect, kind)
            report.cuts_swept += len(chunk)
            if focus.stop_at_forbidden and _shows_forbidden(subject, report):
                return


def _searches(runner, report, max_examples, seed, train, shard, timing, focus) -> None:
    """The contract's Hypothesis searches, this shard's: causality's future, then its present,
    then the other clauses' (the batch and padding checks run their own, :mod:`.batch`,
    :mod:`.padding`)."""
    subject = runner.subject
    searches = subject.contract.searches()
    kinds = [k for i, k in enumerate(searches) if shard is None or i % shard[1] == shard[0]]
    kinds = [(f, k) for f, k in kinds if focus.search_cuts.get(k, True)]  # empty: no search
    if timing is not None:
        max_examples = min(max_examples, timing.search_examples(len(kinds)))
    for family, kind in kinds:
        if family in ("batch", "padding"):
            over = None if timing is None else timing.over
            _sample_evidence(runner, report, family, max_examples, seed, over)
            continue
        if max_examples <= 0:
            continue
        if (
            kind == Kind.PRESENT
            and focus.present_if_open
            and kind not in forbidden_kinds(subject)
            and not _mode_open(report)
        ):
            continue  # the sweep or the future search has settled what the present could
        examples, over = max_examples, None if timing is None else timing.over
        if focus.after_leak is not None and _shows_forbidden(subject, report):
            examples = min(examples, focus.after_leak)
            over = _capped(examples, over)
        if examples <= 0:
            continue
        progress.phase(f"hypothesis: {kind}", examples)
        cuts = focus.search_cuts.get(kind)
        found, p, n = hypothesis_search(
            runner, kind, max_examples=examples, seed=seed, train=train, over=over,
            cuts=None if cuts is None else list(cuts), pools=focus.pools,
        )
        report.examples += n
        if found is not None:
            report.found.append(found)
            report.counterexamples[kind] = p


def _sample_evidence(runner: Runner, report, family: str, max_examples: int, seed: int, over):
    """The batch-independence or the padding check (sweep and search), into the report."""
    from properties.evidence import batch, padding

    common = {"max_examples": max_examples, "seed": seed, "train": report.train, "over": over}
    if family == "batch":
        found = batch.batch_evidence(runner, **common)
    elif report.train:
        return  # a padded batch has another shape: dropout masks would differ (inference only)
    else:
        found = padding.padding_evidence(runner, independent=report.batch_independent, **common)
    report.found.extend(found.violations)
    report.counterexamples.update(found.counterexamples)
    report.examples += found.examples
    report.swept[family] = found.swept


def loss_sweep(runner: Runner, cut_list: list[int], observer, *, per_chunk: int, shard=None):
    """The loss check's masked inputs where the contract allows less than a cut keeps (packed
    documents, a window): for each cut, the inputs each of its loss rows may see kept, the rest
    replaced by the lecture's zeros (equal masks share a pass)."""
    subject = runner.subject
    contract = subject.contract
    x, y0 = runner.pool(0)
    for chunk in chunked(cut_list, per_chunk, shard):
        groups = [group for c in chunk for group in contract.loss_keeps(c)]
        masked = []
        for keep, _ in groups:
            one = x.clone()
            one[:, ~keep] = 0
            masked.append(one)
        y1 = runner.run(torch.cat(masked)).reshape(len(groups), *y0.shape)
        for (_, targets), x1, y in zip(groups, masked, y1, strict=True):
            # judged as the sweep judges its cuts: a change at the rounding level is reported,
            # and does not fail the check
            changes = runner.changes(y0, y)
            rows = torch.tensor(sorted({position for _, position in targets}))
            moved = rows[changes[rows] > runner.tolerance]
            genuine = set(runner.genuine(0, x1, changes, moved, y).tolist())
            for convention, position in targets:
                observer.take(convention, position, y, genuine)


def _capped(passes: int, then=None):
    """An ``over()`` that is true after ``passes`` calls (each precedes a forward pass of the
    search: an example, a shrink step, a localization), or when ``then()`` is."""
    calls = [0]

    def over() -> bool:
        calls[0] += 1
        return calls[0] > passes or (then is not None and then())

    return over
