"""Content-addressed store: CIDs, FastCDC chunking, book/bundle DAGs and book stores.

Layering: this package knows nothing of engines or snapshots. Its modules: ``params``
(format constants), ``cid``, ``errors``, ``base`` (the ``BookStore`` contract), ``memory``
and ``directory`` (one file per book; ``_bookfile`` is the book record and ``_batch`` the
batched writer), ``packs`` (books in pack files, locally or on an object store;
``_packfile`` is the pack and index file format, ``_packbatch`` the writer, ``_backends``
the local and obstore file operations), ``stores`` (``open_store``, and converting a
directory store to packs), ``dag`` (chunking and blobs) and ``_output`` (the
``FreshBytes`` result buffer). A new store proves itself with
``oluo_lab.testing.store.StoreConformance``.
"""

from oluo_lab.cas._output import FreshBytes
from oluo_lab.cas.base import (
    DEFAULT_GC_GRACE_S,
    BookStore,
    StoreCheck,
    StoreProblem,
    StoreStats,
    SweepReport,
)
from oluo_lab.cas.cid import CID
from oluo_lab.cas.dag import (
    BlobInfo,
    BlobReader,
    RootMeta,
    blob_info,
    build_tree,
    ingest,
    ingest_pages,
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
    CorruptStoreFile,
    DagDepthExceeded,
    DagSizeMismatch,
    MalformedBundle,
    MalformedCID,
    StoreIOError,
    UnsupportedChunker,
)
from oluo_lab.cas.memory import MemoryStore
from oluo_lab.cas.packs import PackStore
from oluo_lab.cas.params import (
    CHUNK_PARAMS,
    CID_LEN,
    FANOUT,
    FINE_CHUNK_PARAMS,
    FINE_FANOUT,
    KNOWN_CHUNK_PARAMS,
    MAX_BOOK_SIZE,
    MAX_DEPTH,
    ChunkParams,
)
from oluo_lab.cas.stores import ConvertReport, convert_to_packs, open_store, store_kind

#: ``cas.open(root, store)`` reads a blob as a binary file object, as the builtin ``open``
#: reads a path; ``open_blob`` is the same function under a name that is safe to import bare.
open = open_blob  # noqa: A001

__all__ = [
    "CHUNK_PARAMS",
    "CID",
    "CID_LEN",
    "DEFAULT_GC_GRACE_S",
    "FANOUT",
    "FINE_CHUNK_PARAMS",
    "FINE_FANOUT",
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
    "ConvertReport",
    "CorruptBook",
    "CorruptStoreFile",
    "DagDepthExceeded",
    "DagSizeMismatch",
    "DirStore",
    "FreshBytes",
    "MalformedBundle",
    "MalformedCID",
    "MemoryStore",
    "PackStore",
    "RootMeta",
    "StoreCheck",
    "StoreIOError",
    "StoreProblem",
    "StoreStats",
    "SweepReport",
    "UnsupportedChunker",
    "blob_info",
    "build_tree",
    "convert_to_packs",
    "ingest",
    "ingest_pages",
    "iter_chunks",
    "open",
    "open_blob",
    "open_store",
    "reassemble",
    "store_kind",
]
