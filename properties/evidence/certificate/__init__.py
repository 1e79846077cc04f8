"""A proof, not a sample: a static dependency certificate for any model.

:func:`certify` runs the model once, on real values, while a tracer (:mod:`.tracer`) carries
next to every tensor a conservative summary (:mod:`.deps`) of the input positions each of its
elements may depend on, for *all* input values, along the control-flow path the run takes. Op by
op, rules (:mod:`.rules`) compute the summaries of the outputs. The summary of the model's output
is an upper bound of every dependency map a gradient or a perturbation can find: when it holds no
forbidden pair, the model is *proved* causal (for that path).

Exact zeros of weights and constants (masks, padding, -inf fills) are structural: masked
convolutions, MADE and masked attention are proved, not just "may depend". Values computed from
the input are never used to drop a dependency. Token dispatch by a permutation (a dropless
mixture-of-experts router: sort, gather, grouped matmul, rows put back) is proved per token in
the frame the permutation undoes (:mod:`.routing`). A tensor the tracer did not see being made is of
unknown origin (:mod:`.origin`): while one reaches an output, the certificate is not proved, and
says where it entered.

Summaries are dense bits up to ``deps.DENSE_LIMIT`` positions and runs of input positions
beyond (:mod:`.deps`, :mod:`.runs`): the same bound, at a cost that follows the structure of the
dependencies rather than positions x inputs. ``certify(..., form=)`` or ``deps.forced`` choose.

The bound is read against the subject's contract (:mod:`properties.contracts`): it proves
causality, packed documents (a block-diagonal mask built from the documents' constants) and a
window where no forbidden pair is in it. It runs one sample in one layout, so batch independence
and padding are not its to prove (:attr:`Certificate.not_covered`). A contract besides
causality is read on the dense bound (``N x N`` codes: for the lengths the dense form serves).
"""

import time
from dataclasses import dataclass, field

import torch

from properties import verdict
from properties.contracts import KIND_OF_CODE
from properties.errors import AuditError, describe
from properties.evidence import facts
from properties.evidence.gradients import DependencyMap
from properties.subject.calls import model_mode
from properties.subject.canonical import Subject
from properties.verdict import ContractName, Kind, Source

from . import bound as bounds
from . import branches, deps
from .origin import preexisting
from .sites import SiteTracer, module_paths
from .tracer import READS, Tracer

STATUSES = ("proved", "not_proved", "unavailable")
FORBIDDEN_EXAMPLES = 10  # forbidden pairs kept as examples


@dataclass
class Forbidden:
    output: int  # flat output position
    input: int  # flat input position
    kind: str  # "present", "future", "document", "window" or "shrunk" (an exact window's end)
    op: str | None  # where a dependency on the future first appeared (None when unknown)


