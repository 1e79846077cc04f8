"""What an audit is asked to do (:class:`AuditOptions`) and the coverage policy it follows
(:class:`CoveragePolicy`): the one place the policy is stated.

Coverage policy (the report's ``coverage`` says what was covered):

- Cuts: grids of up to ``exhaustive_positions`` positions get every cut swept; larger grids a
  stratified sample of ``sampled_cuts`` cuts. The Hypothesis search always ranges over every cut.
- Dependency map (gradients): every output when the colored map needs at most
  ``max_map_passes`` passes (receptive fields small against the grid) or with ``exact``;
  otherwise the probe outputs (on ``map_inputs`` inputs) plus a stratified sample of
  ``sampled_outputs`` outputs (on ``sampled_inputs`` input when one float64 VJP holds more than
  ``big_vjp`` bytes, as a language model's does).
- Loss equivalence: read off the sweep's forward passes (its masked inputs are the sweep's), so
  it covers the positions of the swept cuts.
- The certificate: added to the default checks up to ``certificate_positions`` positions.

``exact=True`` covers every cut, every output and every position, whatever the size.

With a time budget (``budget=`` seconds, ``--budget``) each of the above is an upper bound: the
audit times one forward pass first and plans each phase within its share of the time left
(:mod:`properties.auditing.time_budget`): the map's probe rows (fewer, and on one input, when
they would not fit), then sampled outputs; a stratified sample of cuts; Hypothesis examples until
the deadline. It ends within the budget (+10%).

Memory (``memory=`` GB, ``--memory``): every stacked pass holds as many copies as its measured
cost allows (:mod:`properties.subject.memory`); default a quarter of the available memory, at
most 1.5 GB (exactly 1.5 GB for shards, so that every shard cuts its chunks the same way).

Shards (``shard=(i, n)``): shard ``i`` runs every n-th chunk of the sweep's cuts and of the map's
colors (or rows) (:mod:`properties.evidence.sharding`): exactly the forward passes the whole
audit would run; shard 0 runs the search for future leaks, shard 1 (mod n) the one for the
present. Every phase is cut in at least ``sharding.MIN_CHUNKS`` chunks where it has that many
items, so that a small audit spreads over up to that many shards.
"""

from dataclasses import dataclass, field, fields

from properties.errors import AdapterError

__all__ = ["CHECKS", "DEFAULT_POLICY", "DYNAMIC", "AuditOptions", "CoveragePolicy"]

CHECKS = ("causality", "receptive_field", "blind_spot", "loss", "certificate")
DYNAMIC = CHECKS[:4]


@dataclass(frozen=True)
class CoveragePolicy:
    """How much of each kind of evidence a default audit gathers (see the module's docstring).
    The numbers keep every registry model's default audit under 10 s on 2 cores
    (``benchmarks/bench_audit.py``)."""

    # The default audit adds the certificate up to this many positions: it costs a few forward
    # passes (a boolean product per attention layer, a convolution of N summaries per conv
    # layer), which stays within the default audit's budget there; beyond, ask for it.
    certificate_positions: int = 1024
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

    def checked(self, n_positions: int) -> "AuditOptions":
        """These options with their values checked and the default checks filled in."""
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
            checks = CHECKS if n_positions <= self.policy.certificate_positions else DYNAMIC
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
