"""Names are data: a class folder called ``a $\\frac$ b``, ``x | y``, ``**x**``, ``<script>`` or ``[bold]`` shows as
spelled in every output, and breaks none of them (issue 19, item 4)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt
from report_helpers import NAMES, SHOWN, hostile_gallery, hostile_report
from rich.console import Console

from hardenctl.report import (
    grid_png,
    plot_png,
    render_html,
    render_junit,
    render_markdown,
    render_table,
    write_report_files,
)

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Tags, text and tables of an HTML document, as a browser would see them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def cells_per_row(markdown: str) -> list[list[int]]:
    """Per table, the number of cells of each row as GFM splits them (on pipes no backslash escapes)."""
    tables, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(len(re.findall(r"(?<!\\)\|", line)) - 1)
        else:
            current = None
    return tables


def markdown_page(markdown: str) -> Page:
    """The Markdown as GitHub renders it (CommonMark with GFM tables and strikethrough)."""
    return Page(MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown))


def per_class_cells(page: Page) -> list[str]:
    table = next(t for t in page.tables if t[0] == ["class", "n", "clean", "robust"])
    return [row[0] for row in table[1:]]


def test_markdown_shows_names_as_spelled_and_keeps_its_tables():
    markdown = render_markdown(hostile_report(), "r.eps_sweep.png", "r.pictures.png")
    page = markdown_page(markdown)
    assert (
        all(len(set(rows)) == 1 for rows in cells_per_row(markdown)) and len(cells_per_row(markdown)) == 6
    )  # no pipe split a row
    assert per_class_cells(page) == [f"{i} {name}" for i, name in enumerate(SHOWN)]
    assert "script" not in page.tags and "b" not in page.tags and "del" not in page.tags
    text = "".join(page.text)
    assert "class **x** | <b>" in text and "photos/*x*|y" in text and "old | `base`.json" in text
    assert all(f"photos/{name}/1.png" in text for name in SHOWN[:2])
    assert markdown.count("$") == markdown.count("\\$")  # GitHub would start math at an unescaped $


def test_html_shows_names_as_spelled_and_injects_no_tags():
    report = hostile_report()
    document = render_html(report, {"pictures": grid_png(report.pictures)})
    page = Page(document)
    assert set(page.tags) <= {
        "html",
        "head",
        "meta",
        "div",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "h3",
        "p",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "strong",
        "code",
        "figure",
        "img",
        "wbr",
    }
    assert all(len(row) == len(table[0]) for table in page.tables for row in table)
    assert per_class_cells(page) == [f"{i} {name}" for i, name in enumerate(SHOWN)]
    assert "class **x** | <b>" in "".join(page.text)


def test_junit_parses_and_names_the_checks_as_spelled():
    suite = ET.fromstring(render_junit(hostile_report()))
    messages = [
        case.find("failure").get("message") for case in suite.iter("testcase") if case.get("name").startswith("check.")
    ]
    assert messages == [f"class {name} is odd" for name in SHOWN]


def test_console_table_prints_markup_in_names_literally():
    console = Console(record=True, width=250, color_system=None)
    console.print(render_table(hostile_report()))
    text = console.export_text()
    assert "after [bold]pgd" in text and "a $\\frac$ b [bold]red[/bold] [/x]" in text


def test_pictures_and_plot_draw_names_with_math_and_markup():
    pytest.importorskip("matplotlib")
    report = hostile_report()
    assert grid_png(hostile_gallery()).startswith(PNG)  # titles "true: a $\frac$ b": no mathtext error
    assert plot_png(report).startswith(PNG)  # the title names the architecture


def test_every_output_is_written_for_hostile_names(tmp_path):
    pytest.importorskip("matplotlib")
    paths = {
        "json_path": tmp_path / "r.json",
        "markdown_path": tmp_path / "r.md",
        "junit_path": tmp_path / "r.xml",
        "html_path": tmp_path / "r.html",
    }
    assert write_report_files(hostile_report(), **paths) == []
    assert {p.name for p in tmp_path.iterdir()} == {
        "r.json",
        "r.md",
        "r.xml",
        "r.html",
        "r.pictures.png",
        "r.eps_sweep.png",
    }
    assert [c["name"] for c in json.loads(paths["json_path"].read_text())["per_class"].values()] == NAMES
    assert per_class_cells(markdown_page(paths["markdown_path"].read_text())) == [
        f"{i} {name}" for i, name in enumerate(SHOWN)
    ]
