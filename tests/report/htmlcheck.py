"""Reading the HTML reports back (stdlib html.parser): structure, figure
cells, embedded data, and anything that would reach the network."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from specfault.report.html import resolve


@dataclass
class Page:
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    figs: list[tuple[dict[str, str], str]] = field(default_factory=list)   # (attrs, text)
    codes: dict[str, str] = field(default_factory=dict)                    # id -> text
    data: Any = None
    scripts: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    swimlanes: list[list[list[str]]] = field(default_factory=list)        # rows of cells
    swimlane_classes: list[list[str]] = field(default_factory=list)

    def count(self, tag: str, cls: str | None = None) -> int:
        return sum(1 for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split()))


class _P(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.buf: list[str] = []
        self.in_swim = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.append((tag, a))
        if tag in ("td", "code", "script", "style"):
            self.stack.append((tag, a))
            self.buf = []
        if tag == "table" and "swimlane" in a.get("class", ""):
            self.in_swim = 1
            self.page.swimlanes.append([])
            self.page.swimlane_classes.append([])
        if self.in_swim and tag == "tr":
            self.row = []
            self.page.swimlane_classes[-1].append(a.get("class", ""))
        if self.in_swim and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1][0] == tag:
            t, a = self.stack.pop()
            text = "".join(self.buf)
            if t == "td" and "fig" in a.get("class", "").split():
                self.page.figs.append((a, text))
            elif t == "code" and "id" in a:
                self.page.codes[a["id"]] = text
            elif t == "script":
                if a.get("type") == "application/json":
                    self.page.data = json.loads(text)
                else:
                    self.page.scripts.append(text)
            elif t == "style":
                self.page.styles.append(text)
        if self.in_swim and tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        if self.in_swim and tag == "tr" and self.row is not None:
            self.page.swimlanes[-1].append(self.row)
            self.row = None
        if tag == "table" and self.in_swim:
            self.in_swim = 0

    def handle_data(self, data: str) -> None:
        self.buf.append(data)
        if self.cell is not None:
            self.cell.append(data)


def parse(text: str) -> Page:
    p = _P()
    p.feed(text)
    p.close()
    return p.page


def check_figures(page: Page, data: Any) -> int:
    """Every figure cell: its value is the JSON's at its path, and its text
    shows that value.  Returns how many there are."""
    for a, text in page.figs:
        want = resolve(data, a["data-json"])
        assert json.loads(a["data-value"]) == want, (a["data-json"], a["data-value"], want)
        scale, digits, suffix = float(a["data-scale"]), int(a["data-digits"]), a["data-suffix"]
        assert text.endswith(suffix), (text, suffix)
        shown = float(text[: len(text) - len(suffix)] if suffix else text)
        assert shown == round(want * scale, digits) or abs(shown - want * scale) <= 0.5 * 10 ** -digits + 1e-9, \
            (a["data-json"], text, want)
    return len(page.figs)


def check_offline(text: str, page: Page) -> None:
    """Nothing in the page would fetch anything."""
    for tag, a in page.tags:
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
        for k in ("src", "href", "xlink:href", "action"):
            v = a.get(k, "")
            assert not v or v.startswith("#"), (tag, k, v)
    assert "@import" not in text and "url(" not in "".join(page.styles)
    assert "fetch(" not in "".join(page.scripts) and "XMLHttpRequest" not in "".join(page.scripts)
