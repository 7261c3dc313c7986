"""oluo_lab.engine: the sans-I/O vector search engine (faiss HNSW base + exact delta).

Layer: engine, beside ``oluo_lab.cas`` and below ``oluo_lab.snapshot``; it imports
neither. It knows nothing of content stores and writes no files: snapshots leave as
PersistSnapshot actions and come back through ``OluoEngine.from_snapshot``. The one
exception is reading: the base may be memory-mapped from a file whose path the caller
gives (``CompactComplete``, or ``from_snapshot(base_path=...)``), which must hold
exactly the snapshot's index bytes and must only ever be replaced by rename.

Modules: ``engine`` (OluoEngine: events in, actions out), ``events``, ``errors``,
``results``, ``metadata`` (the snapshot's metadata format), ``index`` (the compound
index); private helpers ``_ingest`` (event validation), ``_table`` (the entry table),
``_exact_match`` and ``_faiss_native``.
"""

from .engine import DEFAULT_COMPACT_THRESHOLD, OluoEngine
from .errors import (
    CompactCompleteFailed,
    CompactionFailed,
    DimensionMismatch,
    DuplicateIds,
    EngineErrorBase,
    EngineInputError,
    EngineRestoreFailed,
    InvalidEvent,
    InvalidK,
    InvalidVector,
    SnapshotDecodeError,
    UnencodableMetadata,
    UnknownId,
    UnknownMetric,
)
from .events import (
    Compact,
    CompactComplete,
    Delete,
    EngineError,
    EntryMetadata,
    EvictExpired,
    IndexFull,
    IndexLightweight,
    IndexUpdated,
    Ingest,
    IngestDecision,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
    Search,
)
from .index import IndexConfig
from .metadata import DecodedMetadata, decode_metadata, encode_metadata, read_metadata_header
from .results import SearchResults

__all__ = [
    "DEFAULT_COMPACT_THRESHOLD",
    "OluoEngine",
    "Ingest",
    "Search",
    "Delete",
    "EvictExpired",
    "Compact",
    "CompactComplete",
    "IndexUpdated",
    "SearchResults",
    "PersistSnapshot",
    "EngineError",
    "Scope",
    "PrivacyTier",
    "IngestDecision",
    "Reject",
    "IndexFull",
    "IndexLightweight",
    "EntryMetadata",
    "IndexConfig",
    "DecodedMetadata",
    "encode_metadata",
    "decode_metadata",
    "read_metadata_header",
    "EngineErrorBase",
    "EngineInputError",
    "DimensionMismatch",
    "InvalidVector",
    "InvalidK",
    "DuplicateIds",
    "UnknownMetric",
    "UnencodableMetadata",
    "UnknownId",
    "InvalidEvent",
    "EngineRestoreFailed",
    "SnapshotDecodeError",
    "CompactCompleteFailed",
    "CompactionFailed",
]
