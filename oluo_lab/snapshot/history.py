"""Walking and accounting the history of generations.

A generation is a manifest book; its *books* are the manifest plus every book
of the DAGs it names. History is the chain of ``parent`` links from a head.
Snapshot layer: reads manifests and payload DAGs from the CAS, writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from ..cas import CID, BookStore, blob_info, open_blob, reassemble
from ..engine.metadata import read_metadata_header
from ..errors import OluoError
from .errors import SnapshotNotFound
from .index_codec import index_books
from .manifest import SnapshotManifest, fetch_manifest, parent_admits

__all__ = [
    "Generation",
    "evaluation_roots",
    "generation_books",
    "generation_holes",
    "payload_books",
    "payload_collected",
    "revive_history",
    "walk_history",
]

#: bytes read from the front of a metadata payload to find its header (config, counts)
_HEADER_READ = 1 << 14


@dataclass(frozen=True)
class Generation:
    """A manifest and its CID, as found in a history walk."""

    cid: CID
    manifest: SnapshotManifest

    @property
    def generation(self) -> int:
        return self.manifest.compact_generation


def walk_history(store: BookStore, head: CID, limit: int | None = None) -> Iterator[Generation]:
    """Yield generations from ``head`` back along parent links, newest first.

    Stops after ``limit`` generations. A missing parent manifest ends the walk
    with :class:`SnapshotNotFound` naming it; each parent must pass
    :func:`~oluo_lab.snapshot.manifest.parent_admits` (a lower engine generation, or the
    same engine state for a commit that changed only its note or params).
    """
    cid: CID | None = head
    seen = 0
    child: SnapshotManifest | None = None
    while cid is not None and (limit is None or seen < limit):
        manifest = fetch_manifest(store, cid, "manifest in the history")
        if child is not None and not parent_admits(manifest, child):
            raise SnapshotNotFound(
                cid.hex,
                f"history is not decreasing ({manifest.compact_generation} is the parent "
                f"of {child.compact_generation})",
            )
        yield Generation(cid, manifest)
        child = manifest
        cid = manifest.parent
        seen += 1


def payload_books(store: BookStore, root: CID) -> set[CID]:
    """Every book of one payload DAG (root, bundles and leaves) without reading leaves."""
    info = blob_info(root, store)
    return {root, *info.bundles, *info.leaves}


def payload_collected(store: BookStore, manifest: SnapshotManifest) -> bool:
    """True when neither payload root is in the store: gc retired this generation's data
    (``Lab.gc(keep_last=...)``) and only its manifest remains as history."""
    return not store.has(manifest.index_cid) and not store.has(manifest.metadata_cid)


def generation_books(
    store: BookStore,
    cid: CID,
    manifest: SnapshotManifest | None = None,
    retired: Collection[CID] = (),
) -> set[CID]:
    """The manifest book plus every book its payloads reach, and those of its recorded
    evaluation's query set and ground truth (just the manifest when the payloads were
    collected, or when ``cid`` is in ``retired``: gc recorded that it retires this
    generation's payloads, and a gc killed half-way may have deleted only some)."""
    if cid in retired:
        return {cid}
    if manifest is None:
        manifest = fetch_manifest(store, cid)
    if payload_collected(store, manifest):
        return {cid}
    books = (
        {cid} | index_books(manifest.index_cid, store) | payload_books(store, manifest.metadata_cid)
    )
    for root in evaluation_roots(manifest):
        books |= payload_books(store, root)
    return books


def revive_history(store: BookStore, cid: CID, retired: Collection[CID] = ()) -> int:
    """Before a ref names commit ``cid``: store again every book of it and of its kept
    history that a two-phase gc tombstoned (docs/FORMAT.md §4.4), so that gc's second
    phase, which may be running now, keeps them. Returns how many were stored again;
    nothing is read when the store holds no tombstones."""
    tombs = store.tombstoned()
    if not tombs:
        return 0
    books: set[CID] = set()
    for gen in walk_history(store, cid):
        books |= generation_books(store, gen.cid, gen.manifest, retired)
    return store.revive(books & tombs)


def evaluation_roots(manifest: SnapshotManifest) -> list[CID]:
    """The DAG roots a manifest's recorded evaluation names (query set, ground truth)."""
    ev = manifest.evaluation
    if not ev:
        return []
    roots = []
    for name in ("queries", "truth"):
        try:
            roots.append(CID.from_bytes(ev[name]))
        except (KeyError, TypeError, ValueError):
            continue
    return roots


def generation_holes(store: BookStore, manifest: SnapshotManifest) -> int | None:
    """Index positions of a generation that hold no entry (holes an in-place repair left),
    read from the front of its metadata payload (the header; a few KB). None when the
    payloads were collected or the header cannot be read (``verify`` reports why)."""
    if payload_collected(store, manifest):
        return None
    try:
        with open_blob(manifest.metadata_cid, store) as f:
            front = f.read(_HEADER_READ)
        try:
            return read_metadata_header(front).holes
        except OluoError:  # a header longer than the front, or a version 1 payload
            return read_metadata_header(reassemble(manifest.metadata_cid, store)).holes
    except OluoError:
        return None
