"""A shard's evidence as JSON, so that shards run anywhere can be merged by the CLI.

``python -m properties audit ... --shard I/N --json part.json`` writes, besides the usual report,
a ``shard_evidence`` object: everything :func:`properties.auditing.conclude.merge` needs
(dependency-map rows, sweep records, Hypothesis' findings, loss rows, coverage, notes) and the few
facts of the subject that concluding reads (grid, order, convention). ``python -m properties merge
part*.json`` loads them, merges and concludes: the verdict, the report and the exit code of the
unsharded audit.

Floats are written as JSON numbers (Python writes the shortest repr that reads back to the same
double) or as ``"inf"``/``"nan"``; boolean and bfloat16 maps as base64 of their zlib-compressed
bytes. Nothing is lost: the merged report equals the unsharded one bit for bit.
"""

import base64
import math
import zlib

import torch

from properties.auditing.coverage import Coverage
from properties.auditing.result import AuditResult
from properties.errors import AdapterError
from properties.evidence.gradients import STRENGTH, DependencyMap
from properties.evidence.loss import LossEquivalence
from properties.evidence.perturbation import PerturbationReport
from properties.evidence.replacements import Perturbation
from properties.subject.canonical import Subject
from properties.subject.layout import parse_layout
from properties.verdict import Kind, ModelMode, Violation

__all__ = ["SCALARS", "VERSION", "dump", "load"]

VERSION = 4  # 2: violations by source and mode, coverage as a typed record; 3: rounding
# (or, apart, the contract's clauses); 4: both
MAP_ROUNDING = ("rounding", "rounding_effect", "rounding_scale", "rounding_dtype")


def _float(x: float):
    return x if math.isfinite(x) else str(x)


def _unfloat(x) -> float:
    return float(x)


def _pack(t: torch.Tensor) -> dict:
    raw = t.contiguous().view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    data = zlib.compress(raw.numpy().tobytes(), 6)
    return {"shape": list(t.shape), "bytes": base64.b64encode(data).decode("ascii")}


def _unpack(d: dict, dtype: torch.dtype) -> torch.Tensor:
    raw = bytearray(zlib.decompress(base64.b64decode(d["bytes"])))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    if dtype == torch.bool:
        return flat.to(torch.bool).reshape(d["shape"])
    return flat.view(dtype).reshape(d["shape"])


def _pack_bound(bound) -> dict:
    """The certificate's bound in its own form: the dense bits, or (above
    ``deps.DENSE_LIMIT`` positions) the runs' two bounds, ``N x runs`` ints (a dense copy
    would be the ``N x N`` the run form exists to avoid)."""
    from properties.evidence.certificate import deps

    if not deps.is_runs(bound):
        return _pack(bound)
    return {"runs": {"n": bound.n, "dtype": str(bound.lo.dtype).split(".")[-1],
                     "lo": _pack(bound.lo.contiguous()), "hi": _pack(bound.hi.contiguous())}}


def _unpack_bound(d: dict):
    from properties.evidence.certificate.runs import Runs

    if "runs" not in d:
        return _unpack(d, torch.bool)
    r = d["runs"]
    dtype = getattr(torch, r["dtype"])
    return Runs(_unpack(r["lo"], dtype), _unpack(r["hi"], dtype), r["n"])


def _violation(v: Violation) -> dict:
    return {**vars(v), "kind": str(v.kind), "source": str(v.source), "effect": _float(v.effect)}


def _clauses(subject: Subject) -> list[dict]:
    """The contract's clauses besides causality, as JSON (what concluding reads of them)."""
    from properties import contracts as c

    out = []
    for clause in subject.clauses:
        if isinstance(clause, c.Documents):
            out.append({"documents": clause.ids.tolist(), "keywords": list(clause.keywords)})
        elif isinstance(clause, c.Window):
            out.append({"window": clause.width, "exact": clause.exact,
                        "modules": list(clause.modules), "matched": list(clause.matched)})
        elif isinstance(clause, c.BatchIndependence):
            out.append({"batch": True})
        else:
            out.append({"padding": list(clause.sides), "keyword": clause.keyword})
    return out


