"""One HTML file (``--html PATH``): the audit to read in a browser, without a server.

Per target: the verdict, the violated contracts with the source lines where the leaks enter (a
few lines of context, the blamed one marked), the violations, the certificate, the measured
facts, what was covered, the notes, and the pictures (embedded as ``data:`` URIs: the file has
no external asset, no script). For ``zoo``, a table of every model first, linking to its
section. Everything comes from the JSON reports (and the PNG bytes of the pictures).
"""

import base64
import html
import linecache
import re

from properties.evidence.blame import relative
from properties.output.blame import module_words
from properties.output.findings import findings
from properties.output.report import certificate_line, coverage_line

__all__ = ["anchor", "render"]

CONTEXT = 2  # source lines shown on each side of a blamed line
MAX_ROWS = 10  # violations listed per target

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-top: 1px solid #ccc;
     padding-top: 1em; } h3 { font-size: 1.05em; margin-bottom: .3em; }
.verdict { display: inline-block; padding: .25em .8em; border-radius: .3em; color: #fff;
           font-weight: bold; letter-spacing: .05em; }
.pass { background: #1a7f37; } .fail { background: #cf222e; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #d0d7de;
        padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } code, pre { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; border-radius: .3em; }
.hit { background: #ffebe9; display: block; font-weight: bold; }
.finding { border-left: 4px solid #cf222e; padding-left: 1em; margin: 1em 0; }
.muted { color: #57606a; } figure { margin: 1em 0; } img { max-width: 100%; }
"""


def render(entries: list[tuple[dict, list[tuple[str, bytes]]]], *, title: str) -> str:
    """The page for ``entries``: ``(JSON report, [(picture name, PNG bytes), ...])``."""
    body = [f"<h1>causal-audit: {_e(title)}</h1>"]
    if len(entries) > 1:
        body.append(_summary([d for d, _ in entries]))
    for data, pictures in entries:
        body.append(_section(data, pictures))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>causal-audit: {_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def anchor(target: str) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", target).strip("-")


def _badge(passed: bool) -> str:
    return f"<span class=\"verdict {'pass' if passed else 'fail'}\">" \
           f"{'PASS' if passed else 'FAIL'}</span>"


def _summary(reports: list[dict]) -> str:
    rows = ["<tr><th>target</th><th>verdict</th><th>mode</th><th>violated</th></tr>"]
    for d in reports:
        rules = ", ".join(f.rule for f in findings(d)) or "-"
        rows.append(
            f"<tr><td><a href=\"#{anchor(d['target'])}\">{_e(d['target'])}</a></td>"
            f"<td>{_badge(d['passed'])}</td><td>{_e(d['mode'] or '-')}</td>"
            f"<td>{_e(rules)}</td></tr>"
        )
    return "<table class=\"summary\">" + "".join(rows) + "</table>"


def _section(data: dict, pictures) -> str:
    parts = [
        f"<section id=\"{anchor(data['target'])}\">",
        f"<h2>{_badge(data['passed'])} {_e(data['target'])}</h2>",
        f"<p class=\"muted\">grid {_e(tuple(data['grid']))}, predicts {_e(data['predicts'])}"
        f"{', with training mode' if data['train'] else ''}; mode "
        f"<b>{_e(data['mode'] or 'not checked')}</b>; {data['seconds']:.1f} s</p>",
    ]
    found = findings(data)
    if found:
        parts.append("<h3>Violated contracts</h3>")
        parts.extend(_finding(f) for f in found)
    parts.extend(_picture(name, png) for name, png in pictures)  # the map, near the top
    parts.append(_facts(data))
    if data.get("certificate"):
        parts.append(f"<h3>Certificate</h3><p>{_e(certificate_line(data).strip())}</p>")
        cert = data["certificate"]
        if cert["lost_precision"]:
            parts.append("<p class=\"muted\">precision lost at: "
                         + _e(", ".join(cert["lost_precision"][:5])) + "</p>")
    parts.append(_violations(data))
    if data.get("coverage"):
        parts.append(f"<h3>Coverage</h3><p>{_e(coverage_line(data['coverage']))}</p>")
    if data.get("notes"):
        parts.append("<h3>Notes</h3><ul>"
                     + "".join(f"<li>{_e(n)}</li>" for n in data["notes"]) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _picture(name: str, png: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    return (f"<figure><img src=\"{uri}\" alt=\"{_e(name)}\">"
            f"<figcaption class=\"muted\">{_e(name)}</figcaption></figure>")


def _finding(f) -> str:
    out = [f"<div class=\"finding\"><b>{_e(f.title)}</b> <code>{_e(f.rule)}</code>",
           f"<p>{_e(f.message)}</p>"]
    if f.counterexample:
        out.append(f"<p>Counterexample: {_e(f.counterexample)}</p>")
    loc = f.location
    if loc is not None:
        what = "The leak enters at" if f.blamed else "No line located; the model is defined at"
        module = ""
        if f.blamed and loc.get("module") is not None:
            op = f", <code>{_e(loc['op'])}</code>" if loc.get("op") else ""
            module = f" ({_e(module_words(loc))}{op})"
        out.append(f"<p>{what} <code>{_e(relative(loc['file']))}:{loc['line']}</code>"
                   f"{module}</p>")
        out.append(_source(loc["file"], loc["line"]))
        if len(f.chain) > 1:
            calls = ", ".join(f"{relative(fr['file'])}:{fr['line']} ({fr['function']})"
                              for fr in f.chain[1:])
            out.append(f"<p class=\"muted\">called from {_e(calls)}</p>")
    out.append("</div>")
    return "\n".join(out)


def _source(path: str, line: int) -> str:
    rows = []
    for n in range(max(1, line - CONTEXT), line + CONTEXT + 1):
        text = linecache.getline(path, n)
        if not text and n > line:
            break
        cell = f"{n:5d}  {_e(text.rstrip())}"
        rows.append(f"<span class=\"hit\">{cell}</span>" if n == line else cell + "\n")
    return "<pre>" + "".join(rows) + "</pre>" if rows else ""


def _violations(data: dict) -> str:
    shown = [v for v in data.get("violations", []) if not v["allowed"]][:MAX_ROWS]
    if not shown:
        return ""
    rows = ["<tr><th>output</th><th>input</th><th>kind</th><th>evidence</th><th>effect</th>"
            "<th>detail</th></tr>"]
    for v in shown:
        cells = [v["output"], v["input"], v["kind"], v["evidence"], _g(v["effect"]), v["detail"]]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    total = data.get("violations_total", len(shown))
    more = f"<p class=\"muted\">{total} violations in all</p>" if total > len(shown) else ""
    return "<h3>Violations</h3><table>" + "".join(rows) + "</table>" + more


def _g(x) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"


def _facts(data: dict) -> str:
    rows = []
    rf = data.get("receptive_field")
    if rf:
        holes = "" if rf["holes"] is None else f", holes {rf['holes']}"
        rows.append(("receptive field", f"size {rf['size']}, span {rf['span']}{holes} "
                                        f"(output {rf['position']})"))
    if data.get("blind_spot"):
        rows.append(("blind spot", f"{data['blind_spot']['size']} pixels"))
    le = data.get("loss_equivalence")
    if le:
        rows.append(("loss equivalence", f"{'holds' if le['holds'] else 'FAILS'}: max "
                                         f"|prediction diff| {le['max_abs_diff']:.3g}"))
    for fact, d in (data.get("declared") or {}).items():
        rows.append((f"declared {fact}", f"{d['declared']}, measured {d['measured']}: "
                                         f"{'ok' if d['ok'] else 'MISMATCH'}"))
    if not rows:
        return ""
    return "<h3>Facts</h3><table>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
