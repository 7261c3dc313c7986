"""Walking and accounting the history of generations.

A generation is a manifest book; its *books* are the manifest plus every book
of the DAGs it names. History is the chain of ``parent`` links from a head.
Snapshot layer: reads manifests and payload DAGs from the CAS, writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from ..cas import CID, BookStore, blob_info
from .errors import SnapshotNotFound
from .index_codec import index_books
from .manifest import SnapshotManifest, fetch_manifest

__all__ = ["Generation", "generation_books", "payload_books", "payload_collected", "walk_history"]


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
    with :class:`SnapshotNotFound` naming it; generations must strictly decrease.
    """
    cid: CID | None = head
    seen = 0
    previous: int | None = None
    while cid is not None and (limit is None or seen < limit):
        manifest = fetch_manifest(store, cid, "manifest in the history")
        if previous is not None and manifest.compact_generation >= previous:
            raise SnapshotNotFound(
                cid.hex,
                f"history is not strictly decreasing ({manifest.compact_generation} after {previous})",
            )
        yield Generation(cid, manifest)
        previous = manifest.compact_generation
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
    """The manifest book plus every book its payloads reach (just the manifest when the
    payloads were collected, or when ``cid`` is in ``retired``: gc recorded that it retires
    this generation's payloads, and a gc killed half-way may have deleted only some)."""
    if cid in retired:
        return {cid}
    if manifest is None:
        manifest = fetch_manifest(store, cid)
    if payload_collected(store, manifest):
        return {cid}
    return (
        {cid} | index_books(manifest.index_cid, store) | payload_books(store, manifest.metadata_cid)
    )
