"""Snapshots: persist/load engine generations into the CAS, with history.

The snapshot layer joins ``oluo_lab.cas`` and ``oluo_lab.engine``; neither of them
imports this. Its modules, by job:

* formats: :mod:`.manifest` (the manifest book), :mod:`.index_codec` (index records);
* data-directory files, one owner each: :mod:`.head` (``oluo_head.json``, the head of
  ``main``), :mod:`.branches` (``oluo_branches.json``, the other branches),
  :mod:`.refs_log` (``oluo_refs.log``, also the commit log), :mod:`.base_cache`
  (``oluo_base.bin``), :mod:`.tags` (``oluo_tags.json``), :mod:`.durable` (the lock,
  atomic writes);
* refs: :mod:`.refs` (the :class:`RefStore` seam and its local implementation),
  :mod:`.objrefs` (refs as create-only numbered objects on an object store),
  :mod:`.catalog` (reading commits, the ref grammar), :mod:`.origins` (which commit an
  engine came from);
* operations: :mod:`.persist` (persist/load), :mod:`.commit` (a Lab commit's writes),
  :mod:`.evaluation` (recall recorded at commit), :mod:`.history` (walking
  generations), :mod:`.diff`, :mod:`.verify`, :mod:`.gc`, :mod:`.sweep`;
* the notebook workspace :mod:`.lab`, its tables :mod:`.runs` and result objects
  :mod:`.reports`.
"""

from .base_cache import BASE_NAME
from .branches import BRANCHES_NAME, DEFAULT_BRANCH
from .durable import atomic_write, data_dir_lock, sweep_temp_files
from .errors import (
    AmbiguousRef,
    BadRefName,
    CommitPruned,
    EngineRestoreError,
    HeadMoved,
    HeadRegression,
    IndexCodecError,
    LockTimeout,
    ManifestSerde,
    MetadataDeserialize,
    NotALab,
    OluoPersistError,
    ParamConflict,
    PersistIOError,
    ReadOnlyLab,
    RefExists,
    SnapshotNotFound,
    UnknownRef,
    UnsafeObjectStore,
    UnsupportedVersion,
)
from .evaluation import EvalSpec
from .gc import GcPlan, plan_gc
from .head import HEAD_NAME, Head, read_head
from .lab import Lab, Snapshot, is_lab
from .manifest import MANIFEST_VERSION, SnapshotManifest, fetch_manifest
from .objrefs import ObjectRefs
from .persist import load_snapshot, persist_snapshot, restore_engine
from .refs import LocalRefs, RefStore
from .refs_log import REFS_LOG_NAME
from .reports import GcReport, ManifestDiff, Problem, SemanticDiff, VerifyReport
from .tags import TAGS_NAME

__all__ = [
    "BASE_NAME",
    "BRANCHES_NAME",
    "DEFAULT_BRANCH",
    "HEAD_NAME",
    "MANIFEST_VERSION",
    "REFS_LOG_NAME",
    "TAGS_NAME",
    "AmbiguousRef",
    "BadRefName",
    "CommitPruned",
    "EngineRestoreError",
    "EvalSpec",
    "GcPlan",
    "GcReport",
    "Head",
    "HeadMoved",
    "HeadRegression",
    "IndexCodecError",
    "Lab",
    "LocalRefs",
    "LockTimeout",
    "ManifestDiff",
    "ManifestSerde",
    "MetadataDeserialize",
    "NotALab",
    "ObjectRefs",
    "OluoPersistError",
    "ParamConflict",
    "PersistIOError",
    "Problem",
    "ReadOnlyLab",
    "RefExists",
    "RefStore",
    "SemanticDiff",
    "Snapshot",
    "SnapshotManifest",
    "SnapshotNotFound",
    "UnknownRef",
    "UnsafeObjectStore",
    "UnsupportedVersion",
    "VerifyReport",
    "atomic_write",
    "data_dir_lock",
    "fetch_manifest",
    "is_lab",
    "load_snapshot",
    "persist_snapshot",
    "plan_gc",
    "read_head",
    "restore_engine",
    "sweep_temp_files",
]
