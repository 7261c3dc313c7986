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
``_exact_match`` and ``_faiss_native``. Of the last, :func:`faiss_threads` and
:func:`locality_order` are public here: the benchmark harness builds its faiss peers
with them, exactly as the engine builds its bases.
"""

from ._faiss_native import faiss_threads, locality_order
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
    OluoEngineError,
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
    "Compact",
    "CompactComplete",
    "CompactCompleteFailed",
    "CompactionFailed",
    "DecodedMetadata",
    "Delete",
    "DimensionMismatch",
    "DuplicateIds",
    "EngineError",
    "EngineErrorBase",
    "EngineInputError",
    "EngineRestoreFailed",
    "EntryMetadata",
    "EvictExpired",
    "IndexConfig",
    "IndexFull",
    "IndexLightweight",
    "IndexUpdated",
    "Ingest",
    "IngestDecision",
    "InvalidEvent",
    "InvalidK",
    "InvalidVector",
    "OluoEngine",
    "OluoEngineError",
    "PersistSnapshot",
    "PrivacyTier",
    "Reject",
    "Scope",
    "Search",
    "SearchResults",
    "SnapshotDecodeError",
    "UnencodableMetadata",
    "UnknownId",
    "UnknownMetric",
    "decode_metadata",
    "encode_metadata",
    "faiss_threads",
    "locality_order",
    "read_metadata_header",
]
