"""Recall metrics over plain arrays (ann-benchmarks ``plotting/metrics.py`` style).

Two definitions, always labelled:

* :func:`recall_ids` -- ``recall`` column: the fraction of the true top-k row ids
  found in the returned top-k (id intersection);
* :func:`recall_distance` -- ``recall_distance`` column: ann-benchmarks' rule, a
  returned neighbour counts when its distance is at most the true k-th distance plus
  ``epsilon`` (1e-3), which tolerates ties.

Distances follow :mod:`oluo_lab.datasets` conventions (cosine ``1 - cos``, l2 squared,
ip ``-<q, x>``). :func:`distances_of` recomputes them from returned ids, as
ann-benchmarks does, so every library is scored with the same arithmetic. The
threshold of :func:`recall_distance` is meant in ann-benchmarks' units, whose euclidean
distance is plain (not squared) L2: the harness takes square roots of l2 distances
before applying it (:func:`oluo_lab.bench.runner.score`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPSILON", "distances_of", "recall_distance", "recall_ids"]

#: ann-benchmarks' tolerance for the distance-threshold recall.
EPSILON = 1e-3


def _check(found: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must be 2-D")
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} queries, truth has {truth.shape[0]}")
    if not 1 <= k <= truth.shape[1]:
        raise ValueError(f"k={k} out of range: truth holds {truth.shape[1]} neighbours")
    if found.shape[1] < k:
        raise ValueError(f"found holds {found.shape[1]} neighbours per query, k={k}")
    return found[:, :k], truth[:, :k]


def recall_ids(
    found: np.ndarray, truth: np.ndarray, k: int, per_query: bool = False
) -> float | np.ndarray:
    """Recall@k by id intersection: mean over queries of ``|found[:k] & truth[:k]| / k``.

    Padding (negative ids) never counts.
    """
    found, truth = _check(found, truth, k)
    f = found.astype(np.int64)
    t = truth.astype(np.int64)
    per = np.empty(f.shape[0], dtype=np.float64)
    step = max(1, 1_000_000 // (k * k))
    for s in range(0, f.shape[0], step):
        fb, tb = f[s : s + step], t[s : s + step]
        # each true id counts once when any returned id equals it (duplicates count once)
        found_truth = (fb[:, :, None] == tb[:, None, :]).any(axis=1) & (tb >= 0)
        per[s : s + step] = found_truth.sum(axis=1) / k
    return per if per_query else float(per.mean())


def recall_distance(
    found_distances: np.ndarray,
    true_distances: np.ndarray,
    k: int,
    epsilon: float = EPSILON,
    per_query: bool = False,
) -> float | np.ndarray:
    """Recall@k by ann-benchmarks' rule: returned distances ``<= true k-th + epsilon``.

    ``found_distances`` must be recomputed exactly (see :func:`distances_of`);
    padding is ``+inf`` and never counts.
    """
    found, truth = _check(found_distances, true_distances, k)
    threshold = truth[:, k - 1 : k].astype(np.float64) + epsilon
    per = (found.astype(np.float64) <= threshold).sum(axis=1) / k
    return per if per_query else float(per.mean())


def distances_of(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """Exact distances (float64) of each query to its returned base rows; ``+inf`` where
    the id is padding (negative) or out of range."""
    ids = np.asarray(ids, dtype=np.int64)
    base = np.asarray(base, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    valid = (ids >= 0) & (ids < base.shape[0])
    rows = base[np.where(valid, ids, 0)].astype(np.float64)  # (nq, k, d)
    q = queries.astype(np.float64)[:, None, :]
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=2, keepdims=True)
        rn = rows / np.linalg.norm(rows, axis=2, keepdims=True)
        d = 1.0 - (qn * rn).sum(axis=2)
    elif metric == "l2":
        d = ((q - rows) ** 2).sum(axis=2)
    elif metric == "ip":
        d = -(q * rows).sum(axis=2)
    else:
        raise ValueError(f"unknown metric {metric!r}; expected cosine, l2 or ip")
    return np.where(valid, d, np.inf)
