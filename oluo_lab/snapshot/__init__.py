"""Snapshots: persist/load engine generations into the CAS, with history.

Joins ``oluo_lab.cas`` and ``oluo_lab.engine``; neither of them imports this.
"""

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
from .lab import Lab, Snapshot
from .manifest import MANIFEST_VERSION, SnapshotManifest
from .persist import (
    BASE_NAME,
    HEAD_NAME,
    REFS_LOG_NAME,
    Head,
    fetch_manifest,
    load_snapshot,
    persist_snapshot,
    read_head,
    restore_engine,
)
from .reports import GcReport, ManifestDiff, Problem, SemanticDiff, VerifyReport

__all__ = [
    "BASE_NAME",
    "HEAD_NAME",
    "MANIFEST_VERSION",
    "REFS_LOG_NAME",
    "EngineRestoreError",
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
    "read_head",
    "restore_engine",
    "sweep_temp_files",
]
