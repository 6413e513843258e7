"""Pictures of pages: a local HTML file (a figure, a run's report, the widget's page) rendered in a real,
headless Chromium and saved as PNG, for the README's images and for looking at what was built.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``make test``) driven by Playwright, with the
flags that keep it off the network (the project's field notes); nothing is downloaded.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "figure_page", "screenshot"]

CHROMIUM = os.environ.get("STEERLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
"""Without the background-networking flags Chromium keeps trying to reach the network (the field notes)."""


def figure_page(fig: Any, path: str | Path, *, width: int = 1024) -> Path:
    """A standalone page of one plotly figure at ``width`` px, its caption under it, plotly.js inlined
    (the page opens offline). Returns ``path``.

    Example:
        >>> figure_page(fig, "/tmp/answer.html")
    """
    import plotly.io as pio

    from .style import caption_of

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = pio.to_html(fig, include_plotlyjs=True, full_html=False, default_width=f"{width - 32}px",
                       config={"displayModeBar": False, "staticPlot": True})
    caption = caption_of(fig)
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>figure</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:" + str(width - 32)
            + "px}</style></head><body>" + body
            + (f"<p style='font-size:13px;color:#444'>{html.escape(caption)}</p>" if caption else "")
            + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def screenshot(page: str | Path, png: str | Path, *, width: int = 1024, height: int = 768, full_page: bool = False,
               wait_for: str | None = None, clip: Mapping[str, float] | None = None,
               scroll_to: str | None = None) -> Path:
    """Render ``page`` (a local HTML file) in headless Chromium at ``width`` x ``height`` and save a PNG.

    Args:
        full_page: the whole page, not only the first screen.
        wait_for: a CSS selector to wait for before the picture (a plotly figure: ``".plot-container"``).
        clip: a region of the page to keep instead (``x``, ``y``, ``width``, ``height``).
        scroll_to: a CSS selector scrolled into view first.

    Raises:
        FileNotFoundError: no Chromium at :data:`CHROMIUM` (``apt-get install chromium``).

    Example:
        >>> screenshot("runs/latest/index.html", "docs/images/report_1024.png")
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium; "
                                "`make test` does) or set STEERLAB_CHROMIUM")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            view = browser.new_page(viewport={"width": width, "height": height})
            view.goto(Path(page).resolve().as_uri())
            if wait_for:
                view.wait_for_selector(wait_for, timeout=30_000)
            if scroll_to:
                view.locator(scroll_to).first.scroll_into_view_if_needed()
            view.wait_for_timeout(300)
            kwargs: dict[str, Any] = {"path": str(png), "full_page": full_page}
            if clip is not None:
                kwargs["clip"] = dict(clip)
            view.screenshot(**kwargs)
        finally:
            browser.close()
    return png
