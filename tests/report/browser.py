"""Open a page in a real headless Chromium (Debian's, driven by Playwright) and report what a person would see."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class PageView:
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # src prefix, complete, naturalWidth, naturalHeight
    tables: list[list[list[str]]] = field(default_factory=list)  # table -> row -> cell text
    overflows: bool = False  # wider than the viewport (a narrow screen must not scroll sideways)
    text: str = ""


def chromium() -> str:
    path = os.environ.get("HARDENCTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: install Debian's `chromium` package (.ci/run does) or set HARDENCTL_CHROMIUM")
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    return path


def view(page_path: Path, screenshot: Path | None = None, width: int = 1100, media: str = "screen",
         phone: bool = False) -> PageView:
    """Load ``page_path`` (file://, offline: any request to the network is recorded as a failure) and read it back.
    ``phone``: a mobile browser, which lays a page out 980 px wide unless the page declares a viewport."""
    from playwright.sync_api import sync_playwright

    result = PageView()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, is_mobile=phone, has_touch=phone)
            page.on("console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: result.console_errors.append(str(e)))
            page.on("request", lambda r: result.failed_requests.append(r.url)
                    if not r.url.startswith(("file:", "data:")) else None)
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
            result.overflows = page.evaluate(f"window.innerWidth > {width} || document.documentElement.scrollWidth > window.innerWidth + 1")
            result.text = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return result
