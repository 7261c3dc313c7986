"""Snapshots: persist/load engine generations into the CAS, with history.

The snapshot layer joins ``oluo_lab.cas`` and ``oluo_lab.engine``; neither of them
imports this. Its modules, by job:

* formats: :mod:`.manifest` (the manifest book), :mod:`.index_codec` (index records);
* data-directory files, one owner each: :mod:`.head` (``oluo_head.json``),
  :mod:`.refs_log` (``oluo_refs.log``), :mod:`.base_cache` (``oluo_base.bin``),
  :mod:`.tags` (``oluo_tags.json``), :mod:`.durable` (the lock, atomic writes);
* operations: :mod:`.persist` (persist/load), :mod:`.history` (walking generations),
  :mod:`.diff`, :mod:`.verify`, :mod:`.gc`;
* the notebook workspace :mod:`.lab` and its result objects :mod:`.reports`.
"""

from .base_cache import BASE_NAME
from .durable import atomic_write, data_dir_lock, sweep_temp_files
from .errors import (
    EngineRestoreError,
    HeadRegression,
    IndexCodecError,
    LockTimeout,
    ManifestSerde,
    MetadataDeserialize,
    OluoPersistError,
    PersistIOError,
    SnapshotNotFound,
    UnsupportedVersion,
)
from .gc import GcPlan, plan_gc
from .head import HEAD_NAME, Head, read_head
from .lab import Lab, Snapshot
from .manifest import MANIFEST_VERSION, SnapshotManifest, fetch_manifest
from .persist import load_snapshot, persist_snapshot, restore_engine
from .refs_log import REFS_LOG_NAME
from .reports import GcReport, ManifestDiff, Problem, SemanticDiff, VerifyReport
from .tags import TAGS_NAME

__all__ = [
    "BASE_NAME",
    "HEAD_NAME",
    "MANIFEST_VERSION",
    "REFS_LOG_NAME",
    "TAGS_NAME",
    "EngineRestoreError",
    "GcPlan",
    "GcReport",
    "Lab",
    "ManifestDiff",
    "Problem",
    "SemanticDiff",
    "Snapshot",
    "VerifyReport",
    "Head",
    "HeadRegression",
    "IndexCodecError",
    "LockTimeout",
    "ManifestSerde",
    "MetadataDeserialize",
    "OluoPersistError",
    "PersistIOError",
    "SnapshotManifest",
    "SnapshotNotFound",
    "UnsupportedVersion",
    "atomic_write",
    "data_dir_lock",
    "fetch_manifest",
    "load_snapshot",
    "persist_snapshot",
    "plan_gc",
    "read_head",
    "restore_engine",
    "sweep_temp_files",
]
