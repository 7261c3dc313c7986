"""The seed API: ``persist_snapshot`` and ``load_snapshot`` (upstream §3, fixed).

Files in ``data_dir``:

* ``oluo_head.json`` — canonical JSON naming the current manifest CID and its
  generation; written last, atomically and durably.
* ``oluo_base.bin`` — the raw index bytes of the head, a local cache for
  memory-mapping (derivable from the CAS, never the source of truth).
* ``oluo.lock`` — the advisory lock held across a whole persist.
* ``oluo_refs.log`` — an append-only local log of every head move, with wall
  times (kept outside the content-addressed data).

Order of a persist: store the index bytes through the index codec (sections and
neighbour patches against the parent generation), DAG-ingest the metadata bytes,
put the manifest book (one CAS batch: all durable in a ``DirStore`` when it
ends), publish the base file (written and fsynced on a thread meanwhile, renamed
now), append the refs log, write the head. A crash at any point leaves the
previous head loadable. A load maps the engine's base from the base file once it
has checked (or rewritten) it against the verified index bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._faults import fault_point
from .._progress import progress_bar
from ..cas import CHUNK_PARAMS, CID, BookNotFound, BookStore, ingest, reassemble
from ..engine import OluoEngine, decode_metadata
from ..engine.metadata import read_metadata_header
from .durable import BackgroundWrite, atomic_write, data_dir_lock, fsync_dir, sweep_temp_files
from .errors import (
    EngineRestoreError,
    HeadRegression,
    ManifestSerde,
    MetadataDeserialize,
    PersistIOError,
    SnapshotNotFound,
    UnsupportedVersion,
)
from .index_codec import decode_index, encode_index, read_index_record
from .manifest import SnapshotManifest, check_annotations

HEAD_NAME = "oluo_head.json"
BASE_NAME = "oluo_base.bin"
REFS_LOG_NAME = "oluo_refs.log"
HEAD_VERSION = 1

__all__ = [
    "BASE_NAME",
    "HEAD_NAME",
    "REFS_LOG_NAME",
    "Head",
    "fetch_manifest",
    "load_snapshot",
    "persist_snapshot",
    "read_head",
]


@dataclass(frozen=True)
class Head:
    """The decoded head file."""

    cid: CID
    generation: int

    def to_bytes(self) -> bytes:
        doc = {"generation": self.generation, "head": self.cid.hex, "version": HEAD_VERSION}
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _as_dir(data_dir: Path | str) -> Path:
    path = Path(data_dir)
    if not path.exists():
        raise PersistIOError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise PersistIOError(f"data directory {path} is not a directory")
    return path


def read_head(data_dir: Path | str) -> Head | None:
    """Read and validate ``oluo_head.json``; ``None`` when there is none (a fresh start)."""
    path = Path(data_dir) / HEAD_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PersistIOError(f"cannot read {path}", exc) from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestSerde(
            f"{path} is not valid JSON ({exc}); recover with Lab(...).repair_head()"
        ) from exc
    if not isinstance(doc, dict):
        raise ManifestSerde(f"{path}: expected a JSON object, got {type(doc).__name__}")
    if "version" not in doc:
        raise ManifestSerde(f"{path}: no 'version' field")
    if doc["version"] != HEAD_VERSION:
        raise UnsupportedVersion(doc["version"], "head")
    text = doc.get("head")
    if not isinstance(text, str):
        raise ManifestSerde(f"{path}: 'head' must be a CID string")
    try:
        cid = CID.parse(text)
    except ValueError as exc:
        raise ManifestSerde(f"{path}: 'head' is not a valid CID: {exc}") from exc
    generation = doc.get("generation")
    if generation is None:
        generation = -1  # an upstream-style head without a generation: learnt from the manifest
    elif not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ManifestSerde(f"{path}: 'generation' must be a non-negative int, got {generation!r}")
    return Head(cid, generation)


def fetch_manifest(store: BookStore, cid: CID, role: str = "manifest") -> SnapshotManifest:
    """Fetch (hash-verified) and decode a manifest; a missing book is :class:`SnapshotNotFound`."""
    try:
        raw = store.get(cid)
    except BookNotFound as exc:
        raise SnapshotNotFound(cid.hex, f"{role} is not in the store") from exc
    return SnapshotManifest.from_bytes(raw, cid)


def _append_refs_log(data_dir: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path = data_dir / REFS_LOG_NAME
    try:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(data_dir)
    except OSError as exc:
        raise PersistIOError(f"cannot append to {path}", exc) from exc


def _now_text() -> str:
    """Wall time for the local refs log (never in content-addressed data)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _describe_metadata(metadata_bytes: bytes) -> tuple[dict[str, Any], int]:
    """Index config and entry count for the manifest, from the metadata header only
    (the columns are validated when the snapshot is loaded or verified)."""
    try:
        header = read_metadata_header(metadata_bytes)
    except Exception as exc:  # the engine's decoder names its own failure
        raise MetadataDeserialize(f"metadata payload does not decode: {exc}") from exc
    return dict(header.config), header.entries


