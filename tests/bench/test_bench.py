"""Harness self-tests: exact and broken indexes, fields, exports, sweeps, caching, Lab commits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from oluo_lab.bench import (
    COLUMNS,
    BenchResults,
    BruteForceAdapter,
    GroundTruthCache,
    commit_results,
    dataset_cid,
    distances_of,
    environment,
    from_arrays,
    frontier_at,
    ground_truth,
    load_hdf5,
    measure,
    pareto_frontier,
    qps_at_recall,
    ratios_at_recall,
    recall_distance,
    recall_ids,
    sweep,
)
from oluo_lab.bench import datasets as bench_datasets
from oluo_lab.bench.runner import bfs_order


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((100, 16)).astype(np.float32)
    return from_arrays(base, queries, metric="cosine", k=20, name="random-2000")


class ShuffledIds(BruteForceAdapter):
    """A deliberately broken index: exact neighbours, but ids from a permutation."""

    index = "Flat-shuffled"

    def build(self, base, params):
        super().build(base, params)
        self._perm = np.random.default_rng(0).permutation(base.shape[0])

    def search(self, queries, k, ef):
        return self._perm[super().search(queries, k, ef)]


def _measure(adapter, ds, metric=None, k=10, ef=16):
    metric = metric or ds.metric
    adapter.build(ds.base, {"metric": metric, "M": 8, "ef_construction": 32})
    return measure(
        adapter,
        ds.base,
        ds.queries,
        ds.neighbors,
        ds.distances,
        metric,
        k,
        ef,
        repeat=2,
        latency_queries=20,
    )


# ---------------------------------------------------------------- metrics


def test_recall_ids_counts_intersection_and_ignores_padding_and_duplicates():
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    found = np.array([[3, 2, 9, 9], [4, 4, -1, -1]])
    assert recall_ids(found, truth, 4) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert recall_ids(found, truth, 2, per_query=True).tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="k=5"):
        recall_ids(found, truth, 5)


def test_recall_distance_is_the_ann_benchmarks_threshold_rule():
    true_d = np.array([[0.1, 0.2, 0.3]])
    # a tie within epsilon of the 3rd distance counts, one beyond it does not
    assert recall_distance(np.array([[0.1, 0.3005, 0.31]]), true_d, 3) == pytest.approx(2 / 3)
    assert recall_distance(np.array([[0.1, 0.2, np.inf]]), true_d, 3) == pytest.approx(2 / 3)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_distances_of_matches_ground_truth_conventions(data, metric):
    nb, dist = ground_truth(data.base, data.queries, metric, 5)
    again = distances_of(data.base, data.queries, nb, metric)
    np.testing.assert_allclose(again, dist, rtol=1e-4, atol=1e-4)
    padded = distances_of(data.base, data.queries, np.full((100, 2), -1), metric)
    assert np.isinf(padded).all()


# ---------------------------------------------------------------- self-tests of the harness


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_brute_force_scores_recall_one_by_both_definitions(data, metric):
    m = _measure(BruteForceAdapter(), bench_datasets.with_metric(data, metric), metric)
    assert m.recall == 1.0
    assert m.recall_distance == 1.0


def test_shuffled_ids_score_about_zero(data):
    m = _measure(ShuffledIds(), data)
    assert m.recall < 0.05
    assert m.recall_distance < 0.05


def test_measurement_fields_present_and_positive(data):
    m = _measure(BruteForceAdapter(), data)
    for name in ("qps", "p50_ms", "p95_ms", "p99_ms", "best_search_s"):
        assert getattr(m, name) > 0, name
    assert m.p50_ms <= m.p95_ms <= m.p99_ms
    assert m.neighbors.shape == (100, 10)


# ---------------------------------------------------------------- sweep and results


@pytest.fixture(scope="module")
def results(data):
    return sweep(
        data,
        libraries=["oluo_lab", "faiss", "brute-force", lambda t: ShuffledIds(t)],
        M=(8,),
        ef_construction=(32, 48),
        ef_search=(8, 32),
        threads=1,
        repeat=1,
        latency_queries=10,
        run="test",
    )


def test_sweep_shape_and_columns(results):
    f = results.frame
    assert list(f.columns[: len(COLUMNS)]) == COLUMNS
    assert len(f) == 4 * 2 * 2  # libraries x efConstruction x efSearch
    assert set(f["ef_construction"]) == {32, 48} and set(f["ef_search"]) == {8, 32}
    assert (f["qps"] > 0).all() and (f["p50_ms"] > 0).all() and (f["p99_ms"] > 0).all()
    assert "qps_cpu" in f.columns and (f["qps_cpu"] > 0).all()
    assert (f["build_s"] > 0).all() and (f["index_bytes"] > 0).all()
    assert (f["memory_bytes"] >= 0).all()
    assert (f["threads"] == 1).all() and (f["run"] == "test").all()
    flat = f[f["index"] == "Flat"]
    assert (flat["recall"] == 1.0).all() and (flat["recall_distance"] == 1.0).all()
    assert (f[f["index"] == "Flat-shuffled"]["recall"] < 0.05).all()
    eng = f[f["library"] == "oluo_lab"].sort_values(["ef_construction", "ef_search"])
    assert (eng["recall"] > 0.5).all()
    # more efSearch never loses recall on the same graph here
    for _, g in eng.groupby("ef_construction"):
        assert g["recall"].is_monotonic_increasing


def test_engine_matches_raw_faiss_graph_recall(data):
    """The engine wraps a faiss HNSWFlat built with one thread: same recall as raw faiss
    built with one thread and the same parameters (same graph, same answers)."""
    res = sweep(
        data,
        ["oluo_lab", "faiss"],
        M=(8,),
        ef_construction=(32,),
        ef_search=(16,),
        threads=1,
        repeat=1,
        latency_queries=5,
    )
    by = res.frame.set_index("library")["recall"]
    assert by["oluo_lab"] == pytest.approx(by["faiss"], abs=0.02)


def test_environment_records_versions_cpu_and_threads():
    env = environment(3)
    assert env["threads"] == 3
    for key in ("python", "numpy", "faiss", "cpu_model", "cpu_count"):
        assert env[key], key


def test_repr_is_deterministic_and_html_is_a_table(results):
    assert repr(results) == (
        "BenchResults(rows=16, dataset='random-2000', libraries=[faiss, oluo_lab], threads=1)"
    )
    html = results._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == 17
    assert "style" not in html


def test_csv_round_trip(results, tmp_path):
    path = results.to_csv(tmp_path / "r.csv")
    back = BenchResults.from_csv(path)
    pd.testing.assert_frame_equal(back.frame, results.frame)
    assert back.env == results.env and back.dataset == results.dataset


def test_pareto_and_ratios():
    f = pd.DataFrame(
        {
            "library": ["oluo_lab"] * 3 + ["faiss"] * 3,
            "index": ["e"] * 3 + ["f"] * 3,
            "recall": [0.91, 0.96, 0.995, 0.92, 0.97, 0.99],
            "qps": [900.0, 500.0, 100.0, 800.0, 600.0, 50.0],
        }
    )
    front = pareto_frontier(f)
    assert len(front) == 6
    dominated = pd.concat(
        [f, pd.DataFrame({"library": ["faiss"], "index": ["f"], "recall": [0.90], "qps": [700.0]})]
    )
    assert len(pareto_frontier(dominated)) == 6
    r = ratios_at_recall(f, interpolate=False).set_index("recall_target")
    assert r.loc[0.90, "ratio"] == pytest.approx(900 / 800)
    assert r.loc[0.95, "ratio"] == pytest.approx(500 / 600)
    assert r.loc[0.99, "ratio"] == pytest.approx(100 / 50)
    assert r.loc[0.95, "best_peer"] == "faiss f"


def test_ratios_interpolated_on_the_frontier():
    f = pd.DataFrame(
        {
            "library": ["oluo_lab"] * 3 + ["faiss"] * 3,
            "index": ["e"] * 3 + ["f"] * 3,
            "recall": [0.90, 0.96, 0.99, 0.94, 0.98, 0.999],
            "qps": [1000.0, 400.0, 100.0, 800.0, 500.0, 80.0],
        }
    )
    # a dominated row between the brackets must not be used as the lower point
    f = pd.concat(
        [
            f,
            pd.DataFrame(
                {"library": ["oluo_lab"], "index": ["e"], "recall": [0.93], "qps": [300.0]}
            ),
        ]
    )
    s = qps_at_recall(f, 0.95, interpolate=True)
    w = (0.95 - 0.90) / (0.96 - 0.90)
    assert s[("oluo_lab", "e")] == pytest.approx(np.exp((1 - w) * np.log(1000) + w * np.log(400)))
    w = (0.95 - 0.94) / (0.98 - 0.94)
    assert s[("faiss", "f")] == pytest.approx(np.exp((1 - w) * np.log(800) + w * np.log(500)))
    # the grid reading takes the best row at or above the target
    assert qps_at_recall(f, 0.95, interpolate=False)[("oluo_lab", "e")] == 400.0
    # no point below the target: no extrapolation; none above: NaN
    assert qps_at_recall(f, 0.85, interpolate=True)[("faiss", "f")] == 800.0
    assert np.isnan(qps_at_recall(f, 0.9995, interpolate=True)[("oluo_lab", "e")])
    r = ratios_at_recall(f, (0.95,), interpolate=True).iloc[0]
    assert r["qps_read_as"] == "interpolated on the Pareto front"
    assert r["recall_by"] == "neighbour ids"
    assert r["ratio"] == pytest.approx(s[("oluo_lab", "e")] / s[("faiss", "f")])
    # one target as a plain number; the BenchResults method interpolates by default
    by_distance = f.rename(columns={"recall": "recall_distance"})
    one = ratios_at_recall(by_distance, 0.95, recall="recall_distance", interpolate=False)
    assert len(one) == 1 and one.loc[0, "recall_target"] == 0.95
    assert one.loc[0, "recall_by"] == "distance threshold (ann-benchmarks)"
    assert one.loc[0, "qps_read_as"] == "best row at or above the target"
    # exactly on a measured point the two readings agree
    assert qps_at_recall(f, 0.96, interpolate=True)[("oluo_lab", "e")] == pytest.approx(400.0)


def test_grid_builds_form_one_frontier_per_library_and_subset_keeps_one_setting():
    # library "a": M=16 is best at low recall, M=24 at high recall; "b" has one build
    rows = []
    for m, pts in (
        (16, [(0.90, 2000.0), (0.94, 1200.0), (0.97, 300.0)]),
        (24, [(0.93, 1000.0), (0.96, 900.0), (0.99, 400.0)]),
    ):
        rows += [
            ("oluo_lab", "a", m, 128, ef, r, q)
            for ef, (r, q) in zip((32, 64, 128), pts, strict=True)
        ]
    rows += [
        ("faiss", "b", 16, 128, ef, r, q)
        for ef, (r, q) in zip(
            (32, 64, 128), [(0.92, 1500.0), (0.95, 600.0), (0.99, 200.0)], strict=True
        )
    ]
    f = pd.DataFrame(
        rows, columns=["library", "index", "M", "ef_construction", "ef_search", "recall", "qps"]
    )
    at = frontier_at(f, 0.95).set_index("library")
    # across both builds the frontier crosses 0.95 between M=16 ef 64 and M=24 ef 64
    assert at.loc["oluo_lab", "below"] == "M=16 efC=128 ef=64 (0.940)"
    assert at.loc["oluo_lab", "at_or_above"] == "M=24 efC=128 ef=64 (0.960)"
    assert at.loc["oluo_lab", "qps"] == pytest.approx(np.sqrt(1200.0 * 900.0))
    assert at.loc["faiss", "below"] == "M=16 efC=128 ef=32 (0.920)"
    assert at.loc["faiss", "qps"] == pytest.approx(600.0)
    assert frontier_at(f, 0.999).set_index("library").loc["faiss", "at_or_above"] == "-"
    # the same-parameters reading of the same rows: M=16 only
    full = [c for c in COLUMNS if c not in f.columns]
    res = BenchResults(f.assign(**{c: 0 if c not in ("metric", "run") else "x" for c in full}))
    same = res.subset(M=16, ef_construction=128)
    assert len(same) == 6 and set(same.frame["M"]) == {16}
    best = res.ratios((0.95,), interpolate=True).iloc[0]
    only16 = same.ratios((0.95,), interpolate=True).iloc[0]
    assert best["ratio"] == pytest.approx(np.sqrt(1200.0 * 900.0) / 600.0)
    w = (0.95 - 0.94) / (0.97 - 0.94)
    assert only16["ratio"] == pytest.approx(np.exp((1 - w) * np.log(1200) + w * np.log(300)) / 600)
    with pytest.raises(ValueError, match="no columns"):
        res.subset(nope=1)


def test_results_ratios_take_one_target_and_interpolate_by_default(results):
    method = results.ratios(0.5)
    assert len(method) == 1 and method.loc[0, "qps_read_as"] == "interpolated on the Pareto front"
    pd.testing.assert_frame_equal(
        method, ratios_at_recall(results.frame, (0.5,), "oluo_lab", interpolate=True)
    )


def test_results_reject_frames_missing_columns():
    with pytest.raises(ValueError, match="lacks columns"):
        BenchResults(pd.DataFrame({"library": ["x"]}))


# ---------------------------------------------------------------- datasets and ground truth


def test_ground_truth_cache_hit_does_not_recompute(data, tmp_path, monkeypatch):
    calls = []
    real = bench_datasets.exact_ground_truth

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(bench_datasets, "exact_ground_truth", counting)
    cache = GroundTruthCache(tmp_path / "gt")
    first = ground_truth(data.base, data.queries, "l2", 10, cache)
    again = ground_truth(data.base, data.queries, "l2", 10, GroundTruthCache(tmp_path / "gt"))
    assert len(calls) == 1 and cache.computed == 1
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    # another metric or other vectors are other datasets
    ground_truth(data.base, data.queries, "ip", 10, cache)
    ground_truth(data.base[:-1], data.queries, "l2", 10, cache)
    assert len(calls) == 3
    # a damaged blob is recomputed, never trusted
    ref = next(
        (tmp_path / "gt" / "refs").glob(f"{dataset_cid(data.base, data.queries, 'l2').hex}*")
    )
    ref.write_text("00" * 40)
    ground_truth(data.base, data.queries, "l2", 10, cache)
    assert len(calls) == 4


def test_dataset_cid_is_deterministic_and_content_bound(data):
    a = dataset_cid(data.base, data.queries, "cosine")
    assert a == dataset_cid(data.base.copy(), data.queries.copy(), "cosine")
    assert a != dataset_cid(data.base, data.queries, "l2")
    changed = data.base.copy()
    changed[0, 0] += 1
    assert a != dataset_cid(changed, data.queries, "cosine")


def test_memory_cache_and_repr():
    cache = GroundTruthCache()
    rng = np.random.default_rng(1)
    b, q = rng.standard_normal((50, 4)), rng.standard_normal((3, 4))
    ground_truth(b, q, "l2", 5, cache)
    ground_truth(b, q, "l2", 5, cache)
    assert cache.computed == 1
    assert repr(cache) == "GroundTruthCache(memory, computed=1)"


def test_load_hdf5_ann_benchmarks_layout(data, tmp_path):
    h5py = pytest.importorskip("h5py")
    nb, dist = ground_truth(data.base, data.queries, "l2", 10)
    path = tmp_path / "random-16-euclidean.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"], f["test"] = data.base, data.queries
        f["neighbors"], f["distances"] = nb, np.sqrt(dist)  # ann-benchmarks: plain Euclidean
    ds = load_hdf5(path)
    assert (ds.name, ds.metric, ds.n, ds.n_queries, ds.k) == (
        "random-16-euclidean",
        "l2",
        2000,
        100,
        10,
    )
    np.testing.assert_allclose(ds.distances, dist, rtol=1e-5)
    m = _measure(BruteForceAdapter(), ds)
    assert m.recall == 1.0 and m.recall_distance == 1.0
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f["train"] = data.base
    with pytest.raises(ValueError, match="missing"):
        load_hdf5(bad)


def test_glove_sample_is_reused_not_duplicated():
    from oluo_lab import datasets

    assert bench_datasets.glove_sample is datasets.glove_sample
    assert bench_datasets.from_arrays is datasets.from_arrays


# ---------------------------------------------------------------- Lab commit


def test_commit_results_come_back_from_the_runs_table(results, data, tmp_path):
    from oluo_lab import Lab, OluoEngine

    eng = OluoEngine(data.dim, "cosine", M=8, ef_construction=32)
    eng.add(data.base)
    lab = Lab(tmp_path / "lab")
    snap = commit_results(lab, eng, results, note="bench", libraries=["oluo_lab"])
    runs = lab.runs()
    assert runs.iloc[0]["note"] == "bench"
    assert runs.iloc[0]["params.bench_parameters.M"] == 8
    assert runs.iloc[0]["params.bench_parameters.metric"] == "cosine"
    again = lab.resolve("HEAD")
    rows = again.metrics["bench_results"]
    assert len(rows) == 4 and {r["library"] for r in rows} == {"oluo_lab"}
    assert rows[0]["qps"] == pytest.approx(float(results.frame.iloc[0]["qps"]))
    assert again.params["bench_environment"]["faiss"] == results.env["faiss"]
    assert again.params["bench_dataset"]["name"] == "random-2000"
    assert dict(snap.params) == dict(again.params) and dict(snap.metrics) == dict(again.metrics)
    # the snapshot's engine is the one benchmarked
    back = lab.checkout(snap.cid)
    assert len(back) == data.n


# ---------------------------------------------------------------- peers


@pytest.mark.parametrize("name", ["hnswlib", "usearch"])
def test_peers_through_the_same_harness(data, name):
    pytest.importorskip(name)
    res = sweep(
        data,
        [name],
        M=(8,),
        ef_construction=(32,),
        ef_search=(64,),
        threads=2,
        repeat=1,
        latency_queries=5,
    )
    row = res.frame.iloc[0]
    assert row["library"] == name and row["threads"] == 2
    assert row["recall"] > 0.8 and row["qps"] > 0 and row["index_bytes"] > 0


@pytest.mark.parametrize("name", ["faiss-bfs", "faiss-sq8-refine", "faiss-unbounded"])
def test_faiss_variants(data, name):
    res = sweep(
        data,
        [name, "faiss"],
        M=(8,),
        ef_construction=(32,),
        ef_search=(64,),
        threads=1,
        repeat=1,
        latency_queries=5,
    )
    rec = res.frame.set_index("index")["recall"]
    assert rec.iloc[0] > 0.8
    if name != "faiss-sq8-refine":  # same graph, renumbered or searched differently
        assert rec.iloc[0] == pytest.approx(rec["HNSWFlat"], abs=0.02)


def test_bfs_order_is_a_permutation():
    import faiss

    x = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    ix = faiss.IndexHNSWFlat(8, 8)
    ix.add(x)
    perm = bfs_order(ix)
    assert sorted(perm.tolist()) == list(range(500))
    assert perm[0] == ix.hnsw.entry_point
