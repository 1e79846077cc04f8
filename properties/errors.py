"""Errors the user can act on.

Every problem with what the user handed us (a target that does not import, a layout that does not
fit the output, NaN in the outputs...) is an :class:`AuditError` whose message is one line naming
the problem and the fix. The CLI prints it and exits with code 2; the Python API raises it. A
traceback from deep inside torch is a bug of ours.
"""

__all__ = ["AdapterError", "AuditError", "ModelError", "TargetError", "describe", "one_line"]


class AuditError(Exception):
    """A problem with the input to the audit (target, flags, model behaviour): exit code 2."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)


class TargetError(AuditError):
    """The target could not be found, imported or built."""


class AdapterError(AuditError):
    """The model does not fit the declared canonical form (layout, grid, output field...)."""


class ModelError(AdapterError):
    """The model itself raised while running. The audit's first forward pass turns it into an
    error; later, in one mode or one kind of evidence only (with autograd on, in training mode),
    that evidence is reported unavailable and the verdict rests on the evidence that did run."""


def one_line(text: str, limit: int = 300) -> str:
    """Collapse an exception message to one short line, for quoting inside our own message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(exc)}"
