"""The write path of ``Lab.commit``: payloads, manifest, commit log, branch ref.

Snapshot layer. Order, all under the refs store's lock (``data_dir_lock`` locally, so a
concurrent gc cannot sweep the new books before a ref names them): store the index
through the index codec (or reuse the parent's record when the index is unchanged) and
the metadata DAG, the evaluation's queries and ground truth, then the manifest (one CAS
batch, durable when it ends); for ``main``, publish the base cache; re-read the branch
head and let the caller check the commit still extends it; append the commit record
(its number, time and timings) to the commit log; compare-and-set the branch ref (the
head file for ``main``, the branches file otherwise). Moving the ref is the commit
point: a crash before it leaves the previous head and only unreachable books (and at
most a log record of a commit that never landed, which nothing shows).

On an object store (no lock, no base cache) the books a two-phase gc may be collecting
are stored again before the ref moves, and the ref moves *before* the log record is
written: a commit that loses the race for its ref (another writer claimed the number
first) leaves no record and gets :class:`HeadMoved` naming the winner; with ``retries``
it is tried again on top of the winner while it still extends the branch. A crash
between the ref and the record leaves a commit without a number (shown by its id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from .._faults import fault_point
from ..cas import CHUNK_PARAMS, CID, BookStore
from ..engine import PersistSnapshot
from . import refs_log
from .base_cache import BASE_NAME, start_base_write
from .branches import DEFAULT_BRANCH
from .durable import sweep_temp_files
from .errors import HeadMoved
from .evaluation import Evaluation, store_blobs
from .head import Head
from .history import revive_history
from .manifest import COMMIT_MANIFEST_VERSION, SnapshotManifest
from .persist import encode_index_against, ingest_metadata
from .refs import RefStore

__all__ = ["CommitPlan", "index_digest_of", "write_commit"]


def index_digest_of(index_bytes: bytes) -> bytes:
    """The content identity of an index: blake3-256 of its bytes (what the index record's
    ``blake3`` field holds, and the manifest's ``index_digest``)."""
    return blake3.blake3(index_bytes, max_threads=blake3.blake3.AUTO).digest()


@dataclass(frozen=True)
class CommitPlan:
    """Everything a commit writes, decided before the lock is taken.

    ``index_cid`` / ``metadata_cid``: the parent's index record / metadata DAG when
    they hold exactly the payload's bytes (a commit that changes only its note, params,
    metrics or evaluation; or an index no compaction changed) and gc has not retired
    them: they are named again instead of stored anew. ``index_parent``: the record the
    index is otherwise stored as a patch against.
    """

    branch: str
    parent_cid: CID | None
    payload: PersistSnapshot
    digest: bytes
    index_cid: CID | None
    metadata_cid: CID | None
    index_parent: CID | None
    note: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    evaluation: Evaluation | None


@dataclass(frozen=True)
class Written:
    """A landed commit: its manifest, number, and whether the ref already named it."""

    cid: CID
    manifest: SnapshotManifest
    seq: int | None
    existed: bool


def _payload_cids(store: BookStore, plan: CommitPlan, bar: Any) -> tuple[CID, CID]:
    payload = plan.payload
    if plan.index_cid is not None and store.reusable(plan.index_cid):
        index_cid = plan.index_cid  # the same index content: the same record names it
    else:
        index_cid = encode_index_against(payload.index_bytes, store, plan.index_parent)
    fault_point("persist.index_encoded")
    bar.update(1)
    if plan.metadata_cid is not None and store.reusable(plan.metadata_cid):
        metadata_cid = plan.metadata_cid
    else:
        metadata_cid = ingest_metadata(payload.metadata_bytes, store)
    fault_point("persist.metadata_ingested")
    bar.update(1)
    return index_cid, metadata_cid


def write_commit(
    refs: RefStore,
    store: BookStore,
    plan: CommitPlan,
    index_config: Mapping[str, Any],
    entries: int,
    check_head: Callable[[Head | None, CID], CID | None],
    bar: Any,
    *,
    data_dir: Path | None = None,
    retries: int = 0,
) -> Written:
    """Write ``plan`` and move its branch (see the module docstring). ``check_head(found,
    new)`` runs under the lock with the branch head found there and the new commit's CID;
    it returns the head to compare-and-set against, or raises ``HeadMoved``.

    ``data_dir``: a local lab's directory (its temp files are swept and, for ``main``,
    its base cache is published); None for a lab on an object store. ``retries``: how
    often a commit that lost the race for its branch ref to another writer (an object
    store) is tried again on top of the winner, as long as ``check_head`` accepts it."""
    refs.check_writable()
    is_main = plan.branch == DEFAULT_BRANCH
    payload = plan.payload
    with refs.locked():
        base = None
        if data_dir is not None:
            sweep_temp_files(data_dir)
            if is_main:
                base = start_base_write(data_dir / BASE_NAME, payload.index_bytes)
        try:
            with store.batch():
                index_cid, metadata_cid = _payload_cids(store, plan, bar)
                evaluation = None
                if plan.evaluation is not None:
                    store_blobs(store, plan.evaluation)
                    evaluation = plan.evaluation.record
                manifest = SnapshotManifest(
                    index_cid=index_cid,
                    metadata_cid=metadata_cid,
                    key_counter=payload.key_counter,
                    compact_generation=payload.generation,
                    parent=plan.parent_cid,
                    index_config=dict(index_config),
                    chunker=dataclasses.asdict(CHUNK_PARAMS),
                    entries=entries,
                    index_size=len(payload.index_bytes),
                    metadata_size=len(payload.metadata_bytes),
                    note=plan.note,
                    version=COMMIT_MANIFEST_VERSION,
                    index_digest=plan.digest,
                    params=dict(plan.params),
                    metrics=dict(plan.metrics),
                    evaluation=evaluation,
                )
                cid = store.put(manifest.to_bytes())
            fault_point("persist.manifest_put")
            bar.update(1)
            if base is not None:
                base.commit()
                fault_point("persist.base_written")
            if refs.records_after_move:  # no lock: a gc may be collecting what we reuse
                revive_history(store, cid, set(refs_log.retired_times(None, refs.records())))
            for attempt in range(retries + 1):
                try:
                    return _land(refs, plan, cid, manifest, check_head, bar)
                except HeadMoved as exc:
                    if not exc.raced or attempt == retries:
                        raise
            raise AssertionError("unreachable")
        finally:
            if base is not None:
                base.abort()


def _land(
    refs: RefStore,
    plan: CommitPlan,
    cid: CID,
    manifest: SnapshotManifest,
    check_head: Callable[[Head | None, CID], CID | None],
    bar: Any,
) -> Written:
    """Check the branch head, number the commit and move the ref (in the refs store's
    order: log record first under a local lab's lock, ref first on an object store)."""
    generation = plan.payload.generation
    found = refs.read_ref(plan.branch)
    numbered, _ = refs_log.commits(refs.records())
    known = numbered.get(cid)
    if found is not None and found.cid == cid:
        return Written(cid, manifest, None if known is None else known.seq, True)
    expected = check_head(found, cid)
    if known is not None:  # the same commit, already numbered: only the ref moves
        record = refs_log.branch_record(plan.branch, cid, expected)
    else:
        timings = {} if plan.evaluation is None else plan.evaluation.timings
        record = refs_log.commit_record(
            plan.branch, cid, generation, plan.parent_cid, expected, timings
        )
    new = Head(cid, generation)

    def move() -> None:
        refs.compare_and_set(plan.branch, expected, new)
        if plan.branch == DEFAULT_BRANCH:
            fault_point("persist.head_written")

    def log() -> int:
        if known is not None:
            refs.log_event(record)
            seq = known.seq
        else:
            seq = refs.log_commit(record)
        fault_point("persist.refs_logged")
        return seq

    # in the refs store's order (RefStore.records_after_move)
    if refs.records_after_move:
        move()
        seq = log()
    else:
        seq = log()
        move()
    bar.update(1)
    return Written(cid, manifest, seq, False)
