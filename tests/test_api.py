"""Names promised by ../shared/API.md are importable from the top-level package."""

from __future__ import annotations

import oluo_lab as ol

PROMISED = [
    "CID",
    "MemoryStore",
    "DirStore",
    "PackStore",
    "ingest",
    "reassemble",
    "ContentError",
    "BookNotFound",
    "CorruptBook",
    "OluoEngine",
    "Ingest",
    "Search",
    "Delete",
    "EvictExpired",
    "CompactComplete",
    "IndexUpdated",
    "SearchResults",
    "PersistSnapshot",
    "EngineError",
    "persist_snapshot",
    "load_snapshot",
    "SnapshotManifest",
    "OluoPersistError",
    "ManifestSerde",
    "MetadataDeserialize",
    "EngineRestoreError",
    "UnsupportedVersion",
    "SnapshotNotFound",
    "PersistIOError",
]


def test_promised_names_exist():
    missing = [name for name in PROMISED if not hasattr(ol, name)]
    assert missing == []


def test_error_hierarchy():
    assert issubclass(ol.BookNotFound, ol.ContentError)
    assert issubclass(ol.CorruptBook, ol.ContentError)
    assert issubclass(ol.StoreIOError, ol.ContentError) and issubclass(ol.StoreIOError, OSError)
    for name in (
        "ManifestSerde",
        "MetadataDeserialize",
        "EngineRestoreError",
        "UnsupportedVersion",
        "SnapshotNotFound",
        "PersistIOError",
    ):
        assert issubclass(getattr(ol, name), ol.OluoPersistError), name


def test_persist_snapshot_fields():
    fields = set(ol.PersistSnapshot.__dataclass_fields__)
    assert {"index_bytes", "metadata_bytes", "key_counter", "generation"} <= fields
