"""Each explorer builds without a browser and re-renders when a control's value changes."""

from __future__ import annotations

import nb_helpers as h
import pytest

from oluo_lab.notebook import BenchExplorer, SearchExplorer, SnapshotBrowser, pareto_frontier


def test_snapshot_browser_reacts_to_the_selected_commit(lab_and_engine):
    lab, _ = lab_and_engine
    b = SnapshotBrowser(lab)
    assert b.selector.value == 3 and [v for _, v in b.selector.options] == [1, 2, 3]
    head_html = b.view.value
    assert head_html == b.last_html and "Snapshot #3 (commit " in head_html
    assert "diff to parent (#2)" in head_html
    b.selector.value = 1
    assert b.view.value != head_html and b.view.value == b.last_html
    assert "Snapshot #1 (commit " in b.last_html
    assert "No parent commit" in b.last_html
    b.selector.value = 2
    assert "diff to parent (#1)" in b.last_html
    # the static fallback is the page of the selected generation
    assert b._repr_html_().startswith(b.page(2))
    bundle = b._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "text/html" in bundle


def test_snapshot_browser_growth_chart_outlines_the_selection(lab_and_engine):
    lab, _ = lab_and_engine
    b = SnapshotBrowser(lab)
    chart = b.last_html.split("storage growth")[1]
    assert chart.count("<g>") == 3 and chart.count('stroke="#000000"') == 2  # two rects


def test_search_explorer_reacts_to_query_k_and_ef_search(lab_and_engine, dataset):
    _, eng = lab_and_engine
    s = SearchExplorer(eng, dataset, k=5)
    assert s.results is None and "Type a query" in s.last_html
    s.query.value = "w42"
    first = s.last_html
    assert s.results.ids.shape == (1, 5) and s.results.ids[0, 0] == "w42"
    assert "w42" in first and s.view.value == first
    exact = eng.search(dataset.base[42], k=5, exact=True)
    assert s.results.ids[0].tolist() == exact.ids[0].tolist()
    s.k.value = 8
    assert s.results.ids.shape == (1, 8) and s.last_html != first
    s.ef_search.value = 4
    assert "<th>ef_search</th><td>4</td>" in s.last_html
    s.query.value = "no-such-word"
    assert s.results is None and "Unknown query" in s.last_html


def test_search_explorer_finds_engine_ids_and_lookup():
    eng = h.make_engine(50)
    s = SearchExplorer(eng, query="w3")  # no dataset: the engine's own vector of w3
    assert s.results.ids[0, 0] == "w3"
    vec = h.vectors()[7]
    s2 = SearchExplorer(eng, lookup={"seven": vec}, query="seven")
    assert s2.results.ids[0, 0] == "w7"


def test_bench_explorer_reacts_to_filters():
    df = h.bench_frame()
    b = BenchExplorer(df)
    assert set(b.filters) == {"library", "M"}  # the only columns with several values
    png, html = b.image.value, b.last_html
    assert png[:4] == b"\x89PNG" and len(b.selected) == 20
    b.filters["library"].value = ("peer",)
    assert len(b.selected) == 10 and set(b.selected["library"]) == {"peer"}
    assert b.image.value != png and b.last_html != html and "oluo" not in b.last_html
    front = pareto_frontier(b.selected)
    assert "Pareto frontier" in b.last_html and len(front) >= 2
    b.filters["library"].value = ()
    assert len(b.selected) == 0 and "No rows selected" in b.last_html
    b.filters["library"].value = ("oluo", "peer")
    b.by.value = "M"
    assert "<th>M</th><th>rows</th>" in b.last_html


def test_bench_explorer_accepts_an_object_with_frame_and_checks_columns():
    class Results:
        frame = h.bench_frame()

    assert len(BenchExplorer(Results()).frame) == 20
    with pytest.raises(ValueError, match="qps"):
        BenchExplorer(h.bench_frame().drop(columns=["qps"]))
    with pytest.raises(TypeError, match="DataFrame"):
        BenchExplorer([1, 2, 3])
