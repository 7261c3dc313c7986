"""The demo report: a page describing the lab the demo wrote, read back from disk.

Uses the session's demo run (``demo_run`` in tests/conftest.py). The page must name
that lab's own content ids and notes, read as a report (no notebook scaffolding), hold
no absolute paths, and be byte-for-byte reproducible from the lab alone, wherever the
lab directory sits.
"""

from __future__ import annotations

import html as std_html
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from oluo_lab import datasets
from oluo_lab.notebook import engine_recall
from oluo_lab.report import (
    HTML_NAME,
    PNG_NAME,
    ReportError,
    execute_notebook,
    report_html,
    write_report,
)
from oluo_lab.snapshot import Lab

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def page(demo_run) -> str:
    return (demo_run.report / HTML_NAME).read_text(encoding="utf-8")


def _text(page: str) -> str:
    """The page's text: tags dropped, entities decoded, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    return re.sub(r"\s+", " ", std_html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_report_files(demo_run):
    assert sorted(p.name for p in demo_run.report.iterdir()) == [HTML_NAME, PNG_NAME]
    assert f"report: {demo_run.report / HTML_NAME}" in demo_run.text


def test_report_describes_the_lab_the_demo_wrote(demo_run, page):
    lab = Lab(demo_run.lab)
    head = lab.head()
    text = _text(page)
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert f"<title>oluo-lab demo: {demo_run.lab.name}</title>" in page
    assert head.cid.hex in page  # the head manifest, in full
    for snap in lab.history():  # every generation's manifest id and note (the log)
        assert snap.cid.short in page and snap.note in text
    diff = lab.diff(1, 2, semantic=False)
    assert ", ".join(map(str, diff.ids_added[:10])) in text
    assert "verify: clean" in text and "identical answers" in text
    assert "prince (0.176)" in text and "queen (0.216)" in text  # king's neighbours
    assert f'<img src="{PNG_NAME}"' in page


def test_report_recall_matches_the_generations(demo_run, page):
    """recall@10 against the ground truth, per generation, as a fresh checkout measures it
    (generation 1 is the engine the demo measured and printed)."""
    lab = Lab(demo_run.lab)
    data = datasets.glove_sample()
    printed = demo_run.text.split("(id intersection): ")[1].split()[0]
    rows = re.findall(r"<tr><td>(\d+)</td><td>20,000</td><td>([\d.]+)</td><td>([\d.]+)</td>", page)
    assert [r[0] for r in rows] == ["2", "1"]
    by_gen = {int(g): (own, truth) for g, own, truth in rows}
    assert by_gen[1][1] == printed
    for gen, (own, truth) in by_gen.items():
        engine = lab.checkout(gen, progress=False)
        assert truth == f"{engine_recall(engine, data, k=10):.4f}"
        assert 0.95 <= float(own) <= 1.0


def test_report_reads_as_a_report(page):
    text = _text(page)
    for heading in ("The data", "Generations", "The head", "Nearest words", "Verify"):
        assert f"<h2>{heading}</h2>" in page
    assert "<h2>Speed (timings: they vary from run to run)</h2>" in page
    for scaffolding in ("NBVAL", "rmtree", "_lab_01", "In [", "Out[", "Traceback", "it/s]"):
        assert scaffolding not in text
    assert "widget" not in page.lower()


def test_report_holds_no_absolute_paths(demo_run, page):
    for path in {str(ROOT), str(demo_run.lab), str(demo_run.lab.parent), str(Path.home())}:
        assert path not in page, f"{path} leaked into the report"
    assert "/tmp/" not in page and "file:" not in page


def test_report_is_reproducible_from_the_lab_wherever_it_sits(demo_run, page, tmp_path):
    """The page (all but the PNG it links) is a function of the lab's content and
    directory name: a copy elsewhere gives the same bytes."""
    moved = tmp_path / "elsewhere" / demo_run.lab.name
    shutil.copytree(demo_run.lab, moved, ignore=shutil.ignore_patterns("report"))
    again = report_html(moved, datasets.glove_sample(), restored_identical=True)
    assert again == page


def test_png_is_a_plot(demo_run):
    import matplotlib.image as mpimg

    png = demo_run.report / PNG_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w >= 500 and h >= 300
    # not a blank canvas: a plot has many distinct colours
    assert len({tuple(px) for px in img.reshape(-1, img.shape[2])[::97].tolist()}) > 10


def test_empty_or_missing_lab_is_named_and_nothing_written(tmp_path):
    empty = tmp_path / "empty-lab"
    Lab(empty)
    with pytest.raises(ReportError, match="empty-lab holds no generation"):
        write_report(empty, plot=False)
    assert sorted(p.name for p in empty.iterdir()) == ["cas"]
    with pytest.raises(ReportError, match="no-such-lab"):
        write_report(tmp_path / "no-such-lab", plot=False)
    assert not (tmp_path / "no-such-lab").exists()


def test_failing_notebook_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('boom in the notebook')"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(ReportError, match=r"broken\.ipynb.*boom in the notebook"):
        execute_notebook(path, tmp_path)


def test_nearest_words_caption_names_the_score_the_engine_returns(tmp_path):
    """An ip engine's scores are negated inner products (lower is closer), as its
    SearchResults says; the report's caption names them so."""
    import numpy as np

    from oluo_lab.engine import OluoEngine

    rng = np.random.default_rng(7)
    base = rng.standard_normal((60, 8)).astype(np.float32)
    words = [f"w{i}" for i in range(60)]
    data = datasets.from_arrays(base, base[:5] + 0.01, "ip", k=10, name="tiny", base_words=words)
    engine = OluoEngine(8, "ip")
    engine.add(base, ids=words)
    lab = Lab(tmp_path / "ip-lab")
    lab.commit(engine, note="ip")
    text = _text(report_html(lab, data, probes=("w0", "w1"), plot_name=None))
    name = engine.search(base[:1], k=1).score_name.replace("_", " ")
    assert f"nearest other words ({name}, lower is closer)" in text
    assert "higher is closer" not in text


