"""Contracts: which inputs each output of a model may depend on.

A *contract* is the allowed relation between the (sample, position) of an output and the (sample,
position) of an input. It is the intersection of *clauses*, each a typed object:

- :class:`Causal` ``(ranks, convention)``: the one the audit always had. Output ``t`` may see
  inputs of lower generation rank, and its own position unless ``convention="current"``.
- :class:`Documents` ``(ids)``: several documents are packed into one row; an output may see its
  own document only. Given as document ids, as ``position_ids`` that restart at 0 (Hugging Face's
  padding-free packing) or as ``cu_seqlens``, and handed to the model through its real interface
  (keyword arguments of its call, or a ``forward=`` hook that takes ``documents=``).
- :class:`Window` ``(width)``: an output sees at most ``width`` positions, its own included
  (Hugging Face's ``sliding_window``); ``exact``: and it does see the far end of its window. Per
  module (``modules=``) for models whose layers mix local and global attention; the model-level
  bound is then composed from the modules' (``1 + sum(width - 1)`` over layers in sequence).
- :class:`BatchIndependence`: the outputs of sample ``i`` never depend on the inputs of sample
  ``j != i``.
- :class:`Padding` ``(sides, keyword)``: the real positions of a sample do not change when it is
  padded (left or right, any length) and the model is given the attention mask.

Causality, documents and windows are relations between positions of one sample: the contract
classifies every (output, input) pair (:meth:`Contract.codes`: a row of it is an output's
forbidden inputs, by kind), which the gradient facts, the certificate and the pictures read; and
it gives, for each clause, a family of *probes* (:meth:`Contract.probe`: which inputs to replace,
which outputs to watch, and what a change there means), which the perturbation sweep and the
Hypothesis search run. Batch independence and padding relate samples and layouts, not positions:
their probes live in :mod:`properties.evidence.batch` and :mod:`properties.evidence.padding`,
and the certificate (one sample, one layout) does not speak for them.

A pair is charged to the first clause that forbids it, in the order causality, documents,
window: a later document's input is *future* before it is another document.
"""

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from properties.errors import AdapterError
from properties.verdict import ContractName, Kind

__all__ = [
    "FAMILIES",
    "KIND_OF_CODE",
    "BatchIndependence",
    "Causal",
    "Contract",
    "Documents",
    "Padding",
    "Probe",
    "Window",
]

# The codes of Contract.codes(): 0 is allowed, the others name the kind of the forbidden pair.
KIND_OF_CODE = (None, Kind.FUTURE, Kind.PRESENT, Kind.DOCUMENT, Kind.WINDOW)
CODE = {k: i for i, k in enumerate(KIND_OF_CODE) if k is not None}
# The probe families of the positional clauses, in the order their evidence is gathered.
FAMILIES = ("causality", "documents", "window")
# How each family's probes are searched: (family, kind watched), the Hypothesis searches' order.
SEARCHES = (
    ("causality", Kind.FUTURE),
    ("causality", Kind.PRESENT),
    ("documents", Kind.DOCUMENT),
    ("window", Kind.WINDOW),
    ("batch", Kind.SAMPLE),
    ("padding", Kind.PADDING),
)
SEARCH_ORDER = tuple(kind for _, kind in SEARCHES)
# Which of a family's probes reaches furthest from the outputs it watches (a sweep keeps that
# one per output): a later cut (causality), an earlier end (window); documents have one each.
FURTHER = {"causality": 1, "documents": 0, "window": -1}
FORMS = ("ids", "position_ids", "cu_seqlens")


# ---------------------------------------------------------------------------------------------
# Clauses


@dataclass(frozen=True, eq=False)
class Causal:
    """Generation order and convention: ``ranks[n]`` is the rank of flat position ``n``."""

    ranks: torch.Tensor
    convention: str = "auto"
    name = ContractName.CAUSALITY

    def codes(self, out_ranks: torch.Tensor, in_ranks: torch.Tensor) -> torch.Tensor:
        """``(M, N)`` codes: FUTURE where the input comes later, PRESENT at the output's own."""
        codes = torch.zeros(out_ranks.shape[0], in_ranks.shape[-1], dtype=torch.int8)
        codes[in_ranks > out_ranks] = CODE[Kind.FUTURE]
        codes[in_ranks == out_ranks] = CODE[Kind.PRESENT]
        return codes

    def to_json(self) -> dict:
        return {"predicts": self.convention}