def _unclauses(data: list[dict], ranks: torch.Tensor) -> tuple:
    from properties import contracts as c

    out = []
    for d in data:
        if "documents" in d:
            keywords = tuple(tuple(k) for k in d["keywords"])
            clause = c.Documents(torch.tensor(d["documents"]), keywords)
            out.append(clause.checked(len(ranks), ranks))
        elif "window" in d:
            out.append(c.Window(d["window"], d["exact"],
                                tuple(tuple(m) for m in d["modules"]),
                                tuple(tuple(m) for m in d["matched"])))
        elif "batch" in d:
            out.append(c.BatchIndependence())
        else:
            out.append(c.Padding(tuple(d["padding"]), d["keyword"]))
    return tuple(out)


def _counterexample(d: dict):
    """A counterexample of any probe family (``family`` says which dataclass it is)."""
    from properties.evidence.batch import BatchPerturbation
    from properties.evidence.padding import PaddingPerturbation

    family = d.get("family", "causality")
    if family == "batch":
        return BatchPerturbation(**d)
    if family == "padding":
        return PaddingPerturbation(**{**d, "lengths": tuple(d["lengths"])})
    return Perturbation(**d)


def _unviolation(d: dict) -> Violation:
    return Violation(**{**d, "effect": _unfloat(d["effect"])})


def dump(result: AuditResult, memory_bytes: int) -> dict:
    """The ``shard_evidence`` object of a shard's result."""
    s = result.subject
    return {
        "version": VERSION,
        "shard": list(result.shard) if result.shard else None,
        "memory_bytes": memory_bytes,
        "subject": {
            "grid": list(s.grid),
            "ranks": None if s.is_raster else s.ranks.tolist(),
            "predicts": s.predicts,
            "layout": s.layout_in.letters,
            "name": s.name,
            # what concluding and the report read besides: the facts of a sub-pixel subject,
            # the wording of a token counterexample
            "features": s.features,
            "vocab": s.vocab,
            "classes": s.classes,
            "value_range": None if s.value_range is None else list(s.value_range),
            "subpixel_axis": s.subpixel_axis,
            "clauses": _clauses(s),
        },
        "checks": list(result.checks),
        "train": result.train,
        "exact": result.exact,
        "maps": {
            str(mode): {
                "outputs": m.outputs.tolist(),
                "seen": _pack(m.seen),
                "strength": _pack(m.strength),
                "passes": m.passes,
                "method": m.method,
                "probe_silent": m.probe_silent,
                **{k: getattr(m, k) for k in MAP_ROUNDING},
            }
            for mode, m in result.maps.items()
        },
        "perturbations": {
            str(mode): {
                **{k: getattr(r, k) for k in PerturbationReport.scalars()},
                "sweep": [[t, c, _float(e), str(k)] for t, (c, e, k) in r.sweep.items()],
                "probed": {
                    family: [[t, c, _float(e), str(k)] for t, (c, e, k) in records.items()]
                    for family, records in r.probed.items()
                },
                "reached": sorted(r.reached),
                "found": [_violation(v) for v in r.found],
                "counterexamples": {str(k): vars(p) for k, p in r.counterexamples.items()},
            }
            for mode, r in result.perturbations.items()
        },
        "sample_gradients": {
            str(mode): [_violation(v) for v in found]
            for mode, found in result.sample_gradients.items()
        },
        "losses": {
            convention: {
                "rows": [{k: _float(v) for k, v in row.items()} for row in loss.positions],
                "tolerance": loss.tolerance,
            }
            for convention, loss in result.losses.items()
        },
        "certificate": None if result.certificate is None else _certificate(result.certificate),
        "coverage": result.coverage.to_shard(),
        "notes": result.evidence_notes,
        "seconds": result.seconds,
    }


def _certificate(cert) -> dict:
    """Shard 0's certificate, whole: the merged audit cross-checks it with every shard's map."""
    rf = cert.receptive_field
    return {
        **{k: getattr(cert, k) for k in SCALARS},
        "bound": None if cert.bound is None else _pack_bound(cert.bound),
        **{k: list(getattr(cert, k)) for k in LISTS},
        "receptive_field": None
        if rf is None
        else {
            **{k: getattr(rf, k) for k in ("size", "span", "holes", "position", "max_span")},
            "sizes": _pack(rf.sizes),
            "spans": _pack(rf.spans),
            "dtypes": [str(rf.sizes.dtype), str(rf.spans.dtype)],
        },
        "forbidden": [vars(f) for f in cert.forbidden],
        "lost_precision": list(cert.lost_precision),
        "blames": {kind: b.as_dict() for kind, b in cert.blames.items()},
        "contracts": dict(cert.contracts),
    }


