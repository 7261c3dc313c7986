"""Content-addressed store: CIDs, FastCDC chunking, book/bundle DAGs and book stores.

Layering: this package knows nothing of engines or snapshots. Its modules: ``params``
(format constants), ``cid``, ``errors``, ``base`` (the ``BookStore`` contract), ``memory``
and ``directory`` (the two stores; ``_bookfile`` is DirStore's book file record and
``_batch`` its batched writer), ``dag`` (chunking and blobs) and ``_output`` (the
``FreshBytes`` result buffer). A new store proves itself with
``oluo_lab.testing.store.StoreConformance``.
"""

from oluo_lab.cas._output import FreshBytes
from oluo_lab.cas.base import DEFAULT_GC_GRACE_S, BookStore, StoreStats
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

#: ``cas.open(root, store)`` reads a blob as a binary file object, as the builtin ``open``
#: reads a path; ``open_blob`` is the same function under a name that is safe to import bare.
open = open_blob  # noqa: A001

__all__ = [
    "CHUNK_PARAMS",
    "CID",
    "CID_LEN",
    "DEFAULT_GC_GRACE_S",
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
    "FreshBytes",
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
