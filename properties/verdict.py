"""The verdict's vocabulary: what a violation is, how it was seen, and the modes a model can be in.

Every kind of evidence (gradients, perturbations, the certificate) speaks in these words, and the
audit concludes with them; this module imports nothing else of the package. The enums are
``str`` enums: their values are the JSON report's words, and they compare equal to them.

- A :class:`Violation` is one (output, input) pair where an output depends on an input it must
  not see (:class:`Kind`), with how it was seen (:class:`Source`) and in which
  :class:`ModelMode`.
- The *causality* of a model (:class:`Causality`, the report's ``mode``) is the worst over all
  evidence: ``none`` (some output sees the future), ``inclusive`` (some output sees the present,
  none the future) or ``strict``.
"""

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "MODES",
    "Causality",
    "Kind",
    "ModelMode",
    "Source",
    "Violation",
    "mode_of",
    "passes",
]


class Kind(str, Enum):
    """Where the input lies against the output, in generation order."""

    FUTURE = "future"
    PRESENT = "present"
    PAST = "past"  # only in the certificate's cross-check: a past the bound did not allow

    def __str__(self) -> str:
        return self.value


class Source(str, Enum):
    """How a dependency was seen."""

    GRADIENT = "gradient"  # a non-zero gradient in the dependency map
    SWEEP = "sweep"  # the sweep: every input at and after a cut replaced by zeros
    SEARCH = "search"  # Hypothesis' minimal perturbation

    @property
    def evidence(self) -> str:
        """The kind of evidence, as the JSON report names it."""
        return "gradient" if self is Source.GRADIENT else "perturbation"

    def __str__(self) -> str:
        return self.value


class ModelMode(str, Enum):
    """The mode the model ran in (``model.eval()`` or ``model.train()``)."""

    EVAL = "eval"
    TRAIN = "train"

    @classmethod
    def of(cls, training: bool) -> "ModelMode":
        return cls.TRAIN if training else cls.EVAL

    @property
    def training(self) -> bool:
        return self is ModelMode.TRAIN

    @property
    def label(self) -> str:
        """In words, for reports: ``inference`` or ``training mode``."""
        return "training mode" if self.training else "inference"

    def __str__(self) -> str:
        return self.value


class Causality(str, Enum):
    """What a model's predictions see (the report's ``mode``)."""

    STRICT = "strict"  # neither the present nor the future
    INCLUSIVE = "inclusive"  # the present, never the future
    NONE = "none"  # the future

    def __str__(self) -> str:
        return self.value


MODES = tuple(c.value for c in Causality)

# How a perturbation violation's detail begins in the JSON report, by source.
_DETAIL_PREFIX = {Source.SWEEP: "sweep: ", Source.SEARCH: "hypothesis: "}


@dataclass(frozen=True)
class Violation:
    output: int  # flat position of the prediction that changed / depends
    input: int  # flat position of the input it depends on
    kind: Kind
    source: Source
    effect: float  # |change| of the prediction, or |gradient|
    # what was done, in words: the perturbation ("positions of rank >= 3 were replaced"), or
    # what was seen ("non-zero gradient")
    detail: str = ""
    train: bool = False  # seen in training mode

    def __post_init__(self):
        # plain strings are accepted (hand-made violations, shard files) and made enums here
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "source", Source(self.source))

    @property
    def evidence(self) -> str:
        """The JSON report's tag: ``gradient`` or ``perturbation``, ``/train`` in training mode."""
        return self.source.evidence + ("/train" if self.train else "")

    @property
    def mode(self) -> ModelMode:
        return ModelMode.of(self.train)

    @property
    def described(self) -> str:
        """The JSON report's ``detail``: the detail, with the sweep's or the search's name."""
        return _DETAIL_PREFIX.get(self.source, "") + self.detail


def mode_of(violations: list[Violation]) -> Causality:
    """``none`` if anything sees the future, ``inclusive`` if something sees the present."""
    kinds = {v.kind for v in violations}
    if Kind.FUTURE in kinds:
        return Causality.NONE
    return Causality.INCLUSIVE if Kind.PRESENT in kinds else Causality.STRICT


def passes(mode: str, predicts: str) -> bool:
    """``current`` needs a strict model; ``next`` and ``auto`` accept strict or inclusive."""
    if predicts == "current":
        return mode == Causality.STRICT
    return mode in (Causality.STRICT, Causality.INCLUSIVE)
