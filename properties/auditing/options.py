"""What an audit is asked to do (:class:`AuditOptions`) and the coverage policy it follows
(:class:`CoveragePolicy`): the one place the policy is stated.

Coverage policy: proof first (the report's ``coverage`` says what was covered and which evidence
carried the verdict; :mod:`properties.auditing.evidence_plan` applies this policy).

The default audit (``checks=None``) runs the certificate first, up to ``certificate_positions``
positions, and the certificate decides which dynamic evidence is gathered (the *plan*). Proof
first leads causality alone: a subject with declared contracts besides causality (documents, a
window, batch or padding independence) gets the *sampled* plan, whose probes and searches every
clause reads (their own are not yet directed by the bound).

- *confirmation* (the certificate proves the contract): the proof carries the verdict, and the
  dynamic evidence confirms and cross-checks it: a stratified sample of cuts, one in each of
  ``confirm_cuts`` strata plus the first and the last (their positions are the loss check's);
  ``confirm_examples`` Hypothesis examples per search, over every cut and on the sweep's base
  input (a proof holds for every input; a new one costs a pass); the map as in the sampled
  plan (the whole colored map where it is cheap, so that the receptive field can be exact), but
  none for a model whose float64 copy holds more than ``confirm_map_bytes`` (one float64 VJP of
  a 124M-parameter model costs more than the whole confirmation: the bound stands for the map).
  A dynamic dependency outside the bound is a soundness bug of the certificate: the audit fails.
- *directed* (the certificate does not prove it): the bound's *candidate cuts*, where it admits
  a pair the contract forbids (an input of a later rank; of the same rank too for ``current``),
  direct the evidence. Of the candidates the sampled plan would sweep (all of them up to
  ``exhaustive_positions``, else a stratified ``sampled_cuts``), the sweep takes a stratified
  ``directed_cuts`` first, then the rest, and stops at the first stacked pass that shows a
  forbidden change (the verdict is then decided). Each Hypothesis search draws its cuts among
  its own candidates (none: no search): ``directed_examples`` forward passes, shrinking included,
  once a forbidden change is found (the search then only makes it minimal), the profile's
  examples otherwise. The map as in the confirmation. The report names the op and the module
  where the future entered (the certificate's).
- In both, the search for the present runs only where it can still tell something: when the
  contract forbids the present, or when nothing has shown the present or the future yet (the
  mode is then still open between strict and inclusive); and the samples' batch independence is
  measured only where copies are stacked (always in training mode).
- *sampled* (no proof to lead: ``checks`` without the certificate, the certificate unavailable,
  or ``proof_first=False``): grids of up to ``exhaustive_positions`` positions get every cut
  swept; larger grids a stratified sample of ``sampled_cuts`` cuts; the Hypothesis search ranges
  over every cut. Dependency map: every output when the colored map needs at most
  ``max_map_passes`` passes; otherwise the probe outputs (on ``map_inputs`` inputs) plus a
  stratified sample of ``sampled_outputs`` outputs (on ``sampled_inputs`` input when one float64
  VJP holds more than ``big_vjp`` bytes, as a language model's does).
- *exhaustive* (``exact=True``): every cut, every output and every position, whatever the size;
  the certificate still runs (up to ``certificate_positions``) and is cross-checked.
- In every plan the loss equivalence is read off the sweep's forward passes (its masked inputs
  are the sweep's), so it covers the positions of the swept cuts.
- The incremental check (every way of running the model a chunk at a time gives the full
  pass's predictions): in the default checks only when the subject has a step hook of its own
  (``step=``, ``--step``): a model whose cached path is found by an adapter (Hugging Face,
  pytorch-tcn, the lecture's) is checked when asked (``--checks ...,incremental``), so that a
  default audit's verdict and cost do not change with what an adapter happens to recognise.
  The fixed schedules, then Hypothesis' examples; a difference within ``incremental_ulps`` ulps
  of the outputs' scale is rounding (in float64 on confirmation); unwritten cache slots hold
  ``incremental_poison`` (None: not poisoned).

The receptive field is reported "at most" (the bound) and "at least" (the measured rows), and
"exact" only where a map of every output equals the bound. ``max_examples`` caps every search.
The default audit of every registry model stays under 10 s on 2 cores
(``benchmarks/bench_audit.py``); of GPT-2 small, at most 10 forward passes at 128 positions and
20 at 1024 (``benchmarks/bench_default_audit.py``).

With a time budget (``budget=`` seconds, ``--budget``) each of the above is an upper bound: the
audit times one forward pass first and plans each phase within its share of the time left
(:mod:`properties.auditing.time_budget`): the map's probe rows (fewer, and on one input, when
they would not fit), then sampled outputs; a stratified sample of the plan's cuts; Hypothesis
examples until the deadline. It ends within the budget (+10%).

Memory (``memory=`` GB, ``--memory``): every stacked pass holds as many copies as its measured
cost allows (:mod:`properties.subject.memory`); default a quarter of the available memory, at
most 1.5 GB (exactly 1.5 GB for shards, so that every shard cuts its chunks the same way).

Shards (``shard=(i, n)``): every shard runs the certificate (it decides the plan). A proof-first
plan is a few forward passes: shard 0 gathers all of it, the others nothing. Otherwise shard
``i`` runs every n-th chunk of the sweep's cuts and of the map's colors (or rows)
(:mod:`properties.evidence.sharding`): exactly the forward passes the whole audit would run;
shard 0 runs the search for future leaks, shard 1 (mod n) the one for the present. Every phase
is cut in at least ``sharding.MIN_CHUNKS`` chunks where it has that many items, so that a small
audit spreads over up to that many shards. Either way the merged shards are the unsharded
audit, bit for bit.
"""

from dataclasses import dataclass, field, fields

