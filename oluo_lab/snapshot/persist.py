"""The persistence API: ``persist_snapshot``, ``load_snapshot`` and ``restore_engine``.

Snapshot layer: joins the CAS (``oluo_lab.cas``) and the engine (``oluo_lab.engine``).
A persist turns one compaction's payloads into a new head generation; a load rebuilds
the engine of the head generation. Each data-directory file has its own owner module:
the head file :mod:`.head`, the refs log :mod:`.refs_log`, the base cache
:mod:`.base_cache`, the lock and atomic writes :mod:`.durable`.

Order of a persist: store the index bytes through the index codec (sections and
neighbour patches against the parent generation), DAG-ingest the metadata bytes,
put the manifest book (one CAS batch: all durable in a ``DirStore`` when it
ends), publish the base file (written and fsynced on a thread meanwhile, renamed
now), append the refs log, write the head. A crash at any point leaves the
previous head loadable. A load maps the engine's base from the base file once it
has checked (or rewritten) it against the verified index bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._faults import fault_point
from .._progress import progress_bar
from ..cas import CHUNK_PARAMS, CID, FINE_CHUNK_PARAMS, FINE_FANOUT, BookStore, ingest, reassemble
from ..engine import DEFAULT_COMPACT_THRESHOLD, OluoEngine, decode_metadata
from ..engine.metadata import read_metadata_header
from . import refs_log
from .base_cache import BASE_NAME, base_holds, start_base_write, write_base_if_changed
from .branches import DEFAULT_BRANCH
from .durable import (
    BackgroundWrite,
    data_dir_lock,
    require_writable,
    sweep_temp_files,
    writable,
)
from .errors import (
    EngineRestoreError,
    HeadRegression,
    ManifestSerde,
    MetadataDeserialize,
    PersistIOError,
)
from .head import HEAD_NAME, Head, read_head, write_head
from .index_codec import decode_index, encode_index, read_index_record
from .manifest import (
    SnapshotManifest,
    canonical_value,
    check_note,
    fetch_manifest,
    parent_admits,
)
from .origins import remember

__all__ = [
    "describe_metadata",
    "encode_index_against",
    "load_snapshot",
    "persist_snapshot",
    "restore_engine",
]


def ingest_metadata(metadata_bytes: Any, store: BookStore) -> CID:
    """Store an engine metadata payload as a *fine* blob (docs/FORMAT.md §1): a delete
    changes the entry table in many scattered places, so small chunks and small bundles
    keep the bytes a delete adds close to the rows it removes. Every writer of metadata
    (``persist_snapshot``, ``Lab.commit``) and the lab's unchanged-metadata check use it."""
    return ingest(metadata_bytes, store, params=FINE_CHUNK_PARAMS, fanout=FINE_FANOUT)


def _as_dir(data_dir: Path | str) -> Path:
    path = Path(data_dir)
    if not path.exists():
        raise PersistIOError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise PersistIOError(f"data directory {path} is not a directory")
    return path


def describe_metadata(metadata_bytes: bytes) -> tuple[dict[str, Any], int]:
    """Index config and entry count for the manifest, from the metadata header only
    (the columns are validated when the snapshot is loaded or verified)."""
    try:
        header = read_metadata_header(metadata_bytes)
    except Exception as exc:  # the engine's decoder names its own failure
        raise MetadataDeserialize(f"metadata payload does not decode: {exc}") from exc
    return dict(header.config), header.entries


def persist_snapshot(
    data_dir: Path | str,
    store: BookStore,
    index_bytes: bytes,
    metadata_bytes: bytes,
    key_counter: int,
    generation: int,
    *,
    note: str = "",
    annotations: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Path, int]:
    """Persist one compaction's payloads as a new head generation.

    Returns ``(base_path, generation)``; the caller then sends
    ``CompactComplete(base_path, generation)`` to the engine. The parent of the
    new manifest is the current head. Raises :class:`HeadRegression` when
    ``generation`` is not above the head's (re-persisting exactly the head's
    content is an idempotent no-op), and leaves every existing file untouched
    on any error. ``progress``: a ``tqdm.auto`` bar over the five steps (index,
    metadata, manifest, base, head), shown after half a second.

    Concurrency: the data-directory lock is held during this call only. If another
    writer persists to the same directory before the caller's ``CompactComplete``,
    ``base_path`` may already hold that writer's bytes; the engine then refuses the
    file (its blake3 must equal the engine's base, ``CompactCompleteFailed``) and
    keeps its in-memory base, so nothing is mapped wrongly. A mapped base is never
    affected by a later replacement (files are only renamed over, never rewritten).
    :meth:`Lab.commit` persists and maps under one lock.
    """
    data_dir = _as_dir(data_dir)
    require_writable(data_dir, "persist a snapshot")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ManifestSerde(f"generation must be a non-negative int, got {generation!r}")
    check_note(note, annotations if not isinstance(annotations, dict) else {})
    if annotations is not None:  # numpy scalars and tuples, as notebooks produce them
        annotations = canonical_value(annotations, "annotations")
    index_config, entries = describe_metadata(metadata_bytes)
    with (
        progress_bar(progress, total=5, desc="persist", unit="step") as bar,
        data_dir_lock(data_dir),
    ):
        sweep_temp_files(data_dir)
        base_path = data_dir / BASE_NAME
        # the base cache is written (and fsynced) on a thread while the CAS work runs;
        # it is renamed into place at its usual step, after the manifest is durable
        base = start_base_write(base_path, index_bytes)
        try:
            return _persist_locked(
                data_dir,
                store,
                index_bytes,
                metadata_bytes,
                key_counter,
                generation,
                note,
                annotations,
                index_config,
                entries,
                base,
                bar,
            )
        finally:
            base.abort()