@dataclass(frozen=True, eq=False)
class Documents:
    """Packed documents: ``ids[n]`` is the document of flat position ``n``. Documents are
    contiguous runs in generation order, numbered 0, 1, ... in that order (see :meth:`checked`).

    ``keywords``: how the model is told, ``(keyword, form)`` pairs: it is called as
    ``model(x, keyword=value)`` with ``value`` in ``form`` (``ids``: ``(B, N)`` document ids,
    ``position_ids``: ``(B, N)`` positions that restart at 0 in each document,
    ``cu_seqlens``: ``(D + 1,)`` int32 offsets of the documents of one row). A ``forward=`` hook
    that takes a ``documents`` argument gets this object instead (:meth:`position_ids`,
    :meth:`cu_seqlens`, :attr:`ids`)."""

    ids: torch.Tensor
    keywords: tuple[tuple[str, str], ...] = ()
    ranks: torch.Tensor | None = None  # the generation order it was checked against
    name = ContractName.DOCUMENTS

    # -- the three ways to say where documents start ------------------------------------------
    @classmethod
    def from_lengths(cls, lengths: Sequence[int], **kw) -> "Documents":
        lengths = [int(n) for n in lengths]
        if not lengths or any(n < 1 for n in lengths):
            raise AdapterError(
                f"document lengths must be positive, got {lengths}",
                "give the length of each packed document, e.g. --documents 5,7,4",
            )
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        return cls(ids, **kw)

    @classmethod
    def from_position_ids(cls, position_ids, **kw) -> "Documents":
        """Hugging Face's padding-free packing: a document starts wherever the position does
        not follow the previous one (``diff != 1``, as ``find_packed_sequence_indices``)."""
        pos = torch.as_tensor(position_ids).long().flatten()
        if len(pos) == 0:
            raise AdapterError("the position_ids are empty", "give one position per token")
        starts = torch.ones(len(pos), dtype=torch.long)
        starts[1:] = (pos[1:] - pos[:-1] != 1).long()
        return cls(torch.cumsum(starts, 0) - 1, **kw)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens, **kw) -> "Documents":
        cu = torch.as_tensor(cu_seqlens).long().flatten().tolist()
        if len(cu) < 2 or cu[0] != 0 or any(b <= a for a, b in zip(cu, cu[1:], strict=False)):
            raise AdapterError(
                f"cu_seqlens must start at 0 and increase strictly, got {cu}",
                "give the offsets of the documents, e.g. 0,5,12,16",
            )
        return cls.from_lengths([b - a for a, b in zip(cu, cu[1:], strict=False)], **kw)

    @classmethod
    def parse(cls, spec: str, **kw) -> "Documents":
        """``5,7,4`` (lengths), ``ids:0,0,1,...``, ``position_ids:0,1,0,...``,
        ``cu_seqlens:0,5,12``: the command line's ``--documents``."""
        form, _, values = spec.rpartition(":")
        try:
            numbers = [int(v) for v in values.replace(" ", "").split(",") if v]
        except ValueError:
            raise AdapterError(
                f"--documents {spec!r} is not a list of integers",
                "give lengths (5,7,4) or ids:..., position_ids:..., cu_seqlens:...",
            ) from None
        makers = {
            "": cls.from_lengths,
            "lengths": cls.from_lengths,
            "ids": lambda v, **k: cls(torch.tensor(v), **k),
            "position_ids": cls.from_position_ids,
            "cu_seqlens": cls.from_cu_seqlens,
        }
        if form not in makers:
            raise AdapterError(
                f"--documents {spec!r}: unknown form {form!r}",
                "use lengths (5,7,4), ids:..., position_ids:... or cu_seqlens:...",
            )
        return makers[form](numbers, **kw)

    def checked(self, n: int, ranks: torch.Tensor) -> "Documents":
        """Validated against a grid of ``n`` positions, renumbered 0, 1, ... in generation
        order: each document must be one contiguous run of ranks."""
        ids = torch.as_tensor(self.ids).long().flatten()
        if ids.numel() != n:
            raise AdapterError(
                f"the documents cover {ids.numel()} positions, the grid has {n}",
                "give documents whose lengths add up to the grid (--length)",
            )
        by_rank = ids[torch.argsort(ranks)]
        changes = torch.ones(n, dtype=torch.long)
        changes[1:] = (by_rank[1:] != by_rank[:-1]).long()
        renumbered = torch.cumsum(changes, 0) - 1
        if len(torch.unique(by_rank)) != int(renumbered[-1]) + 1:
            raise AdapterError(
                "a document is split in several runs of the generation order",
                "give each document as one contiguous run of positions (packing concatenates)",
            )
        out = torch.empty(n, dtype=torch.long)
        out[torch.argsort(ranks)] = renumbered
        keywords = tuple(_keyword(k) for k in self.keywords)
        return replace(self, ids=out, keywords=keywords, ranks=ranks)

    # -- what the model is given ---------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.ids.max()) + 1

    @property
    def lengths(self) -> list[int]:
        return torch.bincount(self.ids).tolist()

    def starts(self) -> torch.Tensor:
        """(D,) the first rank of each document (documents are numbered in generation order)."""
        return torch.cumsum(torch.tensor([0] + self.lengths[:-1]), 0)

    def position_ids(self, batch: int = 1) -> torch.Tensor:
        """(batch, N) the position of every flat position within its document (0 at each start),
        in generation order: Hugging Face's padding-free ``position_ids``."""
        ranks = torch.arange(len(self.ids)) if self.ranks is None else self.ranks
        # documents are numbered in generation order: sorted ids are the documents by rank
        by_rank = torch.arange(len(self.ids)) - self.starts()[self.ids.sort().values]
        return by_rank[ranks].expand(batch, -1).contiguous()

    def cu_seqlens(self) -> torch.Tensor:
        """(D + 1,) int32: the offsets of the documents in one row (flash-attention's)."""
        return torch.tensor([0] + torch.cumsum(torch.tensor(self.lengths), 0).tolist(),
                            dtype=torch.int32)

    def value(self, form: str, batch: int) -> torch.Tensor:
        if form == "position_ids":
            return self.position_ids(batch)
        if form == "cu_seqlens":
            return self.cu_seqlens()
        return self.ids.expand(batch, -1).contiguous()

    def keyword_values(self, batch: int) -> dict:
        return {name: self.value(form, batch) for name, form in self.keywords}

    def to_json(self) -> dict:
        return {
            "count": self.count,
            "lengths": self.lengths,
            "passed_as": {name: form for name, form in self.keywords},
        }


