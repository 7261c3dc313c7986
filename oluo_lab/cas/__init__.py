"""Content-addressed store: CIDs, FastCDC chunking, book/bundle DAGs and book stores.

Layering: this package knows nothing of engines or snapshots.
"""

from oluo_lab.cas.base import BookStore, StoreStats
from oluo_lab.cas.cid import CID
from oluo_lab.cas.dag import (
    BlobInfo,
    BlobReader,
    RootMeta,
    blob_info,
    build_tree,
    ingest,
    iter_chunks,
    open_blob,
    reassemble,
)
from oluo_lab.cas.directory import DirStore
from oluo_lab.cas.errors import (
    BookNotFound,
    BookTooLarge,
    ContentError,
    CorruptBook,
    DagDepthExceeded,
    DagSizeMismatch,
    MalformedBundle,
    MalformedCID,
    UnsupportedChunker,
)
from oluo_lab.cas.memory import MemoryStore
from oluo_lab.cas.params import (
    CHUNK_PARAMS,
    CID_LEN,
    FANOUT,
    KNOWN_CHUNK_PARAMS,
    MAX_BOOK_SIZE,
    MAX_DEPTH,
    ChunkParams,
)

open = open_blob  # noqa: A001 - the brief's name; `open_blob` avoids shadowing the builtin

__all__ = [
    "CHUNK_PARAMS",
    "CID",
    "CID_LEN",
    "FANOUT",
    "KNOWN_CHUNK_PARAMS",
    "MAX_BOOK_SIZE",
    "MAX_DEPTH",
    "BlobInfo",
    "BlobReader",
    "BookNotFound",
    "BookStore",
    "BookTooLarge",
    "ChunkParams",
    "ContentError",
    "CorruptBook",
    "DagDepthExceeded",
    "DagSizeMismatch",
    "DirStore",
    "MalformedBundle",
    "MalformedCID",
    "MemoryStore",
    "RootMeta",
    "StoreStats",
    "UnsupportedChunker",
    "blob_info",
    "build_tree",
    "ingest",
    "iter_chunks",
    "open",
    "open_blob",
    "reassemble",
]
