"""oluo_lab: ANN search experiments whose every index state is a content-addressed snapshot.

The public API is importable from here (``import oluo_lab as ol``). Layers: ``cas``
(content-addressed store) and ``engine`` (sans-I/O search) know nothing of each other;
``snapshot`` joins them; ``notebook`` and ``bench`` sit on top. Result comparisons
(recall, answer overlap, Pareto frontiers) live in ``oluo_lab.metrics``.

Errors: every exception the package raises derives from :class:`OluoError`; the tree is
drawn in :mod:`oluo_lab.errors`. ``ol.EngineError`` is *not* an exception but the
engine's error action (what ``handle()`` returns); catch ``ol.OluoEngineError`` (the
engine's exception root) or ``ol.OluoError``.
"""

from . import bench, datasets, metrics, notebook, testing
from .cas import (
    CID,
    BookNotFound,
    BookStore,
    ContentError,
    CorruptBook,
    DirStore,
    MemoryStore,
    ingest,
    iter_chunks,
    open_blob,
    reassemble,
)
from .engine import (
    CompactComplete,
    Delete,
    EngineError,
    EngineInputError,
    EngineRestoreFailed,
    EntryMetadata,
    EvictExpired,
    IndexFull,
    IndexLightweight,
    IndexUpdated,
    Ingest,
    OluoEngine,
    OluoEngineError,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
    Search,
    SearchResults,
)
from .errors import OluoError
from .notebook import (
    BenchExplorer,
    SearchExplorer,
    SnapshotBrowser,
    pareto_frontier,
    plot_latency,
    plot_recall_drift,
    plot_recall_qps,
    plot_storage,
)
from .snapshot import (
    EngineRestoreError,
    GcReport,
    HeadRegression,
    Lab,
    ManifestDiff,
    ManifestSerde,
    MetadataDeserialize,
    OluoPersistError,
    PersistIOError,
    Snapshot,
    SnapshotManifest,
    SnapshotNotFound,
    UnsupportedVersion,
    VerifyReport,
    load_snapshot,
    persist_snapshot,
)
from .testing import assert_manifest_equal, assert_recall, assert_same_answers

__version__ = "0.1.0"

__all__ = [
    "CID",
    "BenchExplorer",
    "BookNotFound",
    "BookStore",
    "CompactComplete",
    "ContentError",
    "CorruptBook",
    "Delete",
    "DirStore",
    "EngineError",
    "EngineInputError",
    "EngineRestoreError",
    "EngineRestoreFailed",
    "EntryMetadata",
    "EvictExpired",
    "GcReport",
    "HeadRegression",
    "IndexFull",
    "IndexLightweight",
    "IndexUpdated",
    "Ingest",
    "Lab",
    "ManifestDiff",
    "ManifestSerde",
    "MemoryStore",
    "MetadataDeserialize",
    "OluoEngine",
    "OluoEngineError",
    "OluoError",
    "OluoPersistError",
    "PersistIOError",
    "PersistSnapshot",
    "PrivacyTier",
    "Reject",
    "Scope",
    "Search",
    "SearchExplorer",
    "SearchResults",
    "Snapshot",
    "SnapshotBrowser",
    "SnapshotManifest",
    "SnapshotNotFound",
    "UnsupportedVersion",
    "VerifyReport",
    "assert_manifest_equal",
    "assert_recall",
    "assert_same_answers",
    "bench",
    "datasets",
    "ingest",
    "iter_chunks",
    "load_snapshot",
    "metrics",
    "notebook",
    "open_blob",
    "pareto_frontier",
    "persist_snapshot",
    "plot_latency",
    "plot_recall_drift",
    "plot_recall_qps",
    "plot_storage",
    "reassemble",
    "testing",
]