def _keyword(item) -> tuple[str, str]:
    """``"position_ids"`` or ``("seq", "ids")`` or ``"seq=ids"``: a keyword and its form (by
    default, the form its name says)."""
    if isinstance(item, str):
        name, _, form = item.partition("=")
    else:
        name, form = item
    name, form = name.strip(), (form or "").strip()
    if not form:
        form = "position_ids" if "position" in name else "cu_seqlens" if "cu_seq" in name else "ids"
    if not name.isidentifier() or form not in FORMS:
        raise AdapterError(
            f"cannot pass documents as {item!r}",
            f"give KEYWORD or KEYWORD=FORM, FORM one of {', '.join(FORMS)}",
        )
    return name, form


@dataclass(frozen=True)
class Window:
    """A lookback window: an output sees at most ``width`` positions, its own included (offsets
    ``0 .. width - 1`` back, as Hugging Face's ``sliding_window``). ``exact``: and it sees the
    far end of its window (``width - 1`` back) wherever the grid has it: a window that silently
    shrank is a violation too.

    ``modules``: ``(pattern, width)`` declarations (``fnmatch`` patterns over qualified module
    names; width ``None``: global attention) for models whose layers mix local and global
    attention. Each matched module is then audited on its own against its width, and the model
    is held to the bound they compose (:attr:`model_width`); :meth:`resolved` matches them."""

    width: int | None = None
    exact: bool = False
    modules: tuple[tuple[str, int | None], ...] = ()
    matched: tuple[tuple[str, int | None], ...] = ()  # (module name, width), once resolved
    name = ContractName.WINDOW

    def __post_init__(self):
        widths = [self.width] + [w for _, w in self.modules]
        if any(w is not None and (not isinstance(w, int) or w < 1) for w in widths):
            raise AdapterError(
                f"a window must be a positive number of positions, got {widths}",
                "give --window W with W >= 1 (global for a module without a window)",
            )
        if self.width is None and not self.modules:
            raise AdapterError("a window needs a width", "give --window W")

    @property
    def model_width(self) -> int | None:
        """The model-level bound: the declared width, or, with module declarations, what the
        matched modules compose to when they run one after another (``None``: unbounded, a global
        module)."""
        if not self.modules:
            return self.width
        if not self.matched or any(w is None for _, w in self.matched):
            return None
        return 1 + sum(w - 1 for _, w in self.matched)

    def resolved(self, module) -> "Window":
        """The module declarations matched against ``module``'s qualified names."""
        if not self.modules:
            return self
        if module is None:
            raise AdapterError(
                "per-module windows need an nn.Module", "declare a model-level --window W"
            )
        names = [n for n, _ in module.named_modules() if n]
        matched: dict[str, int | None] = {}
        for pattern, width in self.modules:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                attention = [n for n in names if "attn" in n.rsplit(".", 1)[-1].lower()][:4]
                raise AdapterError(
                    f"--window-module {pattern!r} matches no module of the model",
                    "name modules by their qualified names"
                    + (f", e.g. {', '.join(attention)}" if attention else ""),
                )
            matched.update({n: width for n in hits})
        ordered = sorted(matched.items(), key=lambda kv: names.index(kv[0]))
        return replace(self, matched=tuple(ordered))

    def to_json(self) -> dict:
        data = {"width": self.width, "exact": self.exact, "model_bound": self.model_width}
        if self.modules:
            data["modules"] = {n: w for n, w in self.matched}
        return data