from properties.errors import AdapterError

__all__ = ["CHECKS", "DEFAULT_POLICY", "DYNAMIC", "STATIC", "AuditOptions", "CoveragePolicy"]

CHECKS = ("causality", "receptive_field", "blind_spot", "loss", "certificate", "incremental")
DYNAMIC = CHECKS[:4]
STATIC = CHECKS[:5]  # the default checks up to certificate_positions


@dataclass(frozen=True)
class CoveragePolicy:
    """How much of each kind of evidence a default audit gathers, by plan (see the module's
    docstring, which states the policy these numbers parametrize)."""

    # The default audit adds the certificate up to this many positions: summaries in the run
    # form beyond 2048 positions cost what the dependencies' structure costs, not positions x
    # inputs (the dilated net proved at 16384 in 0.07 s, benchmarks/bench_certificate_long.py),
    # so the proof leads at the lengths models train at; a contract besides causality is still
    # concluded on the dense N x N bound.
    certificate_positions: int = 16384
    # The certificate leads (the confirmation and directed plans); False: the sampled plan.
    proof_first: bool = True
    # strata of the stratified samples of cuts (the first and the last cut come on top)
    confirm_cuts: int = 1
    confirm_examples: int = 2  # per search
    confirm_map_bytes: int = 256 << 20  # no map rows for a model whose float64 copy is bigger
    directed_cuts: int = 6
    directed_examples: int = 4  # forward passes of a search once the leak is found
    exhaustive_positions: int = 1024
    sampled_cuts: int = 256
    max_map_passes: int = 160
    sampled_outputs: int = 24
    map_inputs: int = 3  # random inputs whose dependency maps are united
    # The sampled rows of a map too wide to colour are taken on one input when one float64 VJP
    # of one input holds more than big_vjp bytes (a language model's: on a 124M model each costs
    # about nine forward passes): they measure the receptive field at more outputs, while the
    # probe rows (three inputs) and the sweep look for leaks. Smaller models keep the union.
    sampled_inputs: int = 1
    big_vjp: int = 256 << 20
    # The incremental check: rounding tolerance (ulps of the outputs' scale, in the model's
    # dtype and again in float64), and what unwritten cache slots hold (large and finite: a
    # correct masked read multiplies it by an exact 0; NaN would not survive that).
    incremental_ulps: float = 256.0
    incremental_poison: float | None = 1e4


DEFAULT_POLICY = CoveragePolicy()


@dataclass(frozen=True)
class AuditOptions:
    """What :func:`properties.audit` is asked to do; every field is an argument of it."""

    checks: tuple[str, ...] | None = None  # None: every dynamic check, and the certificate
    # up to policy.certificate_positions
    train: bool = False
    exact: bool = False
    seed: int = 0
    max_examples: int | None = None  # per Hypothesis search (None: the active profile's)
    shard: tuple[int, int] | None = None
    memory: float | None = None  # gigabytes the stacked passes may hold
    budget: float | None = None  # seconds the audit may take
    progress: bool | None = None  # progress bars on stderr (None: when stderr is a terminal)
    policy: CoveragePolicy = field(default=DEFAULT_POLICY)

    @classmethod
    def split(cls, keywords: dict) -> tuple["AuditOptions", dict]:
        """The audit's options among ``keywords`` (by field name), and the other keywords."""
        names = {f.name for f in fields(cls)}
        mine = {k: v for k, v in keywords.items() if k in names}
        if mine.get("checks") is not None:
            mine["checks"] = tuple(mine["checks"])
        return cls(**mine), {k: v for k, v in keywords.items() if k not in names}

    def checked(self, n_positions: int, stepping: bool = False) -> "AuditOptions":
        """These options with their values checked and the default checks filled in
        (``stepping``: the subject has a step hook of its own, which adds the incremental
        check to the default ones)."""
        shard = _checked_shard(self.shard)
        budget = self.budget
        if budget is not None and not budget > 0:
            raise AdapterError(f"the time budget must be positive, got {budget}", "pass --budget S")
        if budget is not None and shard is not None:
            raise AdapterError(
                "a time budget cannot be combined with shards (each shard would plan differently)",
                "drop --budget, or shard an audit with a fixed plan",
            )
        checks = self.checks
        if checks is None:
            checks = STATIC if n_positions <= self.policy.certificate_positions else DYNAMIC
            checks += ("incremental",) if stepping and shard is None else ()
        elif "incremental" in checks and shard is not None:
            raise AdapterError(
                "the incremental check does not run in shards",
                "run --checks incremental unsharded (it costs a few forward passes)",
            )
        return AuditOptions(
            checks=_checked_checks(checks),
            train=bool(self.train),
            exact=bool(self.exact),
            seed=self.seed,
            max_examples=self.max_examples,
            shard=shard,
            memory=self.memory,
            budget=None if budget is None else float(budget),
            progress=self.progress,
            policy=self.policy,
        )

    @property
    def certificate_only(self) -> bool:
        """The static analysis alone: no sampled evidence, the proof decides."""
        return self.checks == ("certificate",)

    @property
    def wants_map(self) -> bool:
        return bool({"causality", "receptive_field", "blind_spot"} & set(self.checks))


def _checked_checks(checks) -> tuple[str, ...]:
    checks = tuple(checks)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise AdapterError(f"unknown checks {sorted(unknown)}", f"use some of {', '.join(CHECKS)}")
    return tuple(c for c in CHECKS if c in checks)


def _checked_shard(shard) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        index, count = -1, 0
    if not 0 <= index < count:
        raise AdapterError(
            f"shard {shard} is not (index, count) with 0 <= index < count",
            "pass shard=(i, n) for the i-th of n shards, e.g. from properties.testing.shards(n)",
        )
    return (index, count)
