"""An audit's result: the evidence it gathered and what it concluded from it."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from properties.auditing.coverage import Coverage
from properties.evidence.facts import BlindSpot, ReceptiveField
from properties.evidence.gradients import DependencyMap
from properties.evidence.loss import LossEquivalence
from properties.evidence.perturbation import PerturbationReport
from properties.subject.canonical import Subject
from properties.verdict import Causality, ModelMode, Violation

if TYPE_CHECKING:
    from properties.evidence.certificate import Certificate

__all__ = ["AuditResult"]


@dataclass
class AuditResult:
    """Everything the audit found; :mod:`properties.output.report` turns it into JSON and text.

    Gathering fills the evidence fields (:mod:`properties.auditing.gather`, or a shard file);
    :func:`~properties.auditing.conclude.conclude` recomputes every conclusion from them."""

    subject: Subject
    checks: tuple[str, ...]
    train: bool
    exact: bool
    shard: tuple[int, int] | None = None
    # gathered evidence
    maps: dict[ModelMode, DependencyMap] = field(default_factory=dict)
    perturbations: dict[ModelMode, PerturbationReport] = field(default_factory=dict)
    losses: dict[str, LossEquivalence] = field(default_factory=dict)  # by convention
    coverage: Coverage = field(default_factory=Coverage)
    evidence_notes: list[str] = field(default_factory=list)  # said while gathering
    seconds: float = 0.0
    certificate: "Certificate | None" = None  # the static bound (certificate check)
    sample_bytes: int = 0  # what one sample holds in a forward pass (measured by validate)
    # conclusions (recomputed by conclude())
    mode: Causality | None = None
    causal: bool | None = None
    violations: list[Violation] = field(default_factory=list)  # examples (see violation_count)
    violation_count: int = 0  # all of them: gradient pairs beyond those kept are only counted
    receptive_field: ReceptiveField | None = None
    blind_spot: BlindSpot | None = None
    loss: LossEquivalence | None = None
    derived_notes: list[str] = field(default_factory=list)
    # the certificate's cross-check with the dynamic evidence
    certificate_exact: bool | None = None  # the measured map equals the bound
    unsound: list[Violation] = field(default_factory=list)  # dynamic dependencies outside it

    @property
    def notes(self) -> list[str]:
        """What the report should say besides the verdict (gathering's, then concluding's)."""
        return list(dict.fromkeys(self.evidence_notes + self.derived_notes))

    @property
    def dependency_map(self) -> DependencyMap | None:
        """The inference map (the one the receptive field and blind spot are measured on)."""
        return self.maps.get(ModelMode.EVAL)

    @property
    def certificate_only(self) -> bool:
        return self.checks == ("certificate",)

    @property
    def passed(self) -> bool:
        ok = self.causal is not False and not self.unsound
        if self.loss is not None:
            ok = ok and self.loss.holds
        if self.certificate_only:  # the proof alone decides
            ok = ok and self.certificate is not None and self.certificate.proved
        return ok