@dataclass
class Certificate:
    status: str  # proved, not_proved, unavailable
    reason: str | None = None  # why unavailable / not proved
    mode: str | None = None  # the best mode the bound allows: strict, inclusive, none
    # (N outputs, N inputs) upper bound: a bool tensor (dense form), or ``runs.Runs`` rows
    # (run form, above ``deps.DENSE_LIMIT`` positions); ``rows()`` and ``dense_bound()`` read
    # either
    bound: "torch.Tensor | deps.Runs | None" = None
    receptive_field: facts.ReceptiveField | None = None
    forbidden: list[Forbidden] = field(default_factory=list)
    forbidden_count: int = 0
    lost_precision: list[str] = field(default_factory=list)  # ops ruled by the fallback
    path_dependent: bool = False  # a traced op read input values (a branch, a shape)
    unknown: list[str] = field(default_factory=list)  # unknown origin that reaches an output
    reads: list[str] = field(default_factory=list)  # where input values were read into Python
    # where a forbidden dependency entered, by kind ("future", "present"), as a source line of
    # the model (:mod:`.sites`); found on the blame run, which only runs when one is forbidden
    blames: dict = field(default_factory=dict)
    seconds: float = 0.0
    train: bool = False
    # each contract the bound speaks for: proved (True) or not; batch and padding: never here
    contracts: dict[str, bool] = field(default_factory=dict)

    @property
    def not_covered(self) -> list[str]:
        """The declared contracts a one-sample, one-layout run cannot prove."""
        return [str(n) for n in (ContractName.BATCH, ContractName.PADDING)
                if str(n) in self.contracts and self.contracts[str(n)] is None]

    @property
    def proved(self) -> bool:
        return self.status == "proved"

    def rows(self, outputs) -> torch.Tensor:
        """The bound's rows of ``outputs``, dense ``(len(outputs), N)`` bool."""
        return bounds.rows(self.bound, outputs)

    def dense_bound(self) -> torch.Tensor | None:
        """The whole bound, dense ``(N, N)`` (``N x N`` bits: for small grids)."""
        return None if self.bound is None else bounds.dense(self.bound)

    def as_map(self) -> DependencyMap | None:
        """The bound as a :class:`~properties.evidence.gradients.DependencyMap` (every output)."""
        if self.bound is None:
            return None
        seen = self.dense_bound()
        return DependencyMap(
            torch.arange(len(seen)), seen, seen.to(torch.bfloat16), passes=0,
            method="certificate",
        )

    def outside(self, seen: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """``(k, 2)`` (output, input) pairs of a measured map that the bound does not contain:
        each one is a soundness bug of the analysis."""
        rows = self.rows(outputs)
        pairs = (seen & ~rows).nonzero()
        return torch.stack([outputs[pairs[:, 0]], pairs[:, 1]], 1) if len(pairs) else pairs

    def unexplained(self, subject: Subject, violations) -> list:
        """The dynamic violations (gradient or perturbation) the bound does not allow: a
        perturbation that changed output ``t`` by replacing inputs of rank >= ``rank(s)``
        needs some such input in ``t``'s row of the bound (for the other clauses, some input
        its probe replaced: :meth:`~properties.contracts.Contract.explaining`). Violations
        between samples or of the padding are not the bound's (one sample, one layout)."""
        contract = subject.contract
        missing = []
        # Training-mode maps stack copies of the input in one batch: BatchNorm hands one
        # copy's output the gradient of another's; not a per-output dependency.
        checked = [
            v for v in violations
            if not (v.source is Source.GRADIENT and v.train)
            and v.kind not in (Kind.SAMPLE, Kind.PADDING, Kind.SHRUNK)
        ]
        found = self.rows([v.output for v in checked]) if checked else None
        for v, row in zip(checked, found if found is not None else [], strict=True):
            if v.source is Source.GRADIENT:
                ok = bool(row[v.input])
            else:
                ok = bool(row[contract.explaining(v.kind, v.input)].any())
            if not ok:
                missing.append(v)
        return missing

    def exact_for(self, dmap: DependencyMap) -> bool:
        """The measured map equals the bound on the rows it covers: the receptive field is
        exact (proved from above, reached from below)."""
        return bool(torch.equal(self.rows(dmap.outputs), dmap.seen))


def certify(
    subject: Subject, *, train: bool = False, seed: int = 0, form: str | None = None
) -> Certificate:
    """The certificate of ``subject`` in inference (and, with ``train``, in training mode too:
    the bound is then the union of both paths). ``form``: ``dense`` or ``runs`` summaries
    (None: ``deps.form_for``, by the number of positions)."""
    start = time.perf_counter()
    form = form or deps.form_for(subject.n_positions)
    paths = (False, True) if train else (False,)
    bound, lost, path_dependent, blame, unknown, reads = None, [], False, None, [], []
    blames: dict = {}
    try:
        for training in paths:
            b, tracer, entered = _trace(subject, training, seed, form)
            if _forbidden_seen(subject, b) and not entered:
                # once more, to say where the future (or the forbidden present) entered
                b, tracer, entered = _trace(subject, training, seed, form, blame=True)
                blames = {**tracer.sites, **blames}  # inference's first
            bound = bounds.union(bound, b)
            lost.extend(f"{op} ({'train' if training else 'eval'})" if train else op
                        for op in tracer.lost)
            path_dependent |= tracer.path_dependent
            blame = blame or tracer.blame
            unknown.extend(entered)
            reads.extend(tracer.reads)
    except AuditError as exc:
        return Certificate("unavailable", reason=exc.problem, train=train,
                           seconds=time.perf_counter() - start)
    except Exception as exc:  # an op the tracer cannot run: say which, never a wrong verdict
        return Certificate("unavailable", reason=f"the traced run failed: {describe(exc)}",
                           train=train, seconds=time.perf_counter() - start)
    cert = _conclude(subject, bound, blame)
    cert.lost_precision = list(dict.fromkeys(lost))
    cert.path_dependent = path_dependent
    cert.blames = blames
    cert.train = train
    cert.unknown = list(dict.fromkeys(unknown))
    cert.reads = list(dict.fromkeys(reads))
    if cert.unknown:  # the bound is an upper bound only for what the tracer saw
        cert.status = "not_proved"
        cert.reason = (f"the output depends on something the tracer could not follow: "
                       f"{'; '.join(cert.unknown[:3])}")
    elif cert.status == "not_proved" and cert.reads \
            and bool((bounds.sizes(cert.bound) > 0).any()):
        cert.reason += f"; the model read input values into Python ({cert.reads[0]})"
    if cert.status == "not_proved" and cert.lost_precision:
        cert.reason += f"; precision was lost at {', '.join(cert.lost_precision[:3])}"
    cert.seconds = time.perf_counter() - start
    return cert


def _forbidden_seen(subject: Subject, bound) -> bool:
    """The bound sees the future, or the present of a ``current`` subject."""
    present = subject.predicts == "current" and bounds.sees_present(subject, bound)
    return present or bounds.sees_future(subject, bound)


def _trace(
    subject: Subject, training: bool, seed: int, form: str, blame: bool = False
) -> tuple[torch.Tensor, Tracer, list[str]]:
    """One traced run: the bound (outputs x inputs, in ``form``), the tracer, and where values
    of unknown origin that reach an output entered."""
    n = subject.n_positions
    x = subject.draw_inputs(1, torch.Generator().manual_seed(seed))
    positions = torch.arange(n).reshape(1, n, *([1] if not subject.tokens else []))
    positions = positions.expand(x.shape)
    native_positions = subject.native_input(positions)
    x_native = subject.native_input(x.to(subject.device))
    if not subject.tokens:
        x_native = x_native.to(subject.dtype)
    x_native = x_native.clone()
    module = subject.module
    names = {m: (name or type(m).__name__) for name, m in module.named_modules()} if module else {}
    if blame:  # the blame run also says where, in the model's source (.sites)
        tracer = SiteTracer(n, subject.grid, subject.ranks, names, paths=module_paths(module),
                            present=subject.predicts == "current", form=form)
    else:
        tracer = Tracer(n, subject.grid, subject.ranks, names, blame, form)
    # what exists before the trace and is no input: the model's, the subject's, and the
    # contract's own constants (documents' ids, which the model is passed as keywords)
    clauses = [v for clause in subject.clauses for v in vars(clause).values()]
    known = preexisting(module, [subject.model, subject.forward, *vars(subject).values(),
                                 *clauses])
    tracer.know(known)
    x_original = x_native.clone()
    # the input's own columns; the unknown-origin slots after them start empty
    tracer.track_input(x_native, deps.inputs(native_positions, tracer.n, form))
    hooks = _module_hooks(tracer) if module is not None else []
    rng = torch.get_rng_state()
    try:
        with model_mode(subject, train=training), torch.no_grad(), tracer:
            y = subject.canonical_output(subject.call_native(x_native), 1)
    finally:
        for h in hooks:
            h.remove()
    if tracer.branches:
        _branches(subject, training, tracer, x_original, known, rng)
    tracer.see(y)  # an output no op made (a new object over a tracked tensor)
    # (N, N + slots): the slots' columns say which entries of unknown origin reached an output
    rows = bounds.of_output(tracer.deps(y), n, tracer.n, tracer.escaped, form)
    slots = bounds.columns_reached(rows, n)
    entered = [label for label, slot in tracer.entries.items() if bool(slots[slot])]
    return bounds.inputs_only(rows, n), tracer, entered


def _branches(subject, training, tracer, x_original, known, rng) -> None:
    """Reads with two outcomes (a boolean, a check): run the others (:mod:`.branches`). When
    none changes the computation they reach no output; otherwise they are out of sight."""
    def run(mode):
        x = x_original.clone()
        with model_mode(subject, train=training), torch.no_grad(), mode:
            return subject.canonical_output(subject.call_native(x), 1)

    after = torch.get_rng_state()
    torch.set_rng_state(rng)
    try:
        same = branches.same_computation(run, READS, [(b[0], b[1]) for b in tracer.branches],
                                         known)
    finally:
        torch.set_rng_state(after)
    said = {f"{what} at {where}" for _, _, what, where, _ in tracer.branches}
    if same:
        tracer.reads = [r + " (every other outcome ends in an exception or runs the same "
                        "computation)" if r in said else r for r in tracer.reads]
        return
    tracer.reads = [r for r in tracer.reads if r not in said]
    for _, _, what, where, row in tracer.branches:
        tracer.escape(row, what, where)


def _module_hooks(tracer: Tracer) -> list:
    from torch.nn.modules import module as module_mod

    def pre(mod, args):
        name = tracer.names.get(mod)
        if name is not None:
            tracer.stack.append(f"{name} ({type(mod).__name__})")

    def post(mod, args, out):
        if mod in tracer.names and tracer.stack:
            tracer.stack.pop()

    return [
        module_mod.register_module_forward_pre_hook(pre),
        module_mod.register_module_forward_hook(post, always_call=True),
    ]


def _conclude(subject: Subject, bound, blame: str | None) -> Certificate:
    """The bound read against the contract: causality alone in either form of summary; a
    contract with other clauses on the dense bound (:func:`_read_contract`)."""
    read = _read_causality if subject.contract.only_causal else _read_contract
    ok, mode, listed, count, contracts = read(subject, bound, blame)
    cert = Certificate(
        "proved" if ok else "not_proved", mode=mode, bound=bound, forbidden=listed,
        forbidden_count=count, contracts=contracts,
    )
    if bool((bounds.sizes(bound) > 0).any()):
        cert.receptive_field = bounds.receptive_field(subject, bound)
    if not ok:
        first = listed[0]
        where = f", entering at {first.op}" if first.op else ""
        what = "may depend on" if first.kind != "shrunk" else "provably never sees"
        cert.reason = (
            f"output {subject.position(first.output)} {what} input "
            f"{subject.position(first.input)} ({first.kind}{where})"
        )
    return cert


def _read_causality(subject: Subject, bound, blame: str | None):
    """Causality alone, read in either form without an ``N x N`` matrix: (proved, mode, listed
    forbidden pairs, their count, the contracts' verdicts)."""
    future = bounds.sees_future(subject, bound)
    present = bounds.sees_present(subject, bound)
    mode = "none" if future else "inclusive" if present else "strict"
    ok = verdict.passes(mode, subject.predicts)
    ranks = subject.ranks
    count, rows = 0, []
    if future or (present and subject.predicts == "current"):
        count, rows, first = bounds.forbidden_pairs(
            subject, bound, present=subject.predicts == "current", listed=FORBIDDEN_EXAMPLES
        )
        if mode == "none" and not any(ranks[s] > ranks[t] for t, s in rows):
            rows.append(first)  # the mode must not lose its evidence to the cap
    listed = []
    for t, s in rows:
        kind = "future" if ranks[s] > ranks[t] else "present"
        listed.append(Forbidden(t, s, kind, blame if kind == "future" else None))
    contracts = {str(ContractName.CAUSALITY): ok, **_not_this_proofs(subject.contract)}
    return ok, mode, listed, count, contracts


def _read_contract(subject: Subject, bound, blame: str | None):
    """Every clause, on the dense bound (``N x N`` codes): the best causal mode it allows, and
    every pair it holds that a clause forbids (and, for an exact window, every far end it proves
    unseen). Returns what :func:`_read_causality` does."""
    bound = bounds.dense(bound)
    ranks, contract = subject.ranks, subject.contract
    n = len(ranks)
    codes = contract.codes(torch.arange(n))
    future = bound & (codes == CODE_FUTURE)
    present = bound & (codes == CODE_PRESENT)
    mode = "none" if bool(future.any()) else "inclusive" if bool(present.any()) else "strict"
    forbidden_pairs = bound & (codes != 0)
    if subject.predicts != "current":
        forbidden_pairs &= codes != CODE_PRESENT
    ok = verdict.passes(mode, subject.predicts) and not bool(forbidden_pairs.any())
    pairs = forbidden_pairs.nonzero()
    order = torch.argsort(ranks[pairs[:, 0]] * n + ranks[pairs[:, 1]]) if len(pairs) else None
    rows = pairs[order[:FORBIDDEN_EXAMPLES]].tolist() if order is not None else []
    if mode == "none" and not any(ranks[s] > ranks[t] for t, s in rows):
        first = future.nonzero()  # the mode must not lose its evidence to the cap
        rows.append(first[torch.argmin(ranks[first[:, 0]] * n + ranks[first[:, 1]])].tolist())
    listed = []
    for t, s in rows:
        kind = str(KIND_OF_CODE[int(codes[t, s])])
        listed.append(Forbidden(t, s, kind, blame if kind == "future" else None))
    shrunk = _unseen_far_ends(contract, bound)
    listed.extend(shrunk[:FORBIDDEN_EXAMPLES])
    ok = ok and not shrunk
    contracts = _contracts_proved(contract, mode, subject.predicts, bound, codes, shrunk)
    return ok, mode, listed, len(pairs) + len(shrunk), contracts


CODE_FUTURE, CODE_PRESENT = KIND_OF_CODE.index(Kind.FUTURE), KIND_OF_CODE.index(Kind.PRESENT)


def _unseen_far_ends(contract, bound: torch.Tensor) -> list[Forbidden]:
    """Exact windows: outputs whose row of the bound proves they never see their window's end."""
    outputs = torch.arange(contract.n)
    far = contract.far_ends(outputs)
    has = (far >= 0).nonzero().flatten()
    unseen = has[~bound[has, far[has]]]
    return [Forbidden(int(t), int(far[t]), "shrunk", None) for t in unseen.tolist()]


def _contracts_proved(contract, mode, predicts, bound, codes, shrunk) -> dict:
    """Per declared contract: proved by this bound (True / False), or not this proof's to give
    (None: batch independence and padding need other samples and layouts)."""
    out = {str(ContractName.CAUSALITY): verdict.passes(mode, predicts)}
    for name, kind in ((ContractName.DOCUMENTS, Kind.DOCUMENT), (ContractName.WINDOW, Kind.WINDOW)):
        if name in contract.names:
            out[str(name)] = not bool((bound & (codes == KIND_OF_CODE.index(kind))).any())
    if ContractName.WINDOW in contract.names:
        out[str(ContractName.WINDOW)] = out[str(ContractName.WINDOW)] and not shrunk
    return {**out, **_not_this_proofs(contract)}


def _not_this_proofs(contract) -> dict:
    """Batch independence and padding need other samples and layouts: None, declared or not."""
    others = (ContractName.BATCH, ContractName.PADDING)
    return {str(name): None for name in others if name in contract.names}


__all__ = ["Certificate", "Forbidden", "certify"]