@dataclass(frozen=True)
class BatchIndependence:
    """The outputs of a sample never depend on the other samples of its batch (in inference and
    in training mode; dropout, with the same RNG state, is no dependence)."""

    name = ContractName.BATCH

    def to_json(self) -> dict:
        return {}


@dataclass(frozen=True)
class Padding:
    """A sample's real positions are unchanged when it is padded, on ``sides`` ("left",
    "right"), to lengths the search picks, in a batch with differently padded samples, with the
    attention mask passed as ``keyword`` (1 at real positions, 0 at padding; ``None``: no mask
    is passed). Sequences (1D grids) only; inference only (a padded batch has another shape, so
    dropout masks would differ)."""

    sides: tuple[str, ...] = ("left", "right")
    keyword: str | None = "attention_mask"
    name = ContractName.PADDING

    def __post_init__(self):
        sides = (self.sides,) if isinstance(self.sides, str) else tuple(self.sides)
        if "both" in sides:
            sides = ("left", "right")
        object.__setattr__(self, "sides", sides)
        if not sides or any(s not in ("left", "right") for s in sides):
            raise AdapterError(
                f"unknown padding side(s) {self.sides!r}", "use --padding left, right or both"
            )

    def mask(self, lengths: list[int], n: int, side: str) -> torch.Tensor:
        """(B, n) long: 1 at the real positions of each sample padded by ``lengths[i]``."""
        mask = torch.ones(len(lengths), n, dtype=torch.long)
        for i, p in enumerate(lengths):
            if p and side == "left":
                mask[i, :p] = 0
            elif p:
                mask[i, n - p :] = 0
        return mask

    def to_json(self) -> dict:
        return {"sides": list(self.sides), "mask": self.keyword}