def _persist_locked(
    data_dir: Path,
    store: BookStore,
    index_bytes: bytes,
    metadata_bytes: bytes,
    key_counter: int,
    generation: int,
    note: str,
    annotations: dict[str, Any] | None,
    index_config: dict[str, Any],
    entries: int,
    base: BackgroundWrite,
    bar: Any,
) -> tuple[Path, int]:
    head = read_head(data_dir)
    parent: CID | None = None
    index_parent: CID | None = None
    if head is not None:
        head_manifest = fetch_manifest(store, head.cid, "head manifest")
        current = head_manifest.compact_generation
        parent = head.cid if generation > current else head_manifest.parent
        if generation < current:
            raise HeadRegression(current, generation)
        if parent is not None:
            parent_manifest = (
                head_manifest if parent == head.cid else fetch_manifest(store, parent, "parent")
            )
            index_parent = parent_manifest.index_cid
    # One CAS batch for both payloads and the manifest: one durability barrier (instead of
    # one per DAG) and the books are durable when the block exits, before the head moves.
    with store.batch():
        index_cid = encode_index_against(index_bytes, store, index_parent)
        fault_point("persist.index_encoded")
        bar.update(1)
        metadata_cid = ingest_metadata(metadata_bytes, store)
        fault_point("persist.metadata_ingested")
        bar.update(1)
        manifest = SnapshotManifest(
            index_cid=index_cid,
            metadata_cid=metadata_cid,
            key_counter=key_counter,
            compact_generation=generation,
            parent=parent,
            index_config=index_config,
            chunker=dataclasses.asdict(CHUNK_PARAMS),
            entries=entries,
            index_size=len(index_bytes),
            metadata_size=len(metadata_bytes),
            note=note,
            annotations=dict(annotations or {}),
        )
        manifest_bytes = manifest.to_bytes()
        if (
            head is not None
            and generation == head_manifest.compact_generation
            and CID.for_book(manifest_bytes) != head.cid
        ):
            raise HeadRegression(head_manifest.compact_generation, generation)
        manifest_cid = store.put(manifest_bytes)
    fault_point("persist.manifest_put")
    bar.update(1)
    base.commit()
    fault_point("persist.base_written")
    bar.update(1)
    new_head = Head(manifest_cid, generation)
    if head is None or head.cid != manifest_cid:
        refs_log.record_head_move(data_dir, "persist", manifest_cid, generation, parent)
        fault_point("persist.refs_logged")
        write_head(data_dir, new_head)
        fault_point("persist.head_written")
    bar.update(1)
    return base.path, generation


def encode_index_against(index_bytes: bytes, store: BookStore, index_parent: CID | None) -> CID:
    """Store the index through the codec (docs/FORMAT.md §3.3), as a patch against the
    parent generation's index when that is still in the store, else in full."""
    if index_parent is not None and not store.has(index_parent):
        index_parent = None
    return encode_index(index_bytes, store, index_parent)


def load_snapshot(
    data_dir: Path | str,
    store: BookStore,
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
    *,
    progress: bool = True,
) -> tuple[OluoEngine, Path, int] | None:
    """Restore the head generation; ``None`` when the directory has no head.

    Every book read is hash-verified; the head manifest's parent link is
    checked. The base cache is rewritten only when it does not already hold
    the head's index bytes. ``progress``: a ``tqdm.auto`` bar over the steps
    (manifests, payloads and engine, base cache), shown after half a second.
    """
    with progress_bar(progress, total=3, desc="load", unit="step") as bar:
        return _load_snapshot(Path(data_dir), store, compact_threshold, bar)


