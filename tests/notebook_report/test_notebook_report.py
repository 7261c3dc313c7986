"""The demo report: executes the committed quickstart notebook and writes HTML + PNG.

One real run (the quickstart end to end plus a four-point sweep); its page must show
the same deterministic results as the committed notebook, hold no absolute paths,
and the PNG must be a real image. Failures name the notebook.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from oluo_lab.report import ReportError, default_notebook, write_report

ROOT = Path(__file__).resolve().parents[2]


def _committed_output(notebook: Path, cell_start: str) -> str:
    """The stored stdout of the first code cell whose source starts with ``cell_start``."""
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(cell_start):
            return "".join(o.text for o in cell.outputs if o.output_type == "stream")
    raise AssertionError(f"no cell starting with {cell_start!r} in {notebook.name}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    html, png = write_report(out)
    return out, html, png


def test_default_notebook_is_the_checkouts_quickstart():
    assert default_notebook() == ROOT / "notebooks" / "01_quickstart.ipynb"
    assert default_notebook().is_file()


def test_report_files_and_locations(report):
    out, html, png = report
    assert html == out / "quickstart.html" and png == out / "recall_qps.png"
    assert sorted(p.name for p in out.iterdir()) == ["quickstart.html", "recall_qps.png"]


def test_html_shows_the_executed_quickstart(report):
    _, html, _ = report
    page = html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "01 · Quickstart" in page
    # deterministic results of a fresh execution equal the committed notebook's
    nb = default_notebook()
    cid_line = _committed_output(nb, "print(gen1.cid)").strip()
    assert len(cid_line) == 80 and cid_line in page
    recall_line = _committed_output(nb, "from oluo_lab.notebook import engine_recall").strip()
    assert recall_line.startswith("recall@10 = ") and recall_line in page
    # the search explorer shows its static view (a live widget cannot render on a page)
    assert "Static view: the interactive controls need a live Jupyter kernel." in page
    assert "application/vnd.jupyter.widget-view+json" not in page
    # every code cell ran: no error outputs, no progress bars
    assert "Traceback" not in page and "it/s]" not in page and "B/s]" not in page


def test_html_holds_no_absolute_paths(report):
    out, html, _ = report
    page = html.read_text(encoding="utf-8")
    for path in {str(ROOT), str(out), str(out.parent), str(Path.home()), "/tmp/"}:
        assert path not in page, f"{path} leaked into the report"


def test_png_is_a_plot(report):
    _, _, png = report
    import matplotlib.image as mpimg

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w >= 500 and h >= 300
    # not a blank canvas: a plot has many distinct colours
    assert len({tuple(px) for px in img.reshape(-1, img.shape[2])[::97].tolist()}) > 10


def test_missing_notebook_is_named(tmp_path):
    missing = tmp_path / "nope.ipynb"
    with pytest.raises(ReportError, match="nope.ipynb"):
        write_report(tmp_path / "out", notebook=missing)
    assert not (tmp_path / "out").exists()


def test_failing_notebook_is_reported_and_writes_nothing(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('boom in the report')"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb))
    out = tmp_path / "out"
    with pytest.raises(ReportError, match=r"broken\.ipynb.*boom in the report"):
        write_report(out, notebook=path)
    assert not (out / "quickstart.html").exists() and not (out / "recall_qps.png").exists()
