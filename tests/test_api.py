"""Names of the public API contract are importable from the top-level package."""

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
    "OluoError",
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


def test_each_default_has_one_value_everywhere(tmp_path, monkeypatch):
    import inspect

    from oluo_lab import cli
    from oluo_lab.bench import sweep
    from oluo_lab.cas import DEFAULT_GC_GRACE_S
    from oluo_lab.engine import DEFAULT_COMPACT_THRESHOLD, IndexConfig
    from oluo_lab.snapshot.gc import gc_lab

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    for fn in (ol.OluoEngine, ol.OluoEngine.from_snapshot, ol.Lab, ol.load_snapshot):
        assert default(fn, "compact_threshold") == DEFAULT_COMPACT_THRESHOLD, fn
    for fn in (ol.Lab.gc, gc_lab):
        assert default(fn, "grace_s") == DEFAULT_GC_GRACE_S, fn
    for name in ("M", "ef_construction", "ef_search"):
        assert default(ol.OluoEngine, name) == getattr(IndexConfig, name)
    assert default(sweep, "M") == (IndexConfig.M,)
    assert default(sweep, "ef_construction") == (IndexConfig.ef_construction,)
    seen = {}
    monkeypatch.setattr(cli, "_cmd_gc", lambda args, lab: seen.setdefault("grace", args.grace))
    ol.Lab(tmp_path / "lab")  # the CLI opens labs only (NotALab otherwise)
    cli.main(["gc", str(tmp_path / "lab")])
    assert seen["grace"] == DEFAULT_GC_GRACE_S