def _load_snapshot(
    data_dir: Path, store: BookStore, compact_threshold: int, bar: Any
) -> tuple[OluoEngine, Path, int] | None:
    data_dir = _as_dir(data_dir)
    head = read_head(data_dir)
    if head is None:
        return None
    manifest = fetch_manifest(store, head.cid, "head manifest")
    if head.generation >= 0 and head.generation != manifest.compact_generation:
        raise ManifestSerde(
            f"{data_dir / HEAD_NAME} says generation {head.generation} but manifest {head.cid} "
            f"is generation {manifest.compact_generation}"
        )
    if manifest.parent is not None:
        parent = fetch_manifest(store, manifest.parent, f"parent of manifest {head.cid}")
        if not parent_admits(parent, manifest):
            raise ManifestSerde(
                f"manifest {head.cid}: parent {manifest.parent} has generation "
                f"{parent.compact_generation}, not below {manifest.compact_generation} "
                "(equal only for a commit of the same engine state)"
            )
    bar.update(1)
    index_bytes, digest, decoded = _restore_parts(store, manifest, False)
    bar.update(1)
    base_path = data_dir / BASE_NAME
    if writable(data_dir):
        with data_dir_lock(data_dir):
            sweep_temp_files(data_dir)
            write_base_if_changed(base_path, index_bytes)
            # the base file now holds exactly the verified index bytes (checked or written
            # under the lock): the engine maps its vectors from it instead of copying them
            engine = _engine_of(
                manifest, index_bytes, digest, decoded, compact_threshold, base_path
            )
    else:  # a lab this process cannot write: map the base only if it holds these bytes
        with data_dir_lock(data_dir, shared=True):
            mapped = base_path if base_holds(base_path, index_bytes) else None
            engine = _engine_of(manifest, index_bytes, digest, decoded, compact_threshold, mapped)
    remember(engine, data_dir, head.cid, DEFAULT_BRANCH)  # a Lab commit of it extends main
    bar.update(1)
    return engine, base_path, manifest.compact_generation


def _metadata_of(store: BookStore, manifest: SnapshotManifest, check_entries: bool) -> Any:
    """Reassemble and decode a manifest's metadata payload (errors as restore_engine's)."""
    metadata_bytes = reassemble(manifest.metadata_cid, store)
    if len(metadata_bytes) != manifest.metadata_size:
        raise ManifestSerde(f"manifest sizes disagree with the payloads it names ({manifest!r})")
    try:
        decoded = decode_metadata(metadata_bytes)
        if check_entries:
            decoded.check_entries()
    except Exception as exc:
        raise MetadataDeserialize(
            f"metadata {manifest.metadata_cid} does not decode: {exc}"
        ) from exc
    return decoded


def _restore_parts(
    store: BookStore, manifest: SnapshotManifest, check_entries: bool
) -> tuple[bytes, bytes, Any]:
    """The verified index bytes, their blake3 digest and the decoded metadata."""
    # One after the other: decoding the metadata (GIL-bound CBOR work) beside the index
    # reads made each page's blake3, which lets go of the GIL, wait to get it back
    # (measured at 400k: load 0.43-0.47 s serial, 0.47-0.57 s on two threads).
    index_bytes = decode_index(manifest.index_cid, store)
    if len(index_bytes) != manifest.index_size:
        raise ManifestSerde(f"manifest sizes disagree with the payloads it names ({manifest!r})")
    decoded = _metadata_of(store, manifest, check_entries)
    # decode_index checked the bytes against this digest: the engine need not hash them
    digest = read_index_record(manifest.index_cid, store).digest
    return index_bytes, digest, decoded


def _engine_of(
    manifest: SnapshotManifest,
    index_bytes: bytes,
    digest: bytes,
    decoded: Any,
    compact_threshold: int,
    base_path: Path | None = None,
) -> OluoEngine:
    try:
        return OluoEngine.from_snapshot(
            index_bytes,
            decoded,
            manifest.key_counter,
            manifest.compact_generation,
            compact_threshold,
            index_digest=digest,
            base_path=None if base_path is None else str(base_path),
        )
    except Exception as exc:
        raise EngineRestoreError(f"engine restore from {manifest.index_cid} failed: {exc}") from exc


def restore_engine(
    store: BookStore,
    manifest: SnapshotManifest,
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
    *,
    check_entries: bool = False,
) -> tuple[OluoEngine, bytes]:
    """Reassemble a manifest's payloads and rebuild the engine from them.

    The metadata columns are always validated; ``check_entries`` also decodes every
    entry's caller metadata now (``Lab.verify``) instead of on first access."""
    index_bytes, digest, decoded = _restore_parts(store, manifest, check_entries)
    return _engine_of(manifest, index_bytes, digest, decoded, compact_threshold), index_bytes