# ---------------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True, eq=False)
class Probe:
    """One perturbation of a family: replace ``replace``, then a change at an output in one of
    the ``watch`` masks is a dependency of that kind (the replaced inputs are all forbidden to
    it, and allowed by the clauses before its own); a change at ``reach`` is evidence that an
    output sees the far end of its window (exact windows)."""

    family: str
    index: int
    replace: torch.Tensor  # (N,) bool
    watch: tuple[tuple[Kind, torch.Tensor], ...]
    nearest: int  # the replaced input nearest to the watched outputs (the sweep names it)
    region: str  # the replaced inputs, in words
    reach: torch.Tensor | None = None
    further: int = 1  # +1: a larger index reaches further from the outputs, -1: a smaller one

    @property
    def watched(self) -> torch.Tensor:
        """(N,) every output whose change means something."""
        out = torch.zeros_like(self.replace)
        for _, mask in self.watch:
            out |= mask
        return out | self.reach if self.reach is not None else out

    def kind_at(self, t: int) -> Kind | None:
        """The kind of a change at output ``t`` (None: a reach, no violation)."""
        for kind, mask in self.watch:
            if mask[t]:
                return kind
        return None

    def watching(self, kind: Kind) -> torch.Tensor:
        for k, mask in self.watch:
            if k == kind:
                return mask
        return torch.zeros_like(self.replace)


# ---------------------------------------------------------------------------------------------
# The contract


