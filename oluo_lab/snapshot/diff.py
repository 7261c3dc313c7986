"""``Lab.diff``: what changed from one generation to another.

Snapshot layer: reads two generations' manifests and payloads (never writes). Four
levels of difference: manifest fields; books and bytes (shared, added, removed);
entries (ids added, removed, metadata or vector changed); and, optionally, the answers
on a fixed query set (recall@k of each side against its own exact answers and the
neighbour overlap between the sides). The query set is the caller's, else the held-out
queries recorded with either commit's evaluation, else (a fallback the result names)
a sample of ``a``'s own vectors, on which recall is close to 1 by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..cas import CID, ContentError, reassemble
from ..engine import decode_metadata
from ..metrics import answer_overlap, recall_ids
from .errors import OluoPersistError
from .evaluation import load_queries
from .history import generation_books
from .persist import restore_engine
from .reports import ManifestDiff, SemanticDiff

if TYPE_CHECKING:
    from ..engine import OluoEngine
    from .lab import Lab, Snapshot

__all__ = ["default_queries", "diff_snapshots", "semantic_diff"]

_DIFF_FIELDS = (
    "key_counter",
    "compact_generation",
    "entries",
    "index_size",
    "metadata_size",
    "index_config",
    "chunker",
    "note",
    "annotations",
    "params",
    "metrics",
    "evaluation",
    "index_digest",
    "version",
    "index_cid",
    "metadata_cid",
    "parent",
)


def _show(value: Any) -> Any:
    if isinstance(value, CID):
        return value.short
    if isinstance(value, bytes):
        return value.hex()[:16]
    if isinstance(value, dict) and "recall" in value and "queries" in value:
        k = value.get("k")
        return {f"recall@{k} ef_search={ef}": round(float(r), 4) for ef, r in value["recall"]}
    return value


def default_queries(engine: OluoEngine, n: int = 100) -> np.ndarray:
    """A fixed, deterministic query set: every ⌈N/n⌉-th live vector in key order."""
    _, _, vectors = engine.live_vectors()
    if len(vectors) == 0:
        return vectors
    step = max(1, -(-len(vectors) // n))
    return np.ascontiguousarray(vectors[::step][:n])


def semantic_diff(
    ea: OluoEngine, eb: OluoEngine, queries: np.ndarray, k: int, source: str = ""
) -> SemanticDiff:
    """Recall of each side against its own exact answers, and the overlap of the two.

    Recall divides by each side's valid exact answers (``denominator="truth"``): a side
    with fewer than ``k`` live entries that finds them all scores 1."""
    ra, rb = ea.search(queries, k=k), eb.search(queries, k=k)
    ta, tb = ea.search(queries, k=k, exact=True), eb.search(queries, k=k, exact=True)
    return SemanticDiff(
        k=k,
        n_queries=len(queries),
        recall_a=recall_ids(ra.keys, ta.keys, k, denominator="truth"),
        recall_b=recall_ids(rb.keys, tb.keys, k, denominator="truth"),
        overlap=answer_overlap(ra.ids, rb.ids, k),
        source=source,
    )


def recorded_queries(lab: Lab, a: Snapshot, b: Snapshot) -> tuple[np.ndarray, int, str] | None:
    """The held-out queries recorded with ``a``'s evaluation, else ``b``'s: (queries, k,
    where they came from); None when neither has one still in the store."""
    for snap in (a, b):
        ev = snap.manifest.evaluation
        if not ev:
            continue
        try:
            q = load_queries(lab.store, CID.from_bytes(ev["queries"]))
        except (ContentError, OluoPersistError, ValueError, KeyError):
            continue
        return q, int(ev.get("k", 10)), f"the evaluation queries recorded with {snap.label}"
    return None


def diff_snapshots(
    lab: Lab,
    a: Snapshot,
    b: Snapshot,
    queries: Any = None,
    k: int | None = None,
    semantic: bool = True,
) -> ManifestDiff:
    """Field, byte, entry and (optionally) answer-level differences from ``a`` to ``b``."""
    store = lab.store
    ma, mb = a.manifest, b.manifest
    fields = {
        name: (_show(getattr(ma, name)), _show(getattr(mb, name)))
        for name in _DIFF_FIELDS
        if getattr(ma, name) != getattr(mb, name)
    }
    books_a = generation_books(store, a.cid, ma)
    books_b = generation_books(store, b.cid, mb)
    shared, added, removed = books_a & books_b, books_b - books_a, books_a - books_b

    meta_a = decode_metadata(reassemble(ma.metadata_cid, store)).entries
    meta_b = decode_metadata(reassemble(mb.metadata_cid, store)).entries
    # ids are listed in key order (insertion order), a's keys for removals, b's otherwise
    by_id_a = {meta_a[key].target: meta_a[key] for key in sorted(meta_a)}
    by_id_b = {meta_b[key].target: meta_b[key] for key in sorted(meta_b)}
    ids_added = tuple(t for t in by_id_b if t not in by_id_a)
    ids_removed = tuple(t for t in by_id_a if t not in by_id_b)
    common = [t for t in by_id_b if t in by_id_a]
    changed_meta = tuple(t for t in common if _entry_view(by_id_a[t]) != _entry_view(by_id_b[t]))

    changed_vec: tuple[Any, ...] = ()
    sem = None
    if semantic or queries is not None:
        ea, _ = restore_engine(store, ma, lab.compact_threshold)
        eb, _ = restore_engine(store, mb, lab.compact_threshold)
        changed_vec = _changed_vectors(ea, eb, common)
        recorded = recorded_queries(lab, a, b) if queries is None else None
        if queries is not None:
            q, kk, source = np.asarray(queries), 10 if k is None else int(k), "the queries given"
        elif recorded is not None:
            q, kk, source = recorded[0], recorded[1] if k is None else int(k), recorded[2]
        else:
            q, kk = default_queries(ea), 10 if k is None else int(k)
            source = (
                f"fallback: no recorded evaluation, so {len(q)} of {a.label}'s own vectors "
                "(recall is near 1 by construction; pass queries= or commit with evaluate=)"
            )
        if len(q):
            sem = semantic_diff(ea, eb, q, kk, source)
    return ManifestDiff(
        a=a.generation,
        b=b.generation,
        a_cid=a.cid.hex,
        b_cid=b.cid.hex,
        fields=fields,
        books_shared=len(shared),
        books_added=len(added),
        books_removed=len(removed),
        bytes_shared=sum(c.size for c in shared),
        bytes_added=sum(c.size for c in added),
        bytes_removed=sum(c.size for c in removed),
        ids_added=ids_added,
        ids_removed=ids_removed,
        ids_changed_metadata=changed_meta,
        ids_changed_vector=changed_vec,
        semantic=sem,
        a_label=a.label,
        b_label=b.label,
    )


def _entry_view(entry: Any) -> tuple:
    """What counts as an entry's metadata for a diff (everything but its key)."""
    return (
        entry.scope,
        entry.privacy_tier,
        entry.expires_at,
        entry.ingested_at_ms,
        tuple(entry.overlays),
        repr(sorted(entry.metadata.items(), key=lambda kv: kv[0])),
    )


def _changed_vectors(ea: OluoEngine, eb: OluoEngine, common: list[Any]) -> tuple[Any, ...]:
    _, ids_a, va = ea.live_vectors()
    _, ids_b, vb = eb.live_vectors()
    row_a = {t: i for i, t in enumerate(ids_a)}
    row_b = {t: i for i, t in enumerate(ids_b)}
    if not common:
        return ()
    ia = np.fromiter((row_a[t] for t in common), np.int64, len(common))
    ib = np.fromiter((row_b[t] for t in common), np.int64, len(common))
    differ = np.any(va[ia] != vb[ib], axis=1)
    return tuple(t for t, d in zip(common, differ.tolist(), strict=True) if d)
