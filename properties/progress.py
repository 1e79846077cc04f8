"""Progress on stderr while an audit runs: the phase, passes done of those planned, and an ETA.

A tqdm bar per phase, shown only when a phase lasts more than ``DELAY`` seconds (a small audit
prints nothing). On by default when stderr is a terminal; ``--quiet`` turns it off and
``--progress`` on (also when stderr is a file or a pipe). The checks call :func:`phase` and
:func:`advance`; with no bar active these cost nothing.
"""

import sys
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["DELAY", "Progress", "advance", "phase", "showing", "wanted"]

DELAY = 2.0  # seconds a phase runs before its bar appears

_current: ContextVar["Progress | None"] = ContextVar("audit_progress", default=None)


class Progress:
    def __init__(self, stream=None, delay: float | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.delay = DELAY if delay is None else delay
        self.bar = None

    def phase(self, name: str, planned: int) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=max(1, planned),
            desc=name,
            unit="pass",
            file=self.stream,
            delay=self.delay,
            leave=False,
            dynamic_ncols=True,
        )

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def wanted(progress: bool | None, stream=None) -> bool:
    """``progress`` as asked, or (None) whether the stream is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def showing(progress: bool | None, stream=None, delay: float | None = None):
    """Show progress bars for the duration (``progress``: True, False, or None for a TTY)."""
    delay = DELAY if delay is None else delay
    bar = Progress(stream, delay) if wanted(progress, stream) else None
    token = _current.set(bar)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
        _current.reset(token)


def phase(name: str, planned: int) -> None:
    bar = _current.get()
    if bar is not None:
        bar.phase(name, planned)


def advance(n: int = 1) -> None:
    bar = _current.get()
    if bar is not None:
        bar.advance(n)
