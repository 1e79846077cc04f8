"""The verdict's vocabulary: what a violation is, and the modes a model can be in.

Every kind of evidence (gradients, perturbations, the certificate) speaks in these words, and the
audit concludes with them; this module imports nothing else of the package.

- A :class:`Violation` is one (output, input) pair where an output depends on an input it must
  not see, with the evidence that showed it.
- The *mode* of a model is the worst over all evidence: ``none`` (some output sees the future),
  ``inclusive`` (some output sees the present, none the future) or ``strict``.
"""

from dataclasses import dataclass


@dataclass
class Violation:
    output: int  # flat position of the prediction that changed / depends
    input: int  # flat position of the input it depends on
    kind: str  # "future" or "present"
    evidence: str  # "gradient", "perturbation" (with "/train" in training mode)
    effect: float  # |change| of the prediction, or |gradient|
    detail: str = ""


MODES = ("strict", "inclusive", "none")


def mode_of(violations: list[Violation]) -> str:
    """``none`` if anything sees the future, ``inclusive`` if something sees the present."""
    kinds = {v.kind for v in violations}
    if "future" in kinds:
        return "none"
    return "inclusive" if "present" in kinds else "strict"


def passes(mode: str, predicts: str) -> bool:
    """``current`` needs a strict model; ``next`` and ``auto`` accept strict or inclusive."""
    if predicts == "current":
        return mode == "strict"
    return mode in ("strict", "inclusive")