@dataclass(frozen=True, eq=False)
class Contract:
    """The intersection of a model's clauses (causality always; the others when declared)."""

    causal: Causal
    documents: Documents | None = None
    window: Window | None = None
    batch: BatchIndependence | None = None
    padding: Padding | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, causal: Causal, clauses: Sequence = ()) -> "Contract":
        slots = {}
        for clause in clauses:
            key = {
                Documents: "documents",
                Window: "window",
                BatchIndependence: "batch",
                Padding: "padding",
            }.get(type(clause))
            if key is None:
                raise AdapterError(
                    f"{type(clause).__name__} is not a contract clause",
                    "use Documents, Window, BatchIndependence or Padding from properties.contracts",
                )
            if key in slots:
                raise AdapterError(f"two {key} clauses", f"give one {type(clause).__name__}")
            slots[key] = clause
        return cls(causal, **slots)

    # -- facts ---------------------------------------------------------------------------------
    @property
    def ranks(self) -> torch.Tensor:
        return self.causal.ranks

    @property
    def n(self) -> int:
        return len(self.causal.ranks)

    @property
    def clauses(self) -> list:
        return [c for c in (self.causal, self.documents, self.window, self.batch, self.padding)
                if c is not None]

    @property
    def names(self) -> list[ContractName]:
        return [c.name for c in self.clauses]

    @property
    def width(self) -> int | None:
        """The model-level window (None: no window at model level)."""
        if self.window is None:
            return None
        w = self.window.model_width
        return None if w is None or w >= self.n else w

    @property
    def only_causal(self) -> bool:
        """No positional clause besides causality: every probe is a plain cut."""
        return (self.documents is None or self.documents.count == 1) and self.width is None

    def _by_rank(self) -> torch.Tensor:
        if "by_rank" not in self._cache:
            self._cache["by_rank"] = torch.argsort(self.ranks)
        return self._cache["by_rank"]

    def position_of_rank(self, rank: int) -> int:
        return int(self._by_rank()[rank])

    def document(self, position: int) -> int | None:
        return None if self.documents is None else int(self.documents.ids[position])

    # -- (a) the forbidden inputs of each output -----------------------------------------------
    def codes(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(M, N)`` int8: for each output (a row) and input, 0 where the contract allows the
        dependency, else the code of its :class:`Kind` (:data:`KIND_OF_CODE`), charged to the
        first clause that forbids it."""
        ranks = self.ranks
        out_ranks = ranks[outputs][:, None]
        codes = self.causal.codes(out_ranks, ranks[None, :])
        if self.documents is not None:
            ids = self.documents.ids
            other = (ids[None, :] != ids[outputs][:, None]) & (codes == 0)
            codes[other] = CODE[Kind.DOCUMENT]
        if self.width is not None:
            far = (out_ranks - ranks[None, :] >= self.width) & (codes == 0)
            codes[far] = CODE[Kind.WINDOW]
        return codes

    def kind_of(self, output: int, input: int) -> Kind | None:
        code = int(self.codes(torch.tensor([output]))[0, input])
        return KIND_OF_CODE[code]

    def forbids(self, kind: Kind) -> bool:
        """Whether a dependency of this kind fails the contract (seeing the present only sets
        the mode of a ``next``/``auto`` model)."""
        return kind != Kind.PRESENT or self.causal.convention == "current"

    def far_ends(self, outputs: torch.Tensor) -> torch.Tensor:
        """(M,) for an exact window: the input at the far end of each output's window (``width
        - 1`` back), -1 where the grid (or the output's document) has none."""
        w = self.width
        out = torch.full((len(outputs),), -1, dtype=torch.long)
        if w is None or self.window is None or not self.window.exact:
            return out
        far = self.ranks[outputs] - (w - 1)
        has = far >= 0
        out[has] = self._by_rank()[far[has]]
        if self.documents is not None:
            ids = self.documents.ids
            same = ids[out.clamp(min=0)] == ids[outputs]
            out[~same] = -1
        return out

    # -- (b) probes ----------------------------------------------------------------------------
    def families(self) -> list[str]:
        out = ["causality"]
        if self.documents is not None and self.documents.count > 1:
            out.append("documents")
        if self.width is not None:
            out.append("window")
        return out

    def searches(self) -> list[tuple[str, Kind]]:
        """The Hypothesis searches this contract asks for, in order."""
        families = set(self.families())
        if self.batch is not None:
            families.add("batch")
        if self.padding is not None:
            families.add("padding")
        return [(f, k) for f, k in SEARCHES if f in families]

    def indices(self, family: str) -> list[int]:
        """Every probe of a family (the sweep covers these or a sample of them)."""
        if family == "causality":
            return list(range(self.n))
        if family == "documents":
            return list(range(1, self.documents.count))
        if family == "window":
            return list(range(max(0, self.n - self.width + 1)))
        raise ValueError(f"unknown probe family {family!r}")

    def probe(self, family: str, index: int) -> Probe:
        key = (family, index)
        if key not in self._cache:
            if len(self._cache) > 4096:  # a sweep of a large grid: keep memory bounded
                self._cache.clear()
            self._cache[key] = getattr(self, f"_{family}_probe")(index)
        return self._cache[key]

    def _causality_probe(self, cut: int) -> Probe:
        ranks = self.ranks
        return Probe(
            "causality",
            cut,
            replace=ranks >= cut,
            watch=((Kind.FUTURE, ranks < cut), (Kind.PRESENT, ranks == cut)),
            nearest=self.position_of_rank(cut),
            region=f"positions of rank >= {cut}",
        )

    def _documents_probe(self, d: int) -> Probe:
        """Replace every earlier document (the documents clause's forbidden region that
        causality allows), watch document ``d``."""
        ids = self.documents.ids
        start = int(self.documents.starts()[d])
        return Probe(
            "documents",
            d,
            replace=ids < d,
            watch=((Kind.DOCUMENT, ids == d),),
            nearest=self.position_of_rank(start - 1),
            region=f"positions of {'document 0' if d == 1 else f'documents 0..{d - 1}'} "
            f"(rank < {start})",
            further=FURTHER["documents"],
        )

    def _window_probe(self, end: int) -> Probe:
        """Replace the ranks ``<= end`` (of ``end``'s document), watch the ranks ``>= end +
        width``: every replaced input is more than the window back of every watched output, and
        allowed to it by causality and documents. For an exact window, the output of rank ``end
        + width - 1`` sees ``end`` at the far end of its window: a change there is reach."""
        ranks, w = self.ranks, self.width
        same = torch.ones(self.n, dtype=torch.bool)
        where = ""
        if self.documents is not None and self.documents.count > 1:
            doc = int(self.documents.ids[self.position_of_rank(end)])
            same = self.documents.ids == doc
            where = f" of document {doc}"
        reach = None
        if self.window.exact:
            reach = (ranks == end + w - 1) & same
        return Probe(
            "window",
            end,
            replace=(ranks <= end) & same,
            watch=((Kind.WINDOW, (ranks >= end + w) & same),),
            nearest=self.position_of_rank(end),
            region=f"positions of rank <= {end}{where} (at least {w} back of ranks >= {end + w})",
            reach=reach,
            further=FURTHER["window"],
        )

    # -- the certificate's cross-check ---------------------------------------------------------
    def explaining(self, kind: Kind, input: int) -> torch.Tensor:
        """(N,) the inputs that could explain a perturbation violation of ``kind`` whose probe
        named ``input``: at or beyond it, in the forbidden direction of its clause."""
        ranks = self.ranks
        if kind == Kind.WINDOW:
            return ranks <= ranks[input]
        if kind == Kind.DOCUMENT:
            return self.documents.ids <= self.documents.ids[input]
        return ranks >= ranks[input]

    # -- the loss check ------------------------------------------------------------------------
    def allowed(self, position: int, convention: str) -> torch.Tensor:
        """(N,) the inputs ``position``'s prediction may see under ``convention``."""
        ranks, r = self.ranks, int(self.ranks[position])
        keep = ranks <= r if convention == "next" else ranks < r
        if self.documents is not None:
            keep &= self.documents.ids == self.documents.ids[position]
        if self.width is not None:
            keep &= ranks > r - self.width
        return keep

    def loss_keeps(self, cut: int) -> list[tuple[torch.Tensor, list[tuple[str, int]]]]:
        """The masked inputs of the loss rows that the sweep's cut ``cut`` stands for: the
        ``current`` prediction of rank ``cut`` and the ``next`` one of rank ``cut - 1`` (and of
        the last rank), each with the inputs it may see kept (equal masks share a pass)."""
        rows = [("current", cut)] + ([("next", cut - 1)] if cut >= 1 else [])
        if cut == self.n - 1:
            rows.append(("next", cut))
        groups: list[tuple[torch.Tensor, list[tuple[str, int]]]] = []
        for convention, rank in rows:
            position = self.position_of_rank(rank)
            keep = self.allowed(position, convention)
            for kept, targets in groups:
                if torch.equal(kept, keep):
                    targets.append((convention, position))
                    break
            else:
                groups.append((keep, [(convention, position)]))
        return groups

    # -- what the model is given ---------------------------------------------------------------
    def keywords(self, batch: int) -> dict:
        """The keyword arguments of every call of the model (documents, an all-ones mask)."""
        out = {}
        if self.documents is not None:
            out.update(self.documents.keyword_values(batch))
        if self.padding is not None and self.padding.keyword:
            out[self.padding.keyword] = torch.ones(batch, self.n, dtype=torch.long)
        return out

    # -- words ---------------------------------------------------------------------------------
    def pair(self, kind: Kind, output: int, input: int) -> dict:
        """What the report adds to a violation of this kind: the document pair, the distance."""
        out = {}
        positional = kind in (Kind.FUTURE, Kind.PRESENT, Kind.DOCUMENT, Kind.WINDOW, Kind.SHRUNK)
        if positional and self.documents is not None and self.documents.count > 1:
            out["documents"] = [self.document(input), self.document(output)]
        if kind in (Kind.WINDOW, Kind.SHRUNK):
            out.update(back=int(self.ranks[output] - self.ranks[input]), window=self.width)
        return out

    def to_json(self) -> dict:
        """The report's ``contract``: every clause, by name."""
        return {str(c.name): c.to_json() for c in self.clauses}


def window_modules(specs, default: int | None = None) -> tuple[tuple[str, int | None], ...]:
    """``{"layers.*.attn": 4}``, ``["layers.*.attn=4", "layers.1.attn=global"]`` or
    ``"layers.*.attn"`` (width ``default``, the declared --window): per-module declarations."""
    if specs is None:
        return ()
    if isinstance(specs, dict):
        items = list(specs.items())
    else:
        items = []
        for spec in [specs] if isinstance(specs, str) else specs:
            pattern, _, width = str(spec).partition("=")
            if not width and default is None:
                raise AdapterError(
                    f"--window-module {pattern}: no width, and no --window to take it from",
                    "give PATTERN=W, or --window W for every pattern without one",
                )
            items.append((pattern, width or default))
    out = []
    for pattern, width in items:
        if width in ("global", None, "none", math.inf):
            width = None
        else:
            try:
                width = int(width)
            except (TypeError, ValueError):
                raise AdapterError(
                    f"--window-module {pattern}={width}: not a width",
                    "give PATTERN=W (W a positive integer or global)",
                ) from None
        out.append((pattern.strip(), width))
    return tuple(out)
