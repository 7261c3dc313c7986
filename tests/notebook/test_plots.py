"""Plots draw the data they are given: frontier lines equal pareto_frontier(), storage
bars equal the lab log, drift equals the recall measured generation by generation."""

from __future__ import annotations

import nb_helpers as h
import numpy as np
import pandas as pd
import pytest

from oluo_lab.notebook import (
    pareto_frontier,
    plot_latency,
    plot_recall_drift,
    plot_recall_qps,
    plot_storage,
    recall_by_generation,
    storage_frame,
)
from oluo_lab.notebook.metrics import engine_recall


def _brute_pareto(df: pd.DataFrame) -> set[int]:
    keep = set()
    for i, r in df.iterrows():
        dominated = (
            (df["recall"] >= r["recall"])
            & (df["qps"] >= r["qps"])
            & ((df["recall"] > r["recall"]) | (df["qps"] > r["qps"]))
        )
        if not dominated.any():
            keep.add(i)
    return keep


def test_pareto_frontier_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        df = pd.DataFrame(
            {"recall": rng.integers(0, 8, 30) / 8, "qps": rng.integers(1, 10, 30) * 100.0}
        )
        front = pareto_frontier(df)
        assert set(front.index) <= _brute_pareto(df)
        # equal points are kept once; every undominated (recall, qps) value appears
        pairs = {tuple(x) for x in df.loc[list(_brute_pareto(df))][["recall", "qps"]].values}
        assert {tuple(x) for x in front[["recall", "qps"]].values} == pairs
        assert front["recall"].is_monotonic_increasing
        assert front["qps"].is_monotonic_decreasing


def _builds_of(df: pd.DataFrame):
    """(library, M) -> that build's rows in ef_search order (what one line must join)."""
    return {
        (lib, m): rows.sort_values("ef_search")
        for (lib, m), rows in df.groupby(["library", "M"], sort=True)
    }


def test_recall_qps_plot_draws_one_line_per_build_in_ef_search_order():
    df = h.bench_frame()
    fig, ax = plot_recall_qps(df)
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    builds = _builds_of(df)
    assert set(lines) == {f"{lib} M={m}" for lib, m in builds} | {
        "oluo Pareto front",
        "peer Pareto front",
    }
    for (lib, m), rows in builds.items():
        x, y = lines[f"{lib} M={m}"].get_data()  # never joins points of another M
        np.testing.assert_allclose(x, rows["recall"].to_numpy())
        np.testing.assert_allclose(y, rows["qps"].to_numpy())
    for lib in ("oluo", "peer"):
        front = pareto_frontier(df[df["library"] == lib])
        x, y = lines[f"{lib} Pareto front"].get_data()
        np.testing.assert_allclose(x, front["recall"].to_numpy())
        np.testing.assert_allclose(y, front["qps"].to_numpy())
    # the same M has the same marker in both libraries, different M different markers
    assert lines["oluo M=8"].get_marker() == lines["peer M=8"].get_marker()
    assert lines["oluo M=8"].get_marker() != lines["oluo M=16"].get_marker()
    assert lines["oluo M=8"].get_color() != lines["peer M=8"].get_color()
    # every point carries its ef_search (no two points of this frame coincide)
    labels = sorted((t.xy, t.get_text()) for t in ax.texts)
    expected = sorted(((float(r.recall), float(r.qps)), str(r.ef_search)) for r in df.itertuples())
    assert labels == expected
    assert ax.get_legend().get_title().get_text() == "numbers at points: ef_search"
    assert ax.get_xlabel().startswith("recall@10")
    assert "k=10" in ax.get_title() and "ef_construction=100" in ax.get_title()
    _, ax2 = plot_recall_qps(df[df["library"] == "oluo"], pareto=False, by=None)
    assert sorted(ln.get_label() for ln in ax2.get_lines()) == ["M=16", "M=8"]


def test_two_indexes_of_one_library_are_two_builds():
    """faiss's HNSWFlat and its brute-force Flat (library "faiss" both) with the same M
    are two lines, each joining only its own points, in both plots."""
    df = h.bench_frame()
    df = df[df["M"] == 8]
    flat = df[df["library"] == "peer"].assign(index="Flat", recall=1.0, qps=50.0)
    df = pd.concat([df, flat], ignore_index=True)
    _, ax = plot_recall_qps(df, pareto=False)
    lines = {ln.get_label(): ln.get_data() for ln in ax.get_lines()}
    assert set(lines) == {"oluo hnsw", "peer Flat", "peer hnsw"}
    for index in ("Flat", "hnsw"):
        rows = df[(df["library"] == "peer") & (df["index"] == index)].sort_values("ef_search")
        np.testing.assert_allclose(lines[f"peer {index}"][0], rows["recall"].to_numpy())
        np.testing.assert_allclose(lines[f"peer {index}"][1], rows["qps"].to_numpy())
    _, ax = plot_latency(df, percentiles=("p50_ms",))
    assert sorted(ln.get_label() for ln in ax.get_lines()) == [
        "oluo hnsw p50",
        "peer Flat p50",
        "peer hnsw p50",
    ]
    # grouped by index as well, the index is the group's name, not a build
    _, ax = plot_recall_qps(df, pareto=False, by=["library", "index"])
    assert sorted(ln.get_label() for ln in ax.get_lines()) == [
        "oluo hnsw",
        "peer Flat",
        "peer hnsw",
    ]