def _uncertificate(d: dict | None):
    if d is None:
        return None
    from properties.evidence.blame import Blame
    from properties.evidence.certificate import Certificate, Forbidden
    from properties.evidence.facts import ReceptiveField

    rf = d["receptive_field"]
    if rf is not None:
        sizes, spans = (getattr(torch, t.split(".")[-1]) for t in rf["dtypes"])
        rf = ReceptiveField(
            **{k: rf[k] for k in ("size", "span", "holes", "position", "max_span")},
            sizes=_unpack(rf["sizes"], sizes),
            spans=_unpack(rf["spans"], spans),
        )
    return Certificate(
        **{k: d[k] for k in SCALARS},
        bound=None if d["bound"] is None else _unpack_bound(d["bound"]),
        **{k: list(d.get(k, [])) for k in LISTS},
        receptive_field=rf,
        forbidden=[Forbidden(**f) for f in d["forbidden"]],
        lost_precision=list(d["lost_precision"]),
        blames={kind: Blame.from_dict(b) for kind, b in d.get("blames", {}).items()},
        contracts=dict(d["contracts"]),
    )


SCALARS = ("status", "reason", "mode", "forbidden_count", "path_dependent", "seconds", "train")
LISTS = ("unknown", "reads")  # where unknown origin entered, where input values were read


def load(data: dict, where: str) -> AuditResult:
    """A shard's :class:`AuditResult` (evidence only; :func:`properties.auditing.conclude.merge`
    concludes)."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise AdapterError(
            f"{where} holds no shard evidence this version can read",
            "write it with `python -m properties audit ... --shard I/N --json PATH`",
        )
    d = data["subject"]
    grid = tuple(d["grid"])
    subject = Subject(
        model=None,
        grid=grid,
        layout_in=parse_layout(d["layout"], len(grid)),
        predicts=d["predicts"],
        name=d["name"],
        ranks=None if d["ranks"] is None else torch.tensor(d["ranks"]),
        features=d["features"],
        vocab=d["vocab"],
        classes=d["classes"],
        value_range=None if d["value_range"] is None else tuple(d["value_range"]),
        subpixel_axis=d["subpixel_axis"],
    )
    subject.clauses = _unclauses(d["clauses"], subject.ranks)
    shard = tuple(data["shard"]) if data["shard"] else None
    result = AuditResult(subject, tuple(data["checks"]), data["train"], data["exact"], shard)
    for mode, m in data["maps"].items():
        result.maps[ModelMode(mode)] = DependencyMap(
            outputs=torch.tensor(m["outputs"], dtype=torch.long),
            seen=_unpack(m["seen"], torch.bool),
            strength=_unpack(m["strength"], STRENGTH),
            passes=m["passes"],
            method=m["method"],
            probe_silent=m["probe_silent"],
            **{k: m[k] for k in MAP_ROUNDING},
        )
    for mode, r in data["perturbations"].items():
        report = PerturbationReport(
            sweep={t: (c, _unfloat(e), Kind(k)) for t, c, e, k in r["sweep"]},
            found=[_unviolation(v) for v in r["found"]],
            counterexamples={Kind(k): _counterexample(p) for k, p in r["counterexamples"].items()},
            probed={
                family: {t: (c, _unfloat(e), Kind(k)) for t, c, e, k in records}
                for family, records in r["probed"].items()
            },
            reached=set(r["reached"]),
            **{k: r[k] for k in PerturbationReport.scalars()},
        )
        result.perturbations[ModelMode(mode)] = report
    for mode, found in data["sample_gradients"].items():
        result.sample_gradients[ModelMode(mode)] = [_unviolation(v) for v in found]
    for convention, loss in data["losses"].items():
        rows = [
            {k: (v if k in ("position", "rounding") else _unfloat(v)) for k, v in row.items()}
            for row in loss["rows"]
        ]
        result.losses[convention] = LossEquivalence.from_rows(rows, loss["tolerance"])
    result.certificate = _uncertificate(data.get("certificate"))
    result.coverage = Coverage.from_shard(data["coverage"])
    result.evidence_notes = list(data["notes"])
    result.seconds = data["seconds"]
    return result
