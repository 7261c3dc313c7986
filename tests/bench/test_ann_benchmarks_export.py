"""The ann-benchmarks export, checked by ann-benchmarks' own rules re-implemented here (CI
has no copy of ann-benchmarks): its distance functions (``distance.py``), its k-nn recall
(``plotting/metrics.py``: true k-th distance + 1e-3), its QPS (``1 / best_search_time``)
and the attribute units its runner stores."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pandas as pd
import pytest
from test_bench import ShuffledIds

from oluo_lab.bench import BenchResults, MissingAnswersError, load_hdf5, sweep
from oluo_lab.bench.runner import score

h5py = pytest.importorskip("h5py")

K = 10
REPEAT = 2


# ---------------------------------------------------------------- ann-benchmarks' rules


def annb_distance(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    """``ann_benchmarks.distance.metrics[metric].distance``."""

    def norm(x):
        return np.sum(x**2) ** 0.5

    if metric == "euclidean":
        return norm(a - b)
    if metric == "angular":
        return 1 - np.dot(a, b) / (norm(a) * norm(b))
    raise ValueError(metric)


def annb_knn(dataset_distances, run_distances, count, epsilon=1e-3) -> float:
    """``plotting/metrics.get_recall_values`` with ``knn_threshold``: the mean k-nn."""
    recalls = np.zeros(len(run_distances))
    for i in range(len(run_distances)):
        t = dataset_distances[i][count - 1] + epsilon
        recalls[i] = sum(1 for d in run_distances[i][:count] if d <= t)
    return float(np.mean(recalls) / count)


def write_annb_dataset(path, train, test, distance, count=20):
    """A dataset file as ``datasets.write_output`` writes it (exact neighbours by its
    distance functions, ascending)."""
    dist = np.array([[annb_distance(distance, q, x) for x in train] for q in test])
    nb = np.argsort(dist, axis=1, kind="stable")[:, :count]
    with h5py.File(path, "w") as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = distance
        f.attrs["dimension"] = train.shape[1]
        f.attrs["point_type"] = "float"
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        f.create_dataset("neighbors", data=nb)
        f.create_dataset("distances", data=np.take_along_axis(dist, nb, axis=1))
    return path


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """An angular and a euclidean ann-benchmarks dataset file of the same vectors."""
    rng = np.random.default_rng(11)
    train = rng.standard_normal((600, 12)).astype(np.float32)
    test = rng.standard_normal((40, 12)).astype(np.float32)
    root = tmp_path_factory.mktemp("annb-data")
    return {
        d: write_annb_dataset(root / f"random-12-{d}.hdf5", train, test, d)
        for d in ("angular", "euclidean")
    }


@pytest.fixture(scope="module")
def runs(datasets):
    out = {}
    for distance, path in datasets.items():
        out[distance] = sweep(
            load_hdf5(path),
            ["oluo_lab", "brute-force", lambda t: ShuffledIds(t)],
            M=(8,),
            ef_construction=(16,),
            ef_search=(4, 32),
            k=K,
            repeat=REPEAT,
            latency_queries=5,
            run="test",
        )
    return out


def _file_rows(files, results):
    for fn in files:
        with h5py.File(fn, "r") as f:
            yield fn, f, results.frame.iloc[int(f.attrs["oluo_row"])]


# ---------------------------------------------------------------- what ann-benchmarks reads


@pytest.mark.parametrize("distance", ["angular", "euclidean"])
def test_export_is_read_by_ann_benchmarks_rules_as_oluo_lab_measured_it(
    runs, datasets, distance, tmp_path
):
    results = runs[distance]
    files = results.export_ann_benchmarks(tmp_path)
    assert len(files) == len(results) == 6
    with h5py.File(datasets[distance], "r") as d:
        train, test, true_d = d["train"][:], d["test"][:], d["distances"][:]
    knns = {}
    for fn, f, row in _file_rows(files, results):
        rel = fn.relative_to(tmp_path).parts
        assert rel[:3] == ("results", f"random-12-{distance}", str(K))
        assert f.attrs["distance"] == distance and f.attrs["count"] == K
        assert f.attrs["dataset"] == f"random-12-{distance}"
        assert f.attrs["batch_mode"]
        # QPS: ann-benchmarks reads 1 / best_search_time (seconds per query)
        assert 1.0 / f.attrs["best_search_time"] == pytest.approx(row["qps"], rel=1e-12)
        assert f.attrs["run_count"] == REPEAT == row["runs"]
        # index size in kB, as its runner stores RSS / 1024
        assert f.attrs["index_size"] * 1024 == pytest.approx(row["index_bytes"])
        assert f.attrs["build_time"] == pytest.approx(row["build_s"])
        nb, dist, times = f["neighbors"][:], f["distances"][:], f["times"][:]
        assert nb.dtype == np.int32 and dist.dtype == np.float32 and times.dtype == np.float32
        assert nb.shape == dist.shape == (40, K) and times.shape == (40,)
        assert f.attrs["candidates"] == pytest.approx((nb >= 0).sum(axis=1).mean())
        assert f.attrs["candidates"] == K
        # distances as ann-benchmarks computes them: plain L2 for euclidean, 1 - cos for angular
        again = [[annb_distance(distance, test[i], train[j]) for j in nb[i]] for i in range(40)]
        np.testing.assert_allclose(dist, again, rtol=1e-5, atol=1e-6)
        # its k-nn recall (the plots' x axis) is the harness's recall_distance
        knn = annb_knn(true_d, dist, int(f.attrs["count"]))
        assert knn == pytest.approx(row["recall_distance"], abs=1e-12)
        knns[row["index"]] = knn
    assert knns["Flat"] == 1.0 and knns["Flat-shuffled"] < 0.1 and knns["OluoEngine"] > 0.5


def test_euclidean_distance_rule_is_applied_to_plain_distances():
    """ann-benchmarks' tolerance is 1e-3 in plain L2: a neighbour 0.0009 beyond the true
    distance 2 counts, though its squared distance is 0.0036 beyond 4."""
    base = np.array([[2.0], [2.0009]], dtype=np.float32)
    q = np.zeros((1, 1), dtype=np.float32)
    truth_ids, truth_sq = np.array([[0]]), np.array([[4.0]], dtype=np.float32)
    r_ids, r_dist, dist = score(np.array([[1]]), base, q, truth_ids, truth_sq, "l2", 1)
    assert (r_ids, r_dist) == (0.0, 1.0)
    assert dist[0, 0] == pytest.approx(2.0009**2, rel=1e-6)  # returned distances stay squared
    far = np.array([[2.0], [2.0011]], dtype=np.float32)
    assert score(np.array([[1]]), far, q, truth_ids, truth_sq, "l2", 1)[1] == 0.0


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("distance", ["angular", "euclidean"])
def test_round_trip_keeps_rows_dataset_environment_and_answers(runs, distance, tmp_path):
    results = runs[distance]
    results.export_ann_benchmarks(tmp_path / "a")
    back = BenchResults.from_ann_benchmarks(tmp_path / "a")
    pd.testing.assert_frame_equal(back.frame, results.frame)
    assert back.dataset == results.dataset and back.env == results.env
    assert back.dataset["name"] == f"random-12-{distance}"
    assert sorted(back.answers) == sorted(results.answers)
    for i, (nb, dist, best) in results.answers.items():
        nb2, dist2, best2 = back.answers[i]
        np.testing.assert_array_equal(nb2, nb)
        np.testing.assert_allclose(dist2, dist, rtol=1e-5)  # l2 squared again
        assert best2 == pytest.approx(best, rel=1e-6)
    # a re-export lands under the dataset's name again, file for file
    again = back.export_ann_benchmarks(tmp_path / "b")
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.hdf5"))
    assert sorted(p.relative_to(tmp_path / "b") for p in again) == first


def test_other_algorithms_files_are_skipped_and_several_exports_need_a_choice(runs, tmp_path):
    runs["angular"].export_ann_benchmarks(tmp_path)
    foreign = tmp_path / "results" / "random-12-angular" / "10" / "hnswlib" / "M_8.hdf5"
    foreign.parent.mkdir(parents=True)
    with h5py.File(foreign, "w") as f:  # a run of ann-benchmarks' own runner
        f.attrs["algo"], f.attrs["batch_mode"] = "hnswlib", False
    assert len(BenchResults.from_ann_benchmarks(tmp_path)) == 6
    runs["euclidean"].export_ann_benchmarks(tmp_path)
    with pytest.raises(ValueError, match="several exports"):
        BenchResults.from_ann_benchmarks(tmp_path)
    eu = BenchResults.from_ann_benchmarks(tmp_path, dataset="random-12-euclidean")
    pd.testing.assert_frame_equal(eu.frame, runs["euclidean"].frame)
    with pytest.raises(FileNotFoundError, match="export_ann_benchmarks"):
        BenchResults.from_ann_benchmarks(tmp_path, dataset="glove-25-angular")


def test_rows_of_another_metric_are_another_dataset_and_collisions_are_refused(
    runs, datasets, tmp_path
):
    res = sweep(
        load_hdf5(datasets["angular"]),
        ["brute-force"],
        M=(8,),
        ef_construction=(16,),
        ef_search=(4,),
        metric=["cosine", "l2"],
        k=K,
        repeat=1,
        latency_queries=2,
    )
    files = res.export_ann_benchmarks(tmp_path / "m")
    assert sorted(p.relative_to(tmp_path / "m").parts[1] for p in files) == [
        "random-12-angular",
        "random-12-angular-l2",
    ]
    twice = runs["angular"].concat(runs["angular"])
    with pytest.raises(ValueError, match="would both be written"):
        twice.export_ann_benchmarks(tmp_path / "c")
    assert not list((tmp_path / "c").rglob("*.hdf5"))


# ---------------------------------------------------------------- rows without answers


def test_rows_without_answers_are_refused_by_a_typed_error_and_nothing_is_written(runs, tmp_path):
    results = runs["euclidean"]
    table = BenchResults.from_csv(results.to_csv(tmp_path / "r.csv"))
    assert not table.answers
    with pytest.raises(MissingAnswersError, match=r"6 of 6 rows have no kept answers") as exc:
        table.export_ann_benchmarks(tmp_path / "out")
    assert "keep_answers=True" in str(exc.value) and len(exc.value.rows) == 6
    assert exc.value.rows[0] == "oluo_lab OluoEngine M=8 ef_construction=16 ef_search=4"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))
    # one row without answers among plottable ones is refused as well
    partial = BenchResults(results.frame, results.dataset, results.env, dict(results.answers))
    del partial.answers[3]
    with pytest.raises(MissingAnswersError, match="1 of 6"):
        partial.export_ann_benchmarks(tmp_path / "out")
    with pytest.raises(ValueError, match="without_answers"):
        table.export_ann_benchmarks(tmp_path / "out", without_answers="skip")
    nb, dist, best = results.answers[3]
    partial.answers[3] = (nb[:, :5], dist[:, :5], best)  # not the row's k
    with pytest.raises(ValueError, match="do not match k=10"):
        partial.export_ann_benchmarks(tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))


def test_rows_without_answers_can_be_set_aside_with_per_query_times(runs, datasets, tmp_path):
    results = runs["euclidean"]
    lean = sweep(
        load_hdf5(datasets["euclidean"]),
        ["brute-force"],
        M=(8,),
        ef_construction=(16,),
        ef_search=(4,),
        k=K,
        repeat=REPEAT,
        latency_queries=2,
        keep_answers=False,
    )
    mixed = results.concat(lean)
    files = mixed.export_ann_benchmarks(tmp_path, without_answers="aside")
    tops = [p.relative_to(tmp_path).parts[0] for p in files]
    assert tops == ["results"] * 6 + ["without-answers"]
    with h5py.File(files[-1], "r") as f:
        assert not f.attrs["oluo_answers_kept"] and "candidates" not in f.attrs
        assert "neighbors" not in f and "distances" not in f and "times" not in f
        # seconds per query, not the whole batch: ann-benchmarks' QPS is the harness's
        assert 1.0 / f.attrs["best_search_time"] == pytest.approx(mixed.frame.loc[6, "qps"])
        assert f.attrs["run_count"] == REPEAT
        assert json.loads(f.attrs["oluo_dataset"])["name"] == "random-12-euclidean"
    back = BenchResults.from_ann_benchmarks(tmp_path)
    pd.testing.assert_frame_equal(back.frame, mixed.frame)
    assert sorted(back.answers) == list(range(6))


def test_export_falls_back_to_csv_without_h5py(runs, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_h5py(name, *a, **kw):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    results = runs["angular"]
    files = results.export_ann_benchmarks(tmp_path)
    assert [p.name for p in files] == ["results.csv"]
    back = BenchResults.from_ann_benchmarks(tmp_path)
    pd.testing.assert_frame_equal(back.frame, results.frame)
