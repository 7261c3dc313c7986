"""Result comparisons: recall, answer overlap, exact distances and Pareto frontiers.

The one home of every measure the package reports (the role faiss gives
``contrib/evaluation.py``): the notebooks, the benchmark harness, ``Lab.diff``, the demo
report and the test assertions all call these functions, so a number means the same
thing wherever it is printed. A leaf module: numpy and pandas only, nothing of the
package.

* :func:`recall_ids` -- the ``recall`` column: how many of the true top-k row ids the
  returned top-k holds (id intersection). ``denominator="k"`` divides by ``k`` per query
  (ann-benchmarks' and the benchmark columns' rule: a query with fewer than k true
  neighbours cannot reach 1); ``denominator="truth"`` by the valid (non-negative) true
  entries, for ground truth padded where fewer than k entries exist (``Lab.diff``
  compares each side against its own exact search).
* :func:`recall_distance` -- the ``recall_distance`` column: ann-benchmarks' rule, a
  returned neighbour counts when its distance is at most the true k-th distance plus
  ``epsilon`` (:data:`EPSILON`), which tolerates ties.
* :func:`answer_overlap` -- how alike two answer sets are, over caller ids (``None``
  padding ignored), divided by ``k``.
* :func:`pareto_frontier` -- the rows not dominated in two higher-is-better columns
  (recall and QPS by default), optionally per group.

:func:`as_frame` is how each of them (and the plots) reads a results table: a DataFrame,
or an object holding one as ``.frame``.

Scores over many queries are pooled: the sum of hits over the sum of denominators (for
``denominator="k"`` that is the mean of the per-query values). ``per_query=True``
returns the per-query values instead. An empty query set, ``k=0`` or a query without valid
true ids scores 1.0 (nothing to miss).

Distances follow :mod:`oluo_lab.datasets` conventions (cosine ``1 - cos``, l2 squared,
ip ``-<q, x>``). :func:`distances_of` recomputes them from returned ids, as
ann-benchmarks does, so every library is scored with the same arithmetic. The threshold
of :func:`recall_distance` is meant in ann-benchmarks' units, whose euclidean distance
is plain (not squared) L2: the benchmark harness takes square roots of l2 distances
before applying it (:func:`oluo_lab.bench.runner.score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "EPSILON",
    "answer_overlap",
    "as_frame",
    "distances_of",
    "pareto_frontier",
    "recall_distance",
    "recall_ids",
]

#: ann-benchmarks' tolerance for the distance-threshold recall.
EPSILON = 1e-3

#: Query rows compared per step of :func:`recall_ids` (bounds its k x k scratch arrays).
_CELLS_PER_STEP = 1_000_000


def _check(found: Any, truth: Any, k: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must be 2-D")
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} queries, truth has {truth.shape[0]}")
    k = truth.shape[1] if k is None else int(k)
    if not 0 <= k <= truth.shape[1]:
        raise ValueError(f"k={k} out of range: truth holds {truth.shape[1]} neighbours")
    if found.shape[1] < k:
        raise ValueError(f"found holds {found.shape[1]} neighbours per query, k={k}")
    return found[:, :k], truth[:, :k], k


def _pooled(hits: np.ndarray, denom: np.ndarray, per_query: bool) -> float | np.ndarray:
    if per_query:
        safe = np.where(denom > 0, denom, 1)
        return np.where(denom > 0, hits / safe, 1.0)
    total = float(denom.sum())
    return float(hits.sum()) / total if total else 1.0


def recall_ids(
    found: Any,
    truth: Any,
    k: int | None = None,
    per_query: bool = False,
    *,
    denominator: Literal["k", "truth"] = "k",
) -> float | np.ndarray:
    """Recall@k by id intersection: true top-k ids found in the returned top-k.

    ``found`` and ``truth`` are (n_queries, >= k) integer arrays of row ids; negative ids
    are padding and never count, and each distinct true id counts once however often it
    is returned. ``k`` defaults to ``truth``'s width. ``denominator``: ``"k"`` (per
    query, ``hits / k``) or ``"truth"`` (``hits / valid true ids``); see the module
    docstring. ValueError for shapes that do not fit ``k``.
    """
    if denominator not in ("k", "truth"):
        raise ValueError(f"denominator must be 'k' or 'truth', not {denominator!r}")
    found, truth, k = _check(found, truth, k)
    f = found.astype(np.int64)
    t = truth.astype(np.int64)
    n = f.shape[0]
    hits = np.empty(n, dtype=np.int64)
    valid_count = np.empty(n, dtype=np.int64)
    step = max(1, _CELLS_PER_STEP // max(1, k * k))
    earlier = np.triu(np.ones((k, k), dtype=bool), 1)  # [i, j]: i < j
    for s in range(0, n, step):
        fb, tb = f[s : s + step], t[s : s + step]
        repeated = ((tb[:, :, None] == tb[:, None, :]) & earlier).any(axis=1)
        valid = (tb >= 0) & ~repeated
        returned = (fb[:, :, None] == tb[:, None, :]).any(axis=1)
        hits[s : s + step] = (returned & valid).sum(axis=1)
        valid_count[s : s + step] = valid.sum(axis=1)
    denom = np.full(n, k, dtype=np.int64) if denominator == "k" else valid_count
    return _pooled(hits, denom, per_query)


def recall_distance(
    found_distances: Any,
    true_distances: Any,
    k: int | None = None,
    epsilon: float = EPSILON,
    per_query: bool = False,
) -> float | np.ndarray:
    """Recall@k by ann-benchmarks' rule: returned distances ``<= true k-th + epsilon``,
    divided by ``k``.

    ``found_distances`` must be recomputed exactly (see :func:`distances_of`); padding
    is ``+inf`` and never counts.
    """
    found, truth, k = _check(found_distances, true_distances, k)
    threshold = truth[:, k - 1 : k].astype(np.float64) + epsilon
    hits = (found.astype(np.float64) <= threshold).sum(axis=1)
    return _pooled(hits, np.full(len(hits), k), per_query)


def answer_overlap(ids_a: Any, ids_b: Any, k: int, per_query: bool = False) -> float | np.ndarray:
    """How alike two answer sets are: per query ``|a[:k] & b[:k]| / k`` over caller ids
    (any hashable; ``None`` padding ignored), pooled over queries unless ``per_query``."""
    if len(ids_a) != len(ids_b):
        raise ValueError(f"ids_a has {len(ids_a)} queries, ids_b has {len(ids_b)}")
    hits = np.zeros(len(ids_a), dtype=np.int64)
    for i, (ra, rb) in enumerate(zip(ids_a, ids_b, strict=True)):
        sa = {x for x in list(ra)[:k] if x is not None}
        sb = {x for x in list(rb)[:k] if x is not None}
        hits[i] = len(sa & sb)
    return _pooled(hits, np.full(len(hits), k), per_query)


def distances_of(base: Any, queries: Any, ids: Any, metric: str) -> np.ndarray:
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


def as_frame(results: Any, required: Sequence[str] = ()) -> pd.DataFrame:
    """The DataFrame of ``results`` (a DataFrame or an object with ``.frame``, such as
    benchmark results), checked to hold the ``required`` columns (ValueError naming the
    missing ones; TypeError for anything else)."""
    frame = results.frame if hasattr(results, "frame") else results
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"expected a pandas DataFrame or an object with a .frame DataFrame, "
            f"not {type(results).__name__}"
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing}; have {list(frame.columns)}")
    return frame


def pareto_frontier(
    df: Any, x: str = "recall", y: str = "qps", by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows not dominated in (higher ``x``, higher ``y``), per ``by`` group when given,
    sorted by the group columns then ``x`` ascending; the original index is kept.

    A row is dominated when another of its group has ``x`` and ``y`` both at least as
    high and one strictly higher (of identical rows the first is kept). Rows with a NaN
    in ``x`` or ``y`` are ignored. ``df``: a DataFrame or an object with a ``.frame``
    DataFrame (benchmark results); ValueError naming missing columns.
    """
    cols = [] if by is None else [by] if isinstance(by, str) else list(by)
    frame = as_frame(df, [*cols, x, y])
    xs = frame[x].to_numpy(dtype=float)
    ys = frame[y].to_numpy(dtype=float)
    rows = frame.iloc[np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))]
    xs, ys = rows[x].to_numpy(dtype=float), rows[y].to_numpy(dtype=float)
    groups = rows.groupby(cols, sort=True, dropna=False).indices if cols else {(): None}
    keep: list[int] = []
    for positions in groups.values():
        at = np.arange(len(rows)) if positions is None else np.asarray(positions)
        best = -np.inf
        for i in at[np.lexsort((-ys[at], -xs[at]))]:  # x descending, then y; stable
            if ys[i] > best:
                keep.append(int(i))
                best = ys[i]
    return rows.iloc[sorted(keep)].sort_values([*cols, x], kind="mergesort")
