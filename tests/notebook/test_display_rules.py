"""What a user reads: long values shortened alike in HTML and DataFrames, an empty lab
in one line, every size in one format, scores named by what they measure, and one
name (``ef_search``) for the search beam width."""

from __future__ import annotations

import re

import nb_helpers as h
import numpy as np
import pandas as pd
import pytest

import oluo_lab as ol
from oluo_lab._html import CELL_CHARS, byte_unit, fmt_bytes, shorten, shortened_cell
from oluo_lab.engine.results import SCORE_NAMES

LONG = "the quick brown fox jumps over the lazy dog " * 3  # 132 characters


# ------------------------------------------------------------------ shortening


def test_shorten_is_pandas_max_colwidth_rule():
    assert CELL_CHARS == pd.get_option("display.max_colwidth") == 50
    assert shorten("x" * 49) == "x" * 49
    assert shorten("x" * 50) == "x" * 46 + "..."
    assert len(shorten(LONG)) == 49 and shorten(LONG, None) == LONG
    for n in (48, 49, 50, 51, 120):  # the very text pandas shows for the same value
        html = pd.DataFrame({"v": ["y" * n]})._repr_html_()
        assert f"<td>{shorten('y' * n)}</td>" in html
    cell = shortened_cell(LONG)
    assert cell == f'<span title="{LONG}">{LONG[:46]}...</span>'
    assert shortened_cell("short") == "short" and shortened_cell(7) == 7


def _engine_with_long_metadata():
    eng = ol.OluoEngine(16, "cosine")
    x = h.vectors(20)
    meta = [{"note": LONG if i == 0 else f"n{i}", "word": f"w{i}"} for i in range(20)]
    eng.add(x, ids=[f"w{i}" for i in range(20)], metadata=meta)
    return eng, x


def test_search_results_html_shortens_long_values_as_to_frame_displays_them():
    eng, x = _engine_with_long_metadata()
    res = eng.search(x[:1], k=3)
    html = res._repr_html_()
    cut = LONG[:46] + "..."
    assert f'<td><span title="{LONG}">{cut}</span></td>' in html
    assert f">{LONG}<" not in html  # never shown whole as cell text
    # the header is whole: every column named
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", html).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == [
        "query",
        "rank",
        "id",
        "cosine distance",
        "note",
        "word",
    ]
    frame = res.to_frame()
    assert frame.loc[0, "note"] == LONG  # the data keep the whole value
    assert f"<td>{cut}</td>" in frame._repr_html_()  # and pandas shows the same text
    with pd.option_context("display.max_colwidth", None):
        assert f"<td>{LONG}</td>" in res._repr_html_()  # one rule: pandas' option


# ------------------------------------------------------------------ empty lab


def test_empty_lab_displays_one_line(tmp_path):
    lab = ol.Lab(tmp_path / "fresh")
    assert repr(lab) == "Lab('fresh', empty)"
    html = lab._repr_html_()
    assert html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1
    assert "<table" not in html and "\n" not in html
    assert "empty" in html and "lab.commit(engine)" in html


# ------------------------------------------------------------------ sizes


def test_one_size_format():
    assert byte_unit(1023) == ("B", 1) and byte_unit(1024) == ("KiB", 1024)
    assert byte_unit(3 * 1024**2) == ("MiB", 1024**2)
    assert [fmt_bytes(n) for n in (0, 1023, 1024, 1536, 7_455_690)] == [
        "0 B",
        "1023 B",
        "1.00 KiB",
        "1.50 KiB",
        "7.11 MiB",
    ]


def _raw_sizes(text: str, sizes: list[int]) -> list[int]:
    """The sizes (>= 1 KiB) written as raw byte counts in ``text``."""
    return [n for n in sizes if n >= 1024 and re.search(rf"(?<![\d.]){n}(?![\d.])", text)]


def test_displays_write_sizes_with_fmt_bytes_and_frames_keep_exact_numbers(lab_and_engine):
    lab, eng = lab_and_engine
    head = lab.head()
    m = head.manifest
    sizes = [m.index_size, m.metadata_size]
    for text in (head._repr_html_(), m._repr_html_()):
        assert _raw_sizes(text, sizes) == []
        assert f"{fmt_bytes(m.index_size)}" in text  # the index's logical size, not its root's
    stats = lab.store.stats()
    for text in (repr(stats), stats._repr_html_()):
        assert _raw_sizes(text, [stats.logical_bytes, stats.stored_bytes]) == []
        assert fmt_bytes(stats.logical_bytes) in text
    diff = lab.diff(1, 3, semantic=False)
    byte_counts = [diff.bytes_shared, diff.bytes_added, diff.bytes_removed]
    for text in (repr(diff), diff._repr_html_(), str(diff.summary())):
        assert _raw_sizes(text, byte_counts) == [], text[:300]
    verify = lab.verify(progress=False)
    assert _raw_sizes(verify._repr_html_(), [verify.bytes_checked]) == []
    gc = lab.gc(dry_run=True, grace_s=0, keep_last=1, progress=False)
    assert gc.deleted_bytes >= 1024
    assert _raw_sizes(repr(gc), [gc.deleted_bytes]) == [] and fmt_bytes(gc.deleted_bytes) in repr(
        gc
    )
    snap = eng.current_snapshot()
    assert _raw_sizes(repr(snap), [len(snap.index_bytes), len(snap.metadata_bytes)]) == []
    # the frames keep exact byte counts
    log = lab.log()
    assert log["bytes"].dtype.kind == "i" and int(log["bytes"].iloc[0]) >= 1024
    assert gc.to_frame()["bytes"].dtype.kind == "i"


