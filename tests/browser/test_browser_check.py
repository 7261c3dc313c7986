"""The demo report and every notebook, rendered in headless Chromium, read well.

Each page is laid out in a real browser window and measured (``page_check.js``): no
element wider than the page or cut off by a box that hides overflow (a table may
scroll sideways inside its own box), no markup shown as text, no live-widget
placeholder without its static view, every image loaded. Notebooks are exported as
they are committed (nbconvert's lab template, outputs as stored).

Set ``OLUO_LAB_SCREENSHOTS=<dir>`` to also save a full-page screenshot of each page.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from page_check import check_page, find_chromium, screenshot

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROBLEMS = ("too_wide", "cut", "raw_markup", "widget_placeholders", "broken_images")

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found: install the Debian package `chromium` "
    "(.ci/run does so with apt-get when it can) or set OLUO_LAB_CHROMIUM",
)


def _problems(findings: dict) -> dict:
    return {k: findings[k] for k in PROBLEMS if findings[k]}


def _maybe_screenshot(html: Path, findings: dict, width: int, name: str) -> None:
    shots = os.environ.get("OLUO_LAB_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        height = min(int(findings["scroll_height"]), 16000)
        screenshot(CHROMIUM, html, Path(shots) / f"{name}-{width}.png", width, height)


BAD_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<p id="escaped">&amp;lt;table&amp;gt; shown as text</p>
<table id="wide"><tr><td style="min-width: 3000px">a table wider than the page</td></tr></table>
<div id="clipper" style="width: 300px; overflow: hidden"><div id="cut-child"
  style="width: 900px">cut off by its box</div></div>
<div id="scroller" style="width: 300px; overflow-x: auto"><div style="width: 900px">scrolls
  in its box</div></div>
<div class="jp-OutputArea-output" id="widget-only"><script
  type="application/vnd.jupyter.widget-view+json">{"model_id": "x"}</script></div>
<div class="jp-OutputArea-output" id="widget-with-view"><script
  type="application/vnd.jupyter.widget-view+json">{"model_id": "y"}</script>
  <table><tr><td>its static view</td></tr></table></div>
<img id="missing" src="no-such-image.png" alt="missing">
</body></html>
"""


def test_the_check_catches_each_problem(tmp_path):
    """The checker is not blind: a page with one of each problem trips each finding,
    naming the element; the scrolling box is reported as such, not as a problem."""
    page = tmp_path / "bad.html"
    page.write_text(BAD_PAGE, encoding="utf-8")
    found = check_page(CHROMIUM, page, width=1000)
    assert any("p#escaped" in f and "&lt;" in f for f in found["raw_markup"])
    assert any(f.startswith("table#wide") for f in found["too_wide"])
    assert found["scroll_width"] > found["page_width"]
    assert [f for f in found["cut"] if f.startswith("div#cut-child")]
    assert any(f.startswith("div#scroller") for f in found["scrolls"])
    assert not any("scrolls in its box" in f for f in found["too_wide"] + found["cut"])
    assert len(found["widget_placeholders"]) == 1
    assert "widget-only" in found["widget_placeholders"][0]
    assert found["images"] == 1 and "img#missing" in found["broken_images"][0]
    assert not (page.parent / ".bad.page-check.html").exists()


@pytest.mark.parametrize("width", [1280, 800])
def test_demo_report_renders_cleanly(demo_run, width):
    html = demo_run.report / "index.html"
    found = check_page(CHROMIUM, html, width=width)
    _maybe_screenshot(html, found, width, "demo-report")
    assert _problems(found) == {}
    assert found["scroll_width"] <= found["page_width"]
    assert found["images"] == 1  # the recall/QPS plot, loaded


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_renders_cleanly(notebook, tmp_path):
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    html = tmp_path / f"{notebook.stem}.html"
    html.write_text(body, encoding="utf-8")
    found = check_page(CHROMIUM, html, width=1280)
    _maybe_screenshot(html, found, 1280, notebook.stem)
    assert _problems(found) == {}, f"{notebook.name}: {_problems(found)}"
    assert found["scroll_width"] <= found["page_width"]
    pngs = sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )
    assert found["images"] == pngs  # every stored plot is on the page, loaded