def test_nearest_words_of_a_dataset_without_words_is_empty():
    """Probes not in the data are left out, also when the data names no words at all."""
    import numpy as np

    from oluo_lab.engine import OluoEngine
    from oluo_lab.report import nearest_words

    base = np.random.default_rng(9).standard_normal((30, 4)).astype(np.float32)
    data = datasets.from_arrays(base, base[:3], "l2", k=5)
    engine = OluoEngine(4, "l2")
    engine.add(base)
    assert nearest_words(engine, data, ("king",)).empty


def test_speed_plot_measures_the_head_engine_on_the_given_data(tmp_path, monkeypatch):
    """The page says the plot sweeps an engine built with the head's parameters over the
    same words: the sweep gets the head's M, ef_construction and metric and the data."""
    import numpy as np

    from oluo_lab import bench
    from oluo_lab.engine import OluoEngine

    swept = []
    real_sweep = bench.sweep

    def recording_sweep(dataset, **kw):
        swept.append((dataset, kw))
        return real_sweep(dataset, **kw)

    monkeypatch.setattr(bench, "sweep", recording_sweep)
    rng = np.random.default_rng(8)
    base = rng.standard_normal((300, 8)).astype(np.float32)
    data = datasets.from_arrays(base, rng.standard_normal((20, 8)), "l2", k=10, name="small")
    engine = OluoEngine(8, "l2", M=8, ef_construction=24)
    engine.add(base)
    lab = Lab(tmp_path / "small-lab")
    lab.commit(engine)
    html_path, png_path = write_report(lab, tmp_path / "out", data=data, probes=())
    [(dataset, kw)] = swept
    assert dataset is data
    assert (kw["M"], kw["ef_construction"], kw["metric"]) == ([8], [24], "l2")
    assert "M 8, ef_construction 24" in _text(html_path.read_text(encoding="utf-8"))
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recall_against_exact_search_of_a_generation_smaller_than_k(tmp_path):
    """A generation of 5 entries that returns all 5 for every query misses nothing: its
    recall@10 against its own exact search is 1, as Lab.diff counts it (not 5/10)."""
    import numpy as np

    from oluo_lab.engine import OluoEngine

    rng = np.random.default_rng(10)
    base = rng.standard_normal((60, 8)).astype(np.float32)
    words = [f"w{i}" for i in range(60)]
    data = datasets.from_arrays(base, base[:4] + 0.01, "l2", k=10, name="tiny", base_words=words)
    engine = OluoEngine(8, "l2")
    engine.add(base[:5], ids=words[:5])
    lab = Lab(tmp_path / "five")
    lab.commit(engine, note="five")
    page = report_html(lab, data, probes=(), plot_name=None)
    [(own, _truth)] = re.findall(
        r"<tr><td>1</td><td>5</td><td>([\d.]+)</td><td>([\d.]+)</td>", page
    )
    assert own == "1.0000"
    assert "1.0000 (4 held-out queries, against exact search)" in _text(page)
