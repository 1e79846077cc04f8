"""Could not run is not "leaks": an audit whose checks gathered no evidence at all is an error.

Exit code 1 (and ``assert_causal``'s ``AssertionError``) says the model sees what it must not;
a model the audit cannot run, or evidence that is unavailable, must not say that. Where some of
the asked checks ran, they decide and the notes say what did not; where none did (the
certificate alone and unavailable, a receptive field without gradients, a loss check whose
forward passes raised), the audit raises an :class:`~properties.errors.AuditError` naming what
stopped it and what to do: the CLI's exit code 2, one line.
"""

from properties.auditing.coverage import MapCoverage
from properties.auditing.result import AuditResult
from properties.errors import AuditError
from properties.evidence.sharding import leads

__all__ = ["ran", "require_some_evidence"]


def ran(result: AuditResult) -> dict[str, bool]:
    """Per asked check, whether its evidence was gathered (a shard's share may be empty: it
    still ran; the certificate is shard 0's job)."""
    cert = result.certificate
    mapped = any(isinstance(c, MapCoverage) for c in result.coverage.gradient.values())
    proof = cert is not None and cert.status != "unavailable"
    produced = {
        "causality": mapped or bool(result.perturbations),
        "receptive_field": mapped,
        "blind_spot": mapped,
        "loss": bool(result.losses),
        "certificate": proof or not leads(result.shard),
        "incremental": result.incremental is not None,
    }
    return {c: produced[c] for c in result.checks}


def require_some_evidence(result: AuditResult, reasons: list[str]) -> None:
    """Raise when no asked check gathered evidence; ``reasons``: why each kind did not, in the
    order they were found."""
    produced = ran(result)
    if any(produced.values()):
        return
    cert = result.certificate
    if cert is not None and cert.status == "unavailable":
        reasons = [*reasons, f"the certificate is unavailable: {cert.reason}"]
    why = reasons[0] if reasons else "no evidence was gathered"
    asked = ",".join(result.checks)
    if result.certificate_only:
        fix = (
            "fix what it names, or let the dynamic evidence decide (drop --checks certificate, "
            "prove=False)"
        )
    else:
        fix = "fix what it names, or ask for checks this model allows (e.g. --checks causality)"
    raise AuditError(f"no evidence for --checks {asked} could be gathered: {why}", fix)
