"""from_arrays and exact_ground_truth against a numpy brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest

from oluo_lab.datasets import Dataset, exact_ground_truth, from_arrays


def brute_force(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """Distances (n_queries, n) in float64 under the module's conventions."""
    b = base.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "cosine":
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1.0 - q @ b.T
    if metric == "ip":
        return -(q @ b.T)
    return ((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_arrays_matches_brute_force(metric: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    ds = from_arrays(base, queries, metric=metric, k=20, name="toy")
    assert ds.metric == metric and ds.name == "toy"
    assert ds.neighbors.shape == ds.distances.shape == (40, 20)
    assert ds.neighbors.dtype == np.int32 and ds.distances.dtype == np.float32
    assert ds.base_words is None and ds.query_words is None
    np.testing.assert_array_equal(ds.base, base)  # stored unnormalised
    dist = brute_force(base, queries, metric)
    oracle = np.argsort(dist, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(ds.neighbors, oracle)  # random data: no ties
    expected = np.take_along_axis(dist, oracle, axis=1)
    np.testing.assert_allclose(ds.distances, expected, rtol=1e-5, atol=1e-4)
    assert repr(ds) == f"Dataset('toy', base=500x16, queries=40, metric='{metric}')"


def test_from_arrays_accepts_float64_and_words() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(30, 4))
    ds = from_arrays(base, base[:3], k=1, base_words=[f"w{i}" for i in range(30)])
    assert ds.base.dtype == np.float32
    np.testing.assert_array_equal(ds.ground_truth(1)[:, 0], [0, 1, 2])  # each finds itself
    assert ds.base_words[2] == "w2" and ds.query_words is None
    assert "<th>base words</th><td>w0, w1, w2, w3, w4, ...</td>" in ds._repr_html_()


def test_html_escapes_words() -> None:
    ds = from_arrays(np.eye(2), np.eye(2), k=1, base_words=["<b>", "&"], query_words=["a", "b"])
    assert "<td>&lt;b&gt;, &amp;</td>" in ds._repr_html_()


@pytest.mark.parametrize(
    ("base", "queries", "kwargs", "message"),
    [
        (np.ones((5, 3)), np.ones((2, 4)), {}, "dimension 4"),
        (np.ones((5, 3)), np.ones((2, 3)), {"k": 6}, "k=6"),
        (np.ones((5, 3)), np.ones((2, 3)), {"k": 0}, "k=0"),
        (np.ones((5, 3)), np.ones((2, 3)), {"metric": "hamming"}, "unknown metric"),
        (np.ones(5), np.ones((2, 5)), {}, "base must be a non-empty 2-D"),
        (np.ones((0, 3)), np.ones((2, 3)), {}, "base must be a non-empty 2-D"),
        (np.array([[1.0, np.nan]]), np.ones((1, 2)), {"k": 1}, "base contains NaN"),
        (np.array([["a", "b"]]), np.ones((1, 2)), {"k": 1}, "real numbers"),
        (np.vstack([np.ones(3), np.zeros(3)]), np.ones((1, 3)), {"k": 1}, "base row 1"),
        (np.ones((2, 3)), np.zeros((1, 3)), {"k": 1}, "queries row 0 is a zero vector"),
    ],
)
def test_bad_input_is_named(base, queries, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        from_arrays(base, queries, **kwargs)


def test_zero_vector_is_fine_for_l2_and_ip() -> None:
    base = np.vstack([np.zeros(3), np.ones(3)]).astype(np.float32)
    n, d = exact_ground_truth(base, np.zeros((1, 3), np.float32), "l2", k=1)
    assert n[0, 0] == 0 and d[0, 0] == 0.0
    n, d = exact_ground_truth(base, np.ones((1, 3), np.float32), "ip", k=2)
    assert n[0].tolist() == [1, 0] and d[0].tolist() == [-3.0, 0.0]


def test_progress_batches_cover_every_query() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    whole = exact_ground_truth(base, queries, "l2", 5)
    batched = exact_ground_truth(base, queries, "l2", 5, progress=False, batch=7)
    np.testing.assert_array_equal(whole[0], batched[0])
    np.testing.assert_array_equal(whole[1], batched[1])


def test_dataset_rejects_inconsistent_arrays() -> None:
    base = np.ones((4, 2), np.float32)
    nb = np.zeros((3, 2), np.int32)
    with pytest.raises(ValueError, match="must both be"):
        Dataset("x", "l2", base, base[:3], None, None, nb, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="base_words has 2 entries for 4"):
        Dataset("x", "l2", base, base[:3], np.array(["a", "b"], object), None, nb, nb * 1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        Dataset("x", "dot", base, base[:3], None, None, nb, nb * 1.0)
