"""oluo_lab.engine: the sans-I/O vector search engine (faiss HNSW base + exact delta).

Knows nothing of files or content stores: snapshots leave as PersistSnapshot
actions and come back through ``OluoEngine.from_snapshot``.
"""

from .engine import OluoEngine
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
