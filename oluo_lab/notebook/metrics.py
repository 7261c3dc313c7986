"""Recall and overlap measured on engines, snapshots and datasets (plain numbers out).

Engine ids are mapped to dataset rows so a search can be scored against the dataset's
exact ground truth: int ids are rows; str ids are looked up among the dataset's words
(``base_words``), or pass ``id_to_row`` (a mapping or a callable id -> row). The
measures themselves are :mod:`oluo_lab.metrics`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import metrics

__all__ = [
    "IdToRow",
    "answer_overlap",
    "engine_recall",
    "ids_to_rows",
    "recall_at_k",
    "resolve_engine",
]

IdToRow = Mapping[Any, int] | Callable[[Any], int | None] | None


def _row_lookup(dataset: Any, id_to_row: IdToRow) -> Callable[[Any], int | None]:
    if callable(id_to_row):
        return id_to_row
    if isinstance(id_to_row, Mapping):
        return id_to_row.get
    if id_to_row is not None:
        raise TypeError(
            f"id_to_row must be a mapping or a callable, not {type(id_to_row).__name__}"
        )
    words = getattr(dataset, "base_words", None)
    by_word = {} if words is None else {str(w): i for i, w in enumerate(words)}

    def lookup(t: Any) -> int | None:
        if isinstance(t, int | np.integer) and not isinstance(t, bool):
            return int(t)
        if isinstance(t, str):
            return by_word.get(t)
        return None

    return lookup


def ids_to_rows(ids: np.ndarray, dataset: Any = None, id_to_row: IdToRow = None) -> np.ndarray:
    """Dataset rows of an (n, k) array of engine ids; -1 for padding or unknown ids."""
    lookup = _row_lookup(dataset, id_to_row)
    ids = np.asarray(ids, dtype=object)
    out = np.full(ids.shape, -1, np.int64)
    for idx, t in np.ndenumerate(ids):
        if t is None:
            continue
        row = lookup(t)
        if row is not None:
            out[idx] = int(row)
    return out


#: recall@k by id intersection over dataset rows, divided by k: the benchmark's
#: ``recall`` (:func:`oluo_lab.metrics.recall_ids`).
recall_at_k = metrics.recall_ids


def answer_overlap(ids_a: np.ndarray, ids_b: np.ndarray, k: int) -> np.ndarray:
    """Per query, |a[:k] ∩ b[:k]| / k over caller ids (None padding ignored): the
    per-query values of :func:`oluo_lab.metrics.answer_overlap`."""
    return metrics.answer_overlap(ids_a, ids_b, k, per_query=True)


def resolve_engine(target: Any, progress: bool = False) -> tuple[Any, str]:
    """An engine and a label for it from an engine, a Lab (its head) or ``(lab, ref)``.

    A bare Snapshot is refused with a TypeError: it carries no store to load from.
    """
    from ..engine import OluoEngine
    from ..snapshot import Lab, Snapshot

    if isinstance(target, OluoEngine):
        return target, "engine"
    if isinstance(target, Lab):
        snap = target.resolve("HEAD")
        return target.checkout(snap, progress=progress), f"commit {snap.label}"
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], Lab):
        lab, ref = target
        snap = lab.resolve(ref)
        return lab.checkout(snap, progress=progress), f"commit {snap.label}"
    if isinstance(target, Snapshot):
        raise TypeError(
            f"a Snapshot (generation {target.generation}) has no store to load from; "
            "pass (lab, snapshot) instead"
        )
    raise TypeError(
        f"expected an OluoEngine, a Lab or a (lab, ref) pair, not {type(target).__name__}"
    )


def engine_recall(
    engine: Any,
    dataset: Any,
    k: int = 10,
    ef_search: int | None = None,
    id_to_row: IdToRow = None,
) -> float:
    """recall@k of ``engine`` on ``dataset.queries`` against ``dataset.ground_truth(k)``,
    searched with ``ef_search`` (default: the engine's)."""
    res = engine.search(dataset.queries, k=k, ef_search=ef_search)
    rows = ids_to_rows(res.ids, dataset, id_to_row)
    return recall_at_k(rows, dataset.ground_truth(k), k)
