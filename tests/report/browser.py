"""Open a page in a real headless Chromium (Debian's, driven by Playwright) and report what a person would see.

Without Chromium or Playwright the browser tests skip, saying how to install them; with ``HARDENCTL_REQUIRE_TOOLS=1``
(CI sets it) they fail instead, so a CI image that lost a tool cannot pass by skipping."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = (390, 844)  # CSS pixels of a common phone held upright
DESKTOP = (1280, 800)

# What the page says about itself, measured where it is laid out. A cell "is a number" by what it shows (digits and
# number punctuation, optionally " pts"), not by any class the renderer set, so a column the renderer forgot counts.
MEASURE = """() => {
  const lines = el => {  // line boxes the element's content occupies: distinct tops of its client rects
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = [];
    for (const r of range.getClientRects()) {
      if (r.width >= 1 && r.height >= 1 && !tops.some(t => Math.abs(t - r.top) < r.height / 2)) tops.push(r.top);
    }
    return tops.length;
  };
  const number = /^[+\\-\u2212]?[\\d.,%\u2013\\/()\\[\\] ]*\\d[\\d.,%\u2013\\/()\\[\\] ]*( pts)?$/;
  const numeric = Array.from(document.querySelectorAll('td')).filter(c => number.test(c.innerText.trim()))
    .map(c => ({text: c.innerText.trim(), lines: lines(c)}));
  const words = Array.from(document.querySelectorAll('code')).filter(c => /^\\S{1,24}$/.test(c.textContent))
    .map(c => ({text: c.textContent, lines: lines(c)}));
  const verdict = document.querySelector('.verdict');
  const box = verdict && verdict.getBoundingClientRect();
  const tables = Array.from(document.querySelectorAll('table')).map(t => {
    const holder = t.parentElement, style = getComputedStyle(holder), rect = holder.getBoundingClientRect();
    const before = (holder === document.body ? t : holder).previousElementSibling;
    return {heading: before && /^H[2-6]$/.test(before.tagName) ? before.innerText.trim() : null,
            scrolls: ['auto', 'scroll'].includes(style.overflowX),
            overflows: holder.scrollWidth > holder.clientWidth + 1,
            x: rect.left + window.scrollX, y: rect.top + window.scrollY, width: rect.width, height: rect.height};
  });
  return {numeric, words, tables, verdict: box && {top: box.top, bottom: box.bottom, text: verdict.innerText}};
}"""


@dataclass
class PageView:
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # src prefix, complete, naturalWidth, naturalHeight
    tables: list[list[list[str]]] = field(default_factory=list)  # table -> row -> cell text
    overflows: bool = False  # wider than the viewport (a narrow screen must not scroll sideways)
    text: str = ""
    viewport: tuple[int, int] = (0, 0)
    numeric_cells: list[dict] = field(default_factory=list)  # {text, lines}: every table cell that shows a number
    code_words: list[dict] = field(default_factory=list)  # {text, lines}: every code element of one short word
    verdict: dict | None = None  # {top, bottom, text} of the verdict banner on the first screen, None without one
    # per table: heading (the h2-h6 right before it, else None), scrolls (its box scrolls sideways), overflows (it is
    # wider than its box), and the shadow at each edge of its box (0 none ... 255 black), with the table hidden so
    # only the box's own painting counts: shade_left/right at the start, end_left/right scrolled to the end
    table_boxes: list[dict] = field(default_factory=list)


def chromium() -> str:
    """Chromium's path; skips (or fails under ``HARDENCTL_REQUIRE_TOOLS=1``) when it or Playwright is missing."""
    missing = []
    path = os.environ.get("HARDENCTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None or not os.access(path, os.X_OK):
        missing.append(
            "Chromium (Debian: `apt-get install chromium`, as .ci/run does; or set HARDENCTL_CHROMIUM "
            f"to a Chromium binary{f', not {path}' if path else ''})"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright (`pip install -e '.[dev]'`; it drives the system Chromium, no browser download)")
    if missing:
        message = "the browser tests need " + " and ".join(missing)
        if os.environ.get("HARDENCTL_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message}; HARDENCTL_REQUIRE_TOOLS=1 makes that a failure, not a skip", pytrace=False)
        pytest.skip(message)
    return path


def shade(png: bytes, x: float, y: float, height: float) -> int:
    """How dark the darkest pixel of a 6 px strip from ``x`` down ``height`` px is: 0 white ... 255 black."""
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("L")
    box = (max(0, round(x)), max(0, round(y)), min(picture.width, round(x) + 6), min(picture.height, round(y + height)))
    return 255 - picture.crop(box).getextrema()[0] if box[2] > box[0] and box[3] > box[1] else 0


def _measure_shadows(page, boxes: list[dict]) -> None:
    """Each table box's edge shadows, at the start and scrolled to the end, with the tables hidden."""
    page.add_style_tag(content="table { visibility: hidden !important; }")
    for scrolled, (left, right) in ((False, ("shade_left", "shade_right")), (True, ("end_left", "end_right"))):
        if scrolled:
            page.evaluate("document.querySelectorAll('table').forEach(t => { t.parentElement.scrollLeft = 1e6; })")
        png = page.screenshot(full_page=True)
        for box in boxes:
            box[left] = shade(png, box["x"] + 1, box["y"], box["height"])
            box[right] = shade(png, box["x"] + box["width"] - 7, box["y"], box["height"])


def view(
    page_path: Path,
    screenshot: Path | None = None,
    width: int = 1100,
    media: str = "screen",
    phone: bool = False,
    height: int = 900,
) -> PageView:
    """Load ``page_path`` (file://, offline: any request to the network is recorded as a failure) and read it back.
    ``phone``: a mobile browser, which lays a page out 980 px wide unless the page declares a viewport."""
    from playwright.sync_api import sync_playwright

    result = PageView(viewport=(width, height))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone)
            page.on("console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: result.console_errors.append(str(e)))
            page.on(
                "request",
                lambda r: result.failed_requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None,
            )
            page.emulate_media(media=media)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            result.images = page.evaluate("""Array.from(document.images).map(i => ({src: i.src.slice(0, 30),
                complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))""")
            # decode() rejects for an image the browser cannot decode, even when complete is true
            undecodable = page.evaluate("""Promise.all(Array.from(document.images).map(i => i.decode().then(() => 0,
                () => 1))).then(r => r.reduce((a, b) => a + b, 0))""")
            if undecodable:
                result.console_errors.append(f"{undecodable} image(s) failed to decode")
            result.tables = page.evaluate("""Array.from(document.querySelectorAll('table')).map(t =>
                Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText.trim())))""")
            result.overflows = page.evaluate(
                f"window.innerWidth > {width} || document.documentElement.scrollWidth > window.innerWidth + 1"
            )
            result.text = page.inner_text("body")
            measured = page.evaluate(MEASURE)
            result.numeric_cells, result.code_words = measured["numeric"], measured["words"]
            result.verdict, result.table_boxes = measured["verdict"], measured["tables"]
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            _measure_shadows(page, result.table_boxes)
        finally:
            browser.close()
    return result
