"""The evidence plan: which dynamic evidence an audit gathers, decided before it gathers any, from
its options, the grid and (proof first) the certificate.

The policy is stated once, in :mod:`properties.auditing.options`; this module applies it. Four
plans (:class:`PlanKind`): *exhaustive* (``exact``), *sampled* (no proof to lead), and the two
proof-first plans, *confirmation* (the certificate proves the contract: the dynamic evidence
confirms it) and *directed* (it does not: the bound's candidate cuts, where it admits a forbidden
pair, direct the sweep and the searches).
"""

from dataclasses import dataclass, field
from enum import Enum

import torch

from properties.auditing.options import AuditOptions
from properties.evidence import facts
from properties.evidence.perturbation import EVERYWHERE, Focus, forbidden_kinds
from properties.subject.canonical import Subject
from properties.verdict import Kind

__all__ = ["EvidencePlan", "PlanKind", "candidate_cuts", "plan_evidence", "stratified"]


class PlanKind(str, Enum):
    EXHAUSTIVE = "exhaustive"  # every cut, output and position (exact)
    SAMPLED = "sampled"  # coverage by grid size: no proof leads
    CONFIRMATION = "confirmation"  # proved: the dynamic evidence confirms the proof
    DIRECTED = "directed"  # not proved: the bound's candidate cuts direct the evidence

    @property
    def proof_first(self) -> bool:
        return self in (PlanKind.CONFIRMATION, PlanKind.DIRECTED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class EvidencePlan:
    kind: PlanKind
    cuts: list[int]  # the sweep's cuts (its first round, for the directed plan)
    focus: Focus = EVERYWHERE  # the rest of the sweep, and where each search draws
    examples: int | None = None  # per Hypothesis search (None: the cap, max_examples or profile)
    map_rows: bool = True  # whether the dependency map is taken at all
    candidates: int | None = None  # cuts where the bound admits a forbidden change (directed)
    entered: str | None = None  # the op and module where the future entered (directed)
    why_no_map: str | None = None  # said in the notes when map_rows is false
    notes: list[str] = field(default_factory=list)

    @property
    def all_cuts(self) -> list[int]:
        return self.cuts + list(self.focus.more_cuts)


def stratified(n: int, count: int, seed: int) -> list[int]:
    """``count`` positions out of ``n``, one drawn in each of ``count`` equal strata, plus the
    first and the last (where edge effects live)."""
    if count >= n:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    edges = torch.linspace(0, n, count + 1).long()
    picks = {0, n - 1}
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if hi > lo:
            picks.add(lo + int(torch.randint(hi - lo, (1,), generator=generator)))
    return sorted(picks)


def stratified_among(items: list[int], count: int, seed: int) -> list[int]:
    """A stratified sample (:func:`stratified`) of ``items``, in their order."""
    return [items[i] for i in stratified(len(items), count, seed)]


def plan_evidence(subject: Subject, options: AuditOptions, certificate=None) -> EvidencePlan:
    """The plan for ``subject`` under ``options``, led by ``certificate`` when there is one to
    lead (see :mod:`properties.auditing.options`)."""
    n, policy, seed = subject.n_positions, options.policy, options.seed
    if options.exact:
        return EvidencePlan(PlanKind.EXHAUSTIVE, list(range(n)))
    leads = policy.proof_first and certificate is not None and certificate.bound is not None
    # proof first leads causality alone: the other clauses' probes are not directed by the bound
    leads = leads and subject.contract.only_causal
    if not leads:
        if n <= policy.exhaustive_positions:
            return EvidencePlan(PlanKind.SAMPLED, list(range(n)))
        return EvidencePlan(PlanKind.SAMPLED, stratified(n, policy.sampled_cuts, seed + 1))
    why = _why_no_map(subject, policy.confirm_map_bytes)
    if certificate.proved:
        # the sweep's pool only: a proof holds for every input, a new pool costs a pass
        focus = Focus(present_if_open=True, interaction=False, pools=1)
        return EvidencePlan(
            PlanKind.CONFIRMATION,
            stratified(n, policy.confirm_cuts, seed + 1),
            focus,
            examples=policy.confirm_examples,
            map_rows=why is None,
            why_no_map=why,
        )
    return _directed(subject, options, certificate, why)


def _directed(subject: Subject, options: AuditOptions, certificate, why: str | None):
    policy, seed = options.policy, options.seed
    per_kind = candidate_cuts(subject, certificate)
    forbidden = sorted({c for k in forbidden_kinds(subject) for c in per_kind[k]})
    if len(forbidden) <= policy.exhaustive_positions:  # as many as the sampled plan would sweep
        covered = forbidden
    else:
        covered = stratified_among(forbidden, policy.sampled_cuts, seed + 1)
    first = stratified_among(covered, policy.directed_cuts, seed + 1)
    chosen = set(first)
    focus = Focus(
        more_cuts=tuple(c for c in covered if c not in chosen),
        stop_at_forbidden=True,
        search_cuts={k: tuple(cuts) for k, cuts in per_kind.items()},
        after_leak=policy.directed_examples,
        present_if_open=True,
        interaction=False,
    )
    entered = next((f.op for f in certificate.forbidden if f.op), None)
    return EvidencePlan(
        PlanKind.DIRECTED,
        first,
        focus,
        candidates=len(forbidden),
        entered=entered,
        map_rows=why is None,
        why_no_map=why,
    )


def candidate_cuts(subject: Subject, certificate) -> dict[Kind, list[int]]:
    """Per kind, the cuts at which the bound admits a change of that kind: a *future* change at
    cut ``c`` needs an output of rank below ``c`` whose row holds an input of rank ``c`` or later;
    a *present* one, the output of rank ``c`` with such an input in its row. Anywhere else the
    bound proves that replacing the inputs of rank ``>= c`` moves nothing it could."""
    ranks = subject.ranks
    n = len(ranks)
    high = _highest_ranks(subject, certificate)
    ahead = high > ranks  # outputs that may see a later rank
    # every c in (rank(t), high(t)] for those outputs: a difference array over the cuts
    steps = torch.zeros(n + 1, dtype=torch.long)
    steps.index_add_(0, ranks[ahead] + 1, torch.ones(int(ahead.sum()), dtype=torch.long))
    steps.index_add_(0, high[ahead] + 1, -torch.ones(int(ahead.sum()), dtype=torch.long))
    future = (steps.cumsum(0)[:n] > 0).nonzero().flatten().tolist()
    present = sorted(ranks[high >= ranks].tolist())
    return {Kind.FUTURE: future, Kind.PRESENT: present}


def _highest_ranks(subject: Subject, certificate) -> torch.Tensor:
    """Per output, the highest rank of an input in its row of the bound (-1: an empty row),
    read a block of rows at a time."""
    n = subject.n_positions
    highs = []
    for start in range(0, n, facts.ROWS_AT_ONCE):
        block = torch.arange(start, min(n, start + facts.ROWS_AT_ONCE))
        highs.append(facts.rank_extremes(subject, _rows(certificate, block))[1])
    return torch.cat(highs) if highs else torch.zeros(0, dtype=torch.long)


def _rows(certificate, outputs: torch.Tensor) -> torch.Tensor:
    """Dense rows of the bound (``Certificate.rows`` where the bound has a compact form)."""
    rows = getattr(certificate, "rows", None)
    return rows(outputs) if rows is not None else certificate.bound[outputs]


def _why_no_map(subject: Subject, limit: int) -> str | None:
    """Why a proof-first plan takes no dependency map of this model: its float64 copy alone
    holds more than ``limit`` bytes (None: it takes one)."""
    module = subject.module
    if module is None or not subject.dtype.is_floating_point:
        return None
    values = [*module.parameters(), *module.buffers()]
    held = sum(8 * t.numel() for t in values if t.dtype.is_floating_point)
    if held <= limit:
        return None
    return (
        f"its float64 copy alone would hold {held / 2**30:.1f} GB and one float64 VJP costs "
        "several forward passes of it, more than the whole of the confirmation; the receptive "
        "field is the certificate's bound (at most)"
    )