def test_recall_qps_labels_a_setting_measured_on_two_libraries_once():
    df = h.bench_frame()
    df = df[df["library"] == "oluo"]
    twin = df.assign(library="twin")  # same recall and QPS: the labels would overprint
    _, ax = plot_recall_qps(pd.concat([df, twin], ignore_index=True))
    assert len(ax.texts) == len(df)


def test_plot_title_names_the_dataset_of_bench_results():
    from oluo_lab.bench import BenchResults

    df = h.bench_frame().assign(index_bytes=0, memory_bytes=0, build_s=0.0, p95_ms=1.0)
    results = BenchResults(df, {"name": "tiny-set", "n": 1234, "n_queries": 56})
    _, ax = plot_recall_qps(results)
    assert ax.get_title().splitlines() == [
        "tiny-set: recall vs queries per second",
        "1,234 vectors, 56 queries, cosine, k=10, ef_construction=100",
    ]
    _, ax = plot_recall_qps(results, title="mine")
    assert ax.get_title() == "mine"


def test_plots_reuse_a_given_axes_and_accept_frame_objects():
    import matplotlib.pyplot as plt

    class Results:
        frame = h.bench_frame()

    fig, ax = plt.subplots()
    fig2, ax2 = plot_recall_qps(Results(), ax=ax)
    assert fig2 is fig and ax2 is ax
    with pytest.raises(ValueError, match="p99_ms"):
        plot_latency(h.bench_frame().drop(columns=["p99_ms"]))


def test_latency_plot_joins_each_builds_points_in_ef_search_order():
    df = h.bench_frame()
    fig, ax = plot_latency(df)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    builds = _builds_of(df)
    assert set(lines) == {f"{lib} M={m} {p}" for lib, m in builds for p in ("p50", "p95", "p99")}
    for (lib, m), rows in builds.items():
        for p, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            x, y = lines[f"{lib} M={m} {p}"].get_data()
            np.testing.assert_allclose(x, rows["recall"].to_numpy())
            np.testing.assert_allclose(y, rows[f"{p}_ms"].to_numpy())
            assert lines[f"{lib} M={m} {p}"].get_linestyle() == style
    # both legends (builds, percentiles) sit right of the axes: they cover no point
    legends = [a for a in ax.get_children() if type(a).__name__ == "Legend"]
    assert sorted(lg.get_title().get_text() for lg in legends) == ["build", "percentile"]
    fig.canvas.draw()
    right = ax.get_window_extent().x1
    assert all(lg.get_window_extent().x0 > right for lg in legends)
    # plain tick labels on the log axis: 0.05, not 5x10^-2
    assert ax.get_yscale() == "log"
    fmt = ax.yaxis.get_major_formatter()
    assert [fmt(v) for v in (0.01, 1.0, 100.0, 10000.0)] == ["0.01", "1", "100", "10,000"]
    minor = ax.yaxis.get_minor_formatter()
    assert [minor(v) for v in (0.02, 0.03, 0.05, 500.0)] == ["0.02", "", "0.05", "500"]


def test_storage_plot_stacks_shared_under_new(lab_and_engine):
    lab, _ = lab_and_engine
    log = lab.log()
    sf = storage_frame(lab)
    assert sf["generation"].tolist() == [1, 2, 3]
    oldest_first = log.sort_values("generation")
    assert (sf["shared_bytes"] + sf["new_bytes"]).tolist() == oldest_first["bytes"].tolist()
    assert sf["new_bytes"].tolist() == oldest_first["new_bytes"].tolist()
    _, ax = plot_storage(lab, unit="B")
    shared, new = ax.containers
    assert [r.get_height() for r in shared] == sf["shared_bytes"].tolist()
    assert [r.get_height() for r in new] == sf["new_bytes"].tolist()
    assert [r.get_y() for r in new] == sf["shared_bytes"].tolist()


def test_recall_drift_measures_each_generation(lab_and_engine, dataset):
    lab, _ = lab_and_engine
    df = recall_by_generation(lab, dataset, k=10)
    assert df["generation"].tolist() == [1, 2, 3]
    for g, r in zip(df["generation"], df["recall"], strict=True):
        assert r == engine_recall(lab.checkout(g, progress=False), dataset, 10)
    # generation 1 holds 300 of the 400 rows: its recall against the full truth is lower
    assert df["recall"][0] < df["recall"][1] <= 1.0
    _, ax = plot_recall_drift(lab, dataset, k=10)
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == [1, 2, 3]
    np.testing.assert_allclose(y, df["recall"].to_numpy())


def test_recall_drift_with_an_explicit_id_mapping(lab_and_engine, dataset):
    lab, _ = lab_and_engine
    mapping = {f"w{i}": i for i in range(400)}
    a = recall_by_generation(lab, dataset, id_to_row=mapping, generations=[2])
    b = recall_by_generation(lab, dataset, id_to_row=lambda t: int(t[1:]), generations=[2])
    c = recall_by_generation(lab, dataset, generations=[2])  # via dataset.base_words
    assert a["recall"].tolist() == b["recall"].tolist() == c["recall"].tolist()
    wrong = recall_by_generation(lab, dataset, id_to_row=lambda t: 0, generations=[2])
    assert wrong["recall"][0] < 0.2
