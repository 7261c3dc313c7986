"""oluo_lab.metrics is the one implementation of each measure: checked against plain
set arithmetic, and every layer's name for a measure is the same function."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import oluo_lab as ol
from oluo_lab import bench, metrics, notebook
from oluo_lab.metrics import answer_overlap, pareto_frontier, recall_distance, recall_ids


def _oracle_recall(found, truth, k, denominator):
    hits = denom = 0
    for f, t in zip(found, truth, strict=True):
        true_ids = {int(x) for x in t[:k] if x >= 0}
        hits += len(true_ids & {int(x) for x in f[:k]})
        denom += k if denominator == "k" else len(true_ids)
    return hits / denom if denom else 1.0


@pytest.mark.parametrize("denominator", ["k", "truth"])
def test_recall_ids_equals_set_arithmetic_on_random_answers(denominator):
    rng = np.random.default_rng(3)
    truth = rng.integers(-1, 30, (200, 12))  # padding, and repeated true ids
    found = rng.integers(-1, 30, (200, 12))
    for k in (1, 5, 12):
        want = _oracle_recall(found, truth, k, denominator)
        assert recall_ids(found, truth, k, denominator=denominator) == pytest.approx(want)
        per = recall_ids(found, truth, k, per_query=True, denominator=denominator)
        assert per.shape == (200,) and ((per >= 0) & (per <= 1)).all()


def test_the_two_denominators_differ_only_where_truth_is_padded():
    truth = np.array([[0, 1, -1, -1], [4, 5, 6, 7]])
    found = np.array([[1, 0, 2, 3], [4, 9, -1, -1]])
    assert recall_ids(found, truth, per_query=True).tolist() == [0.5, 0.25]
    assert recall_ids(found, truth, per_query=True, denominator="truth").tolist() == [1.0, 0.25]
    assert recall_ids(found, truth) == pytest.approx(3 / 8)
    assert recall_ids(found, truth, denominator="truth") == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="denominator"):
        recall_ids(found, truth, denominator="queries")


def test_nothing_to_find_scores_one():
    empty = np.zeros((0, 10), np.int64)
    assert recall_ids(empty, empty, 10) == 1.0
    assert recall_ids(np.full((2, 3), -1), np.full((2, 3), -1), denominator="truth") == 1.0
    assert recall_ids(np.ones((2, 0)), np.ones((2, 0)), 0) == 1.0
    assert answer_overlap([], [], 10) == 1.0
    assert recall_distance(np.zeros((0, 3)), np.zeros((0, 3)), 3) == 1.0


def test_answer_overlap_over_caller_ids_ignores_none_padding():
    a = np.array([["x", "y", None], ["p", None, None]], dtype=object)
    b = np.array([["y", "x", "z"], ["q", None, None]], dtype=object)
    assert answer_overlap(a, b, 3, per_query=True).tolist() == [2 / 3, 0.0]
    assert answer_overlap(a, b, 3) == pytest.approx(2 / 6)
    assert answer_overlap(a, b, 1, per_query=True).tolist() == [0.0, 0.0]  # x vs y
    with pytest.raises(ValueError, match="queries"):
        answer_overlap(a, b[:1], 3)


def _dominated(df, i, x, y):
    r = df.loc[i]
    others = df.drop(index=i)
    return (
        (others[x] >= r[x]) & (others[y] >= r[y]) & ((others[x] > r[x]) | (others[y] > r[y]))
    ).any()


def _assert_frontier(got, group):
    want = {i for i in group.index if not _dominated(group, i, "recall", "qps")}
    assert set(got.index) <= want  # of identical (recall, qps) rows one is kept
    assert {tuple(r) for r in got[["recall", "qps"]].to_numpy()} == {
        tuple(r) for r in group.loc[sorted(want), ["recall", "qps"]].to_numpy()
    }
    assert got["recall"].is_monotonic_increasing and got["qps"].is_monotonic_decreasing


def test_pareto_frontier_keeps_exactly_the_undominated_rows_per_group():
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        {
            "library": rng.choice(["a", "b", "c"], 60),
            "recall": rng.random(60).round(2),
            "qps": rng.integers(1, 50, 60).astype(float),
        }
    )
    df.loc[3, "qps"] = np.nan  # ignored
    front = pareto_frontier(df, by="library")
    for lib, group in df.dropna().groupby("library"):
        _assert_frontier(front[front["library"] == lib], group)
    assert list(front["library"]) == sorted(front["library"])
    _assert_frontier(pareto_frontier(df), df.dropna())
    with pytest.raises(ValueError, match="recall_distance"):
        pareto_frontier(df, x="recall_distance")


def test_every_layer_names_the_same_measure():
    assert bench.recall_ids is metrics.recall_ids
    assert bench.recall_distance is metrics.recall_distance
    assert bench.distances_of is metrics.distances_of
    assert notebook.recall_at_k is metrics.recall_ids
    assert ol.pareto_frontier is metrics.pareto_frontier
    assert notebook.pareto_frontier is metrics.pareto_frontier
    a = np.array([[1, 2], [3, None]], dtype=object)
    b = np.array([[2, 5], [3, 4]], dtype=object)
    assert notebook.answer_overlap(a, b, 2).tolist() == [0.5, 0.5]
    df = pd.DataFrame(
        {
            "library": ["x", "x", "y", "y"],
            "index": ["i"] * 4,
            "recall": [0.9, 0.95, 0.9, 0.8],
            "qps": [10.0, 5.0, 20.0, 30.0],
        }
    )
    grouped = pareto_frontier(df, by=["library", "index"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(bench.pareto_frontier(df), grouped)