def test_cid_repr_shows_short_id_not_node_size(lab_and_engine):
    lab, _ = lab_and_engine
    m = lab.head().manifest
    assert repr(m.index_cid) == f"CID('{m.index_cid.short}…', book)"
    lab.tag("v1", 2, force=True)
    shown = repr(lab.tags())
    assert f"'v1': CID('{lab.resolve(2).cid.short}…', book)" in shown
    assert not re.search(r"\d B", shown)
    lab.untag("v1")


# ------------------------------------------------------------------ scores


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip", "hamming"])
def test_score_is_named_by_metric_in_frame_and_html(metric):
    dim = 64 if metric == "hamming" else 16
    rng = np.random.default_rng(5)
    if metric == "hamming":
        x = rng.integers(0, 256, (30, dim // 8), dtype=np.uint8)
    else:
        x = rng.standard_normal((30, dim)).astype(np.float32)
    eng = ol.OluoEngine(dim, metric)
    eng.add(x)
    res = eng.search(x[:2], k=4)
    name = SCORE_NAMES[metric]
    assert res.metric == metric and res.score_name == name
    frame = res.to_frame()
    assert name in frame.columns and "score" not in frame.columns
    np.testing.assert_array_equal(frame[name].to_numpy(), res.scores.ravel())
    html = res._repr_html_()
    assert f"<th>{name.replace('_', ' ')}</th>" in html
    assert f"{name.replace('_', ' ')}: lower is closer" in html
    assert f"score={name}" in repr(res)
    # every score is a distance: ascending in each row
    assert (np.diff(res.scores, axis=1) >= 0).all()
    if metric == "ip":  # the negated inner product
        np.testing.assert_allclose(res.scores[0], -(x[res.keys[0]] @ x[0]), rtol=1e-5)
    # pickling keeps what the scores are
    import pickle

    assert pickle.loads(pickle.dumps(res)).score_name == name


def test_score_names_cover_every_metric():
    from oluo_lab.engine.index import METRICS

    assert set(SCORE_NAMES) == set(METRICS)


# ------------------------------------------------------------------ ef_search


def test_search_takes_ef_search_and_its_short_spelling_ef():
    eng = h.make_engine(200)
    q = h.vectors(5, seed=9)
    a = eng.search(q, k=10, ef_search=12)
    b = eng.search(q, k=10, ef=12)
    assert a.keys.tolist() == b.keys.tolist() and np.array_equal(a.scores, b.scores)
    with pytest.raises(TypeError, match="ef_search or ef, not both"):
        eng.search(q, k=10, ef=12, ef_search=12)
    # the beam width reaches the index, on the batch and the single-query path alike
    index = eng._index
    seen = []
    for name in ("search", "search_one"):
        real = getattr(index, name)
        setattr(index, name, lambda *a, _real=real, **kw: seen.append(a[2]) or _real(*a, **kw))
    eng.search(q, k=10, ef_search=37)
    eng.search(q[0], k=10, ef_search=41)
    eng.search(q, k=10)
    assert seen[0] == 37 and set(seen[1:-1]) == {41} and seen[-1] == eng.config.ef_search


def test_ef_search_is_the_one_name_in_frames_widgets_and_messages(dataset):
    from oluo_lab.bench import COLUMNS
    from oluo_lab.notebook import SearchExplorer
    from oluo_lab.testing import assert_recall

    assert "ef_search" in COLUMNS and not {"ef", "efSearch"} & set(COLUMNS)
    eng = h.make_engine(400)
    explorer = SearchExplorer(eng, dataset, query="w3", ef_search=20)
    assert explorer.ef_search.description == "ef_search" and explorer.ef_search.value == 20
    assert "<th>ef_search</th><td>20</td>" in explorer.last_html
    assert not hasattr(explorer, "ef")
    html = eng._repr_html_()
    assert "<th>M / ef_construction / ef_search</th>" in html and "efSearch" not in html
    with pytest.raises(AssertionError, match=r"ef_search=7\)"):
        assert_recall(eng, dataset, at_least=0.9, k=10, ids=lambda _id: 0, ef_search=7)
