"""Test helpers that ship with the package, for notebooks and for pytest.

This module holds tolerance-aware assertions. Each raises ``AssertionError`` with a
message that says what was measured, against what threshold, on which data, so a
failing notebook cell explains itself.

``oluo_lab.testing.store`` holds ``StoreConformance``, the pytest suite every book store
must pass, so a store written outside this package can prove itself with the same
tests. It needs pytest, so it is imported only when named (``import oluo_lab`` does not
import pytest).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..metrics import answer_overlap
from ..notebook.metrics import IdToRow, engine_recall, resolve_engine

__all__ = ["assert_manifest_equal", "assert_recall", "assert_same_answers"]


def __getattr__(name: str) -> Any:
    # ``oluo_lab.testing.store`` imports pytest: load it only when it is asked for.
    if name == "store":
        import importlib

        return importlib.import_module(f"{__name__}.store")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def assert_recall(
    target: Any,
    dataset: Any,
    at_least: float,
    k: int = 10,
    ids: IdToRow = None,
    ef_search: int | None = None,
) -> float:
    """Assert recall@k of ``target`` on ``dataset`` is at least ``at_least``; returns it.

    ``target``: an OluoEngine, a Lab (its head) or a ``(lab, ref)`` pair (ref: generation,
    tag, CID or Snapshot). Recall is measured on ``dataset.queries`` against
    ``dataset.ground_truth(k)``; ``ids`` maps engine ids to dataset rows (a mapping or a
    callable; default: int ids are rows, str ids are looked up in ``dataset.base_words``);
    ``ef_search`` defaults to the engine's.
    """
    if not 0.0 <= at_least <= 1.0:
        raise ValueError(f"at_least must be within [0, 1], got {at_least!r}")
    engine, label = resolve_engine(target)
    recall = engine_recall(engine, dataset, k, ef_search, ids)
    if recall < at_least:
        name = getattr(dataset, "name", type(dataset).__name__)
        raise AssertionError(
            f"recall@{k} = {recall:.4f} < at_least {at_least:.4f} for {label} on dataset "
            f"{name!r} ({len(dataset.queries)} queries, "
            f"ef_search={ef_search if ef_search is not None else 'default'})"
        )
    return recall


def assert_same_answers(
    a: Any,
    b: Any,
    queries: Any,
    k: int = 10,
    min_overlap: float = 1.0,
    ef_search: int | None = None,
) -> float:
    """Assert two engines (or Labs / ``(lab, ref)`` pairs) answer ``queries`` alike: the
    mean over queries of |top-k ids of a ∩ top-k ids of b| / k is at least
    ``min_overlap``. Returns the mean overlap; the message lists the worst queries."""
    ea, la = resolve_engine(a)
    eb, lb = resolve_engine(b)
    q = np.asarray(queries)
    ra = ea.search(q, k=k, ef_search=ef_search)
    rb = eb.search(q, k=k, ef_search=ef_search)
    per_query = answer_overlap(ra.ids, rb.ids, k, per_query=True)
    mean = answer_overlap(ra.ids, rb.ids, k)
    if mean < min_overlap:
        worst = np.argsort(per_query, kind="stable")[:5]
        shown = ", ".join(f"query {int(i)}: {per_query[i]:.2f}" for i in worst)
        raise AssertionError(
            f"answers overlap {mean:.4f} < min_overlap {min_overlap:.4f} between {la} and {lb} "
            f"({len(per_query)} queries, k={k}); worst: {shown}"
        )
    return mean


def _manifest(x: Any) -> Any:
    from ..snapshot import Snapshot, SnapshotManifest

    if isinstance(x, Snapshot):
        return x.manifest
    if isinstance(x, SnapshotManifest):
        return x
    raise TypeError(f"expected a SnapshotManifest or Snapshot, not {type(x).__name__}")


def _show(v: Any) -> str:
    return v.short if hasattr(v, "short") and hasattr(v, "hex") else repr(v)


def assert_manifest_equal(
    a: Any, b: Any, ignore: Iterable[str] = ("note", "annotations", "params", "metrics")
) -> None:
    """Assert two SnapshotManifests (or Snapshots) agree field by field, except the
    fields named in ``ignore`` (by default what the user wrote: the note and the user's
    annotations, params and metrics); the message lists every differing field and both
    values."""
    ma, mb = _manifest(a), _manifest(b)
    ignored = set(ignore)
    names = [f.name for f in dataclasses.fields(ma)]
    unknown = ignored - set(names)
    if unknown:
        raise ValueError(f"ignore names unknown manifest fields {sorted(unknown)}; fields: {names}")
    diffs = [
        f"{name}: {_show(getattr(ma, name))} != {_show(getattr(mb, name))}"
        for name in names
        if name not in ignored and getattr(ma, name) != getattr(mb, name)
    ]
    if diffs:
        raise AssertionError(
            f"manifests differ in {len(diffs)} field(s) (ignoring {sorted(ignored)}): "
            + "; ".join(diffs)
        )
