"""Blame in the reports: the JSON ``blame`` object and the lines the text report and the failure
message show.

JSON: ``blame`` is ``{kind: {file, line, module, module_type, op, source, function, code,
chain}}`` for each violated kind of dependency (``future``; ``present`` when the subject predicts
the current value) whose entry into the model's source was found (:mod:`properties.evidence.blame`),
``{}`` when the audit passed or nothing was located. ``file`` is an absolute path; the text
shows it relative to the working directory.
"""

import inspect

from properties.auditing.locate import violated_kinds
from properties.evidence.blame import is_model_code, relative

CALLERS = 2  # calling frames the text names (the JSON has them all)

__all__ = ["blame_dict", "blame_line", "blame_lines", "blames_of", "model_source", "module_words"]


def blames_of(result) -> dict:
    """``{kind: Blame}``: what the audit located, or (a merged audit, whose shards ran the
    model) the certificate's blame for each violated kind."""
    if result.blame:
        return dict(result.blame)
    cert = result.certificate
    if result.passed or cert is None or result.unsound:
        return {}
    return {k: cert.blames[k] for k in violated_kinds(result) if k in cert.blames}


def blame_dict(result) -> dict:
    return {kind: b.as_dict() for kind, b in blames_of(result).items()}


def blame_line(kind: str, b: dict) -> str:
    """``the future enters at tests/m.py:12 in forward (module attn, Attention; aten.bmm):
    y = q @ k`` (and the frames that called it)."""
    if b["file"] is None:
        where = module_words(b)
    else:
        where = f"{relative(b['file'])}:{b['line']} in {b['function']}"
    parts = []
    if b["module"] is not None:
        parts.append(module_words(b))
    if b["op"]:
        parts.append(b["op"])
    detail = f" ({'; '.join(parts)})" if parts else ""
    code = f": {b['code']}" if b["code"] else ""
    callers = [f"{relative(f['file'])}:{f['line']}" for f in b["chain"][1:]]
    if len(callers) > CALLERS:
        callers = callers[:CALLERS] + [f"{len(callers) - CALLERS} more"]
    called = f" [called from {', '.join(callers)}]" if callers else ""
    return f"the {kind} enters at {where}{detail}{code}{called}"


def module_words(b: dict) -> str:
    """``module transformer.h.3.attn (GPT2Attention)``, or ``the model's own forward (Net)``."""
    if b["module"] == "":
        return f"the model's own forward ({b['module_type']})"
    return f"module {b['module']} ({b['module_type']})"


def blame_lines(blame: dict) -> list[str]:
    return [blame_line(kind, b) for kind, b in blame.items()]


def model_source(result) -> dict | None:
    """Where the model's class is defined (``{file, line, name}``): the location of findings
    that no line is blamed for (a loss that does not match, a declared fact)."""
    module = result.subject.module
    target = module if module is not None else result.subject.model
    cls = target if inspect.isclass(target) or inspect.isfunction(target) else type(target)
    try:
        path = inspect.getsourcefile(cls)
        line = inspect.getsourcelines(cls)[1]
    except (TypeError, OSError):
        return None
    if not path or not is_model_code(path):
        return None
    return {"file": path, "line": line, "name": getattr(cls, "__qualname__", str(cls))}
