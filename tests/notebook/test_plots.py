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


def test_recall_qps_plot_draws_each_groups_frontier():
    df = h.bench_frame()
    fig, ax = plot_recall_qps(df)
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"oluo (Pareto)", "peer (Pareto)"}
    for lib in ("oluo", "peer"):
        front = pareto_frontier(df[df["library"] == lib])
        x, y = lines[f"{lib} (Pareto)"].get_data()
        np.testing.assert_allclose(x, front["recall"].to_numpy())
        np.testing.assert_allclose(y, front["qps"].to_numpy())
    scatter_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert scatter_points == len(df)
    _, ax2 = plot_recall_qps(df, pareto=False, by=None)
    assert not ax2.get_lines() and len(ax2.collections) == 1


def test_plots_reuse_a_given_axes_and_accept_frame_objects():
    import matplotlib.pyplot as plt

    class Results:
        frame = h.bench_frame()

    fig, ax = plt.subplots()
    fig2, ax2 = plot_recall_qps(Results(), ax=ax)
    assert fig2 is fig and ax2 is ax
    with pytest.raises(ValueError, match="p99_ms"):
        plot_latency(h.bench_frame().drop(columns=["p99_ms"]))


def test_latency_plot_lines_are_the_percentiles_sorted_by_recall():
    df = h.bench_frame()
    _, ax = plot_latency(df)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert len(lines) == 6
    oluo = df[df["library"] == "oluo"].sort_values("recall", kind="mergesort")
    x, y = lines["oluo p99"].get_data()
    np.testing.assert_allclose(x, oluo["recall"].to_numpy())
    np.testing.assert_allclose(y, oluo["p99_ms"].to_numpy())


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
