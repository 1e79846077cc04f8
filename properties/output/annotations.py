"""GitHub Actions annotations: ``::error file=F,line=L,title=T::MESSAGE`` workflow commands, one
per violated contract, printed on stdout when ``GITHUB_ACTIONS=true`` or with ``--annotations
github``; GitHub shows each at its line in the pull request's diff.

The escaping is GitHub's (``@actions/core``'s ``command.ts``): in the message ``%``, ``\\r`` and
``\\n`` become ``%25``, ``%0D``, ``%0A``; in a property value ``:`` and ``,`` also become ``%3A``
and ``%2C``. Files are relative to ``$GITHUB_WORKSPACE`` (else the working directory).
"""

import os

from properties.output.findings import Finding, findings

__all__ = ["command", "commands", "escape_data", "escape_property", "wanted"]


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def wanted(option: str | None) -> bool:
    """``--annotations github`` or ``off``; by default, inside GitHub Actions."""
    if option is not None:
        return option == "github"
    return os.environ.get("GITHUB_ACTIONS") == "true"


def command(f: Finding, root: str | None = None) -> str:
    root = os.path.abspath(root or os.environ.get("GITHUB_WORKSPACE") or os.getcwd())
    props = {}
    if f.location is not None:
        path = os.path.abspath(f.location["file"])
        if path.startswith(root + os.sep):
            path = os.path.relpath(path, root)
        props["file"] = path
        props["line"] = str(f.location["line"])
    props["title"] = f"causal-audit {f.rule}: {f.target}"
    message = f.message
    if f.counterexample:
        message += f"\nCounterexample: {f.counterexample}"
    if f.blamed and f.location.get("code"):
        message += f"\nThe leak enters here: {f.location['code']}"
    head = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
    return f"::error {head}::{escape_data(message)}"


def commands(reports: list[dict], root: str | None = None) -> list[str]:
    return [command(f, root) for data in reports for f in findings(data)]