def _check_note(note: Any, annotations: Any) -> None:
    """Refuse a note or annotations the manifest cannot hold *before* anything is written."""
    if not isinstance(note, str):
        raise ManifestSerde(f"manifest note must be str, got {type(note).__name__}")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestSerde(f"annotations must be a dict, got {type(annotations).__name__}")
    check_annotations(dict(annotations or {}))


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
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ManifestSerde(f"generation must be a non-negative int, got {generation!r}")
    _check_note(note, annotations)
    index_config, entries = _describe_metadata(metadata_bytes)
    with (
        progress_bar(progress, total=5, desc="persist", unit="step") as bar,
        data_dir_lock(data_dir),
    ):
        sweep_temp_files(data_dir)
        base_path = data_dir / BASE_NAME
        # the base cache is written (and fsynced) on a thread while the CAS work runs;
        # it is renamed into place at its usual step, after the manifest is durable
        base = BackgroundWrite(
            base_path, index_bytes, unchanged=lambda: _base_holds(base_path, index_bytes)
        )
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
        index_cid = _encode_index_against(index_bytes, store, index_parent)
        fault_point("persist.index_encoded")
        bar.update(1)
        metadata_cid = ingest(metadata_bytes, store)
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
        _append_refs_log(
            data_dir,
            {
                "op": "persist",
                "generation": generation,
                "head": manifest_cid.hex,
                "parent": None if parent is None else parent.hex,
                "time": _now_text(),
            },
        )
        fault_point("persist.refs_logged")
        atomic_write(data_dir / HEAD_NAME, new_head.to_bytes())
        fault_point("persist.head_written")
    bar.update(1)
    return base.path, generation


def _encode_index_against(index_bytes: bytes, store: BookStore, index_parent: CID | None) -> CID:
    """Store the index through the codec (docs/FORMAT.md 3.6), as a patch against the
    parent generation's index when that is still in the store, else in full."""
    if index_parent is not None and not store.has(index_parent):
        index_parent = None
    return encode_index(index_bytes, store, index_parent)


_COMPARE_PIECE = 1 << 22


def _base_holds(base_path: Path, index_bytes: bytes) -> bool:
    """Does the base cache hold exactly ``index_bytes``? (False when it is unreadable.)

    Compared in 4 MiB pieces read into one reused buffer (``bytearray ==`` a buffer is a
    memcmp): reading the whole file into a new ``bytes`` first cost 2.5x as much, mostly
    in page faults of the fresh allocation."""
    with contextlib.suppress(OSError), open(base_path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size != len(index_bytes):
            return False
        want = memoryview(index_bytes).cast("B")
        buf = bytearray(min(_COMPARE_PIECE, len(want)))
        pos = 0
        while pos < len(want):
            n = min(len(buf), len(want) - pos)
            if n != len(buf):
                buf = bytearray(n)
            if f.readinto(buf) != n or buf != want[pos : pos + n]:
                return False
            pos += n
        return f.read(1) == b""
    return False


def _write_base_if_changed(base_path: Path, index_bytes: bytes) -> bool:
    """Write the base cache unless it already holds exactly ``index_bytes``."""
    if _base_holds(base_path, index_bytes):
        return False
    atomic_write(base_path, index_bytes)
    return True


def load_snapshot(
    data_dir: Path | str,
    store: BookStore,
    compact_threshold: int = 1000,
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
        if parent.compact_generation >= manifest.compact_generation:
            raise ManifestSerde(
                f"manifest {head.cid}: parent {manifest.parent} has generation "
                f"{parent.compact_generation}, not below {manifest.compact_generation}"
            )
    bar.update(1)
    index_bytes, digest, decoded = _restore_parts(store, manifest, False)
    bar.update(1)
    base_path = data_dir / BASE_NAME
    with data_dir_lock(data_dir):
        sweep_temp_files(data_dir)
        _write_base_if_changed(base_path, index_bytes)
        # the base file now holds exactly the verified index bytes (checked or written
        # under the lock): the engine maps its vectors from it instead of copying them
        engine = _engine_of(manifest, index_bytes, digest, decoded, compact_threshold, base_path)
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
    # The metadata is reassembled and decoded (GIL-bound CBOR work) on a second thread
    # while this one waits for the index books (read, zstd and blake3 release the GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="oluo-load-meta") as pool:
        meta = pool.submit(_metadata_of, store, manifest, check_entries)
        index_bytes = decode_index(manifest.index_cid, store)
        if len(index_bytes) != manifest.index_size:
            raise ManifestSerde(
                f"manifest sizes disagree with the payloads it names ({manifest!r})"
            )
        decoded = meta.result()
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
    compact_threshold: int = 1000,
    *,
    check_entries: bool = False,
) -> tuple[OluoEngine, bytes]:
    """Reassemble a manifest's payloads and rebuild the engine from them.

    The metadata columns are always validated; ``check_entries`` also decodes every
    entry's caller metadata now (``Lab.verify``) instead of on first access."""
    index_bytes, digest, decoded = _restore_parts(store, manifest, check_entries)
    return _engine_of(manifest, index_bytes, digest, decoded, compact_threshold), index_bytes
