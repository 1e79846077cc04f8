"""What an audit covered, as one typed record (:class:`Coverage`), and its JSON form.

Gathering writes it, the report reads it, shards' records merge. In the JSON report (``coverage``)
the gradient evidence is keyed by model mode, ``eval``/``train``, as the perturbation evidence
is; for one release it is also written under the old spelling, ``inference``/``training mode``.
"""

from dataclasses import asdict, dataclass, field

from properties.verdict import ModelMode

__all__ = ["SKIPPED", "UNAVAILABLE", "Coverage", "MapCoverage"]

UNAVAILABLE = "unavailable"  # the evidence could not be gathered (the notes say why)
SKIPPED = "skipped (budget)"  # the time budget left no room for it


@dataclass
class MapCoverage:
    """What one dependency map covered."""

    outputs_mapped: int
    outputs_total: int
    method: str  # "plain", "colored" or "sampled"
    passes: int  # VJP passes
    inputs: int  # random inputs whose maps are united
    sampled_row_inputs: int | None = None  # inputs the sampled rows were taken on, when fewer

    def to_json(self) -> dict:
        data = asdict(self)
        if self.sampled_row_inputs is None:
            del data["sampled_row_inputs"]
        return data

    def merged(self, other: "MapCoverage") -> "MapCoverage":
        """Two shards' parts of one map: their outputs and passes add up."""
        return MapCoverage(
            self.outputs_mapped + other.outputs_mapped,
            self.outputs_total,
            self.method,
            self.passes + other.passes,
            self.inputs,
            self.sampled_row_inputs,
        )


@dataclass
class Coverage:
    gradient: dict[ModelMode, MapCoverage | str] = field(default_factory=dict)
    # modes the perturbation evidence could not be gathered in (the model raised)
    perturbation_unavailable: list[ModelMode] = field(default_factory=list)
    budgeted: bool = False  # the time budget cut some evidence short
    cuts_stratified: bool = False  # the sweep sampled its cuts
    exhaustive: bool | None = None  # every cut, output and position (None: not decided yet)
    budget_seconds: float | None = None
    forward_seconds: float | None = None  # one forward pass of one sample, measured
    loss_checked: int | None = None  # loss positions checked (those of the swept cuts)
    loss_total: int | None = None
    loss_convention: str | None = None  # the convention the loss check was read with

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self, perturbations: dict | None = None, n_positions: int = 0) -> dict:
        """The report's ``coverage`` object. ``perturbations``: the gathered reports by mode
        (their cuts and examples are coverage too)."""
        data: dict = {}
        gradient = {str(m): _json_entry(g) for m, g in self.gradient.items()}
        gradient.update({ModelMode(m).label: g for m, g in list(gradient.items())})  # old names
        if gradient:
            data["gradient"] = gradient
        perturbation = {
            str(mode): {
                "cuts_swept": rep.cuts_swept,
                "cuts_total": n_positions,
                "hypothesis_examples": rep.examples,
                "batch_independent": rep.batch_independent,
            }
            for mode, rep in (perturbations or {}).items()
        }
        perturbation.update({str(m): UNAVAILABLE for m in self.perturbation_unavailable})
        data["perturbation"] = perturbation
        if self.budgeted:
            data["budgeted"] = True
        if self.cuts_stratified:
            data["cuts_stratified"] = True
        if self.exhaustive is not None:
            data["exhaustive"] = self.exhaustive
        for key in ("budget_seconds", "forward_seconds", "loss_convention"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.loss_checked is not None:
            data["loss_positions"] = {"checked": self.loss_checked, "total": self.loss_total}
        return data

    def to_shard(self) -> dict:
        """Every field, for a shard's evidence file."""
        data = asdict(self)
        data["gradient"] = {str(m): _json_entry(g) for m, g in self.gradient.items()}
        data["perturbation_unavailable"] = [str(m) for m in self.perturbation_unavailable]
        return data

    @classmethod
    def from_shard(cls, data: dict) -> "Coverage":
        data = dict(data)
        data["gradient"] = {
            ModelMode(m): g if isinstance(g, str) else MapCoverage(**g)
            for m, g in data["gradient"].items()
        }
        data["perturbation_unavailable"] = [ModelMode(m) for m in data["perturbation_unavailable"]]
        return cls(**data)

    # -- shards ----------------------------------------------------------------------------------
    @classmethod
    def merged(cls, parts: list["Coverage"]) -> "Coverage":
        """The coverage of the whole audit from its shards': maps' outputs and passes and the
        loss positions add up; everything else is the first shard's (the same in all)."""
        first = parts[0]
        out = cls(**{**vars(first), "gradient": dict(first.gradient)})
        out.perturbation_unavailable = list(
            dict.fromkeys(m for p in parts for m in p.perturbation_unavailable)
        )
        for part in parts[1:]:
            for mode, g in part.gradient.items():
                mine = out.gradient.get(mode)
                if isinstance(mine, MapCoverage) and isinstance(g, MapCoverage):
                    out.gradient[mode] = mine.merged(g)
                else:
                    out.gradient.setdefault(mode, g)
            if part.loss_checked is not None:
                out.loss_checked = (out.loss_checked or 0) + part.loss_checked
            out.budgeted = out.budgeted or part.budgeted
            out.cuts_stratified = out.cuts_stratified or part.cuts_stratified
            for key in _FIRST_SET:
                if getattr(out, key) is None:
                    setattr(out, key, getattr(part, key))
        return out


# fields the first shard that has them speaks for
_FIRST_SET = (
    "exhaustive", "budget_seconds", "forward_seconds", "loss_total", "loss_convention"
)


def _json_entry(g: "MapCoverage | str"):
    return g if isinstance(g, str) else g.to_json()
