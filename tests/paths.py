"""Where the tests' own files are: the models the CLI tests load by path (tests/targets/)."""

from pathlib import Path

TARGETS = Path(__file__).resolve().parent / "targets"
