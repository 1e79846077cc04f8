"""The HTML report, read with the standard library's HTML parser: the verdict, the violated
contracts with the blamed source line marked, the certificate, the coverage, the pictures as
``data:`` PNGs, and nothing fetched from elsewhere (no script, no stylesheet link, no remote
URL). The browser's view of it: benchmarks/html_screenshot.py."""

import base64
import tempfile
from html.parser import HTMLParser

import ci_reports

from properties.output import html, pictures

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Every start tag with its attributes, the text under each tag, and nesting errors."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.texts, self.open, self.errors = [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.open or self.open[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:]}")
            return
        self.open.pop()

    def handle_data(self, data):
        if data.strip():
            self.texts.append((tuple(t for t, _ in self.open), data.strip()))

    def text_under(self, tag: str) -> list[str]:
        return [t for path, t in self.texts if tag in path]


def render(names, with_pictures=True) -> tuple[str, Page]:
    entries = []
    for name in names:
        pngs = []
        if with_pictures:
            with tempfile.TemporaryDirectory() as tmp:
                paths = pictures.draw(ci_reports.result(name), tmp, target=name)
                pngs = [(p.name, p.read_bytes()) for p in paths]
        entries.append((ci_reports.report(name), pngs))
    text = html.render(entries, title="audit")
    return text, Page(text)


def test_a_leak_shows_the_verdict_the_blamed_line_and_the_map():
    data = ci_reports.report("reflect")
    text, page = render(["reflect"])
    assert text.startswith("<!DOCTYPE html>") and not page.errors and not page.open
    assert ("span", {"class": "verdict fail"}) in page.tags
    assert "FAIL" in page.text_under("span")
    hits = [t for t in page.texts if t[0][-1:] == ("span",) and "# LEAK" in t[1]]
    assert hits and hits[0][1].startswith(f"{data['blame']['future']['line']}")
    assert any("A prediction sees the future" in t for t in page.text_under("b"))
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG) for src in images)
    words = " ".join(t for _, t in page.texts)
    # the coverage line of the directed plan (the bound's candidate cuts led the sweep)
    assert "certificate: not proved" in words and "stopped at a forbidden change" in words


def test_nothing_is_fetched_from_elsewhere():
    _, page = render(["leak", "causal"])
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object")
        for key in ("src", "href"):
            value = attrs.get(key, "")
            assert not value or value.startswith(("data:", "#")), (tag, value)


def test_several_targets_get_a_summary_that_links_to_their_sections():
    _, page = render(["leak", "causal"], with_pictures=False)
    links = [a["href"] for tag, a in page.tags if tag == "a"]
    sections = [a["id"] for tag, a in page.tags if tag == "section"]
    assert links == [f"#{s}" for s in sections] and len(sections) == 2
    badges = [a["class"] for tag, a in page.tags if tag == "span" and "verdict" in
              a.get("class", "")]
    assert badges.count("verdict fail") == 2 and badges.count("verdict pass") == 2


def test_text_from_the_report_is_escaped():
    data = ci_reports.report("leak")
    data["target"] = "<script>alert(1)</script>"
    data["notes"] = ["a & b < c"]
    text = html.render([(data, [])], title=data["target"])
    page = Page(text)
    assert not any(tag == "script" for tag, _ in page.tags)
    assert "a & b < c" in [t for _, t in page.texts]
