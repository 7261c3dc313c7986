"""Malformed input across the API: each row gets its typed error and leaves every stored
file, the store and the engine exactly as they were.

Read-only destinations: the suite runs as root, for whom permission bits do not stop a
write, so "unwritable" paths are a path *under a regular file* (ENOTDIR), a path under
``/proc`` (a filesystem that refuses new files even to root) and a file where a
directory is expected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from oluo_lab.cas import CID, BookStore, MalformedCID, open_store
from oluo_lab.engine import OluoEngine
from oluo_lab.engine.errors import (
    DimensionMismatch,
    DuplicateIds,
    EngineInputError,
    InvalidK,
    InvalidVector,
    UnencodableMetadata,
    UnknownId,
    UnknownMetric,
)
from oluo_lab.snapshot import (
    HEAD_NAME,
    EngineRestoreError,
    HeadRegression,
    Lab,
    ManifestSerde,
    MetadataDeserialize,
    PersistIOError,
    SnapshotManifest,
    SnapshotNotFound,
    UnsupportedVersion,
    load_snapshot,
    persist_snapshot,
)

pytestmark = pytest.mark.reliability

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@dataclass
class Ctx:
    d: Path
    lab: Lab
    eng: OluoEngine
    store: BookStore
    payload: Any  # a valid PersistSnapshot of the engine's next generation
    manifest_bytes: bytes

    def head_doc(self) -> dict:
        return json.loads((self.d / HEAD_NAME).read_text())

    def write_head(self, raw: bytes | str) -> None:
        (self.d / HEAD_NAME).write_bytes(raw.encode() if isinstance(raw, str) else raw)


@pytest.fixture(scope="module", params=["packs", "dir"])
def base_lab(tmp_path_factory, request):
    """Two generations, in a lab with a pack store or with a directory store."""
    d = tmp_path_factory.mktemp("bad") / "lab"
    d.mkdir()
    open_store(d / "cas", kind=request.param)
    lab = Lab(d)
    eng = OluoEngine(DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)
    eng.add(_vectors(120, 0), ids=[f"w{i}" for i in range(120)], metadata={"src": "a"})
    lab.commit(eng, note="gen1")
    eng.add(_vectors(10, 1), ids=[f"v{i}" for i in range(10)])
    lab.commit(eng, note="gen2")
    return d


@pytest.fixture
def ctx(base_lab, tmp_path):
    import shutil

    d = tmp_path / "lab"
    shutil.copytree(base_lab, d)
    lab = Lab(d)
    eng = lab.checkout()
    eng.add(_vectors(5, 2), ids=[f"n{i}" for i in range(5)])
    other = lab.checkout()
    other.add(_vectors(5, 3), ids=[f"m{i}" for i in range(5)])
    payload = other.compact()
    return Ctx(d, lab, eng, lab.store, payload, lab.store.get(lab.head().cid))


def _tree(d: Path) -> dict[str, str]:
    """Every file under the lab (path -> sha256), except the lock (its content is free)."""
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "oluo.lock"
    }


def _engine_state(eng: OluoEngine) -> tuple:
    keys, ids, vecs = eng.live_vectors()
    return (
        len(eng),
        eng.generation,
        eng.key_counter,
        keys.tolist(),
        ids.tolist(),
        vecs.tobytes(),
        repr(sorted(eng.entries().items())),
    )


def _manifest_doc(ctx: Ctx, **changes: Any) -> bytes:
    doc = cbor2.loads(ctx.manifest_bytes)
    for k, v in changes.items():
        if v is _DROP:
            del doc[k]
        else:
            doc[k] = v
    return cbor2.dumps(doc, canonical=True)


_DROP = object()
_FILE_UNDER = "a-file/sub"  # a path below a regular file: ENOTDIR even for root


def _persist(ctx: Ctx, **kw: Any) -> Any:
    p = ctx.payload
    args = dict(
        data_dir=ctx.d,
        store=ctx.store,
        index_bytes=p.index_bytes,
        metadata_bytes=p.metadata_bytes,
        key_counter=p.key_counter,
        generation=p.generation,
    )
    args.update(kw)
    return persist_snapshot(**args)


def _head_then_load(raw: bytes | str) -> Callable[[Ctx], Any]:
    def call(ctx: Ctx) -> Any:
        ctx.write_head(raw)
        before = _tree(ctx.d)
        try:
            return load_snapshot(ctx.d, open_store(ctx.d / "cas"))
        finally:
            assert _tree(ctx.d) == before  # a refused head is never rewritten

    return call


def _head_doc(**changes: Any) -> Callable[[Ctx], Any]:
    def call(ctx: Ctx) -> Any:
        doc = ctx.head_doc()
        for k, v in changes.items():
            if v is _DROP:
                doc.pop(k)
            else:
                doc[k] = v
        return _head_then_load(json.dumps(doc))(ctx)

    return call


def _vector_rows(n: int = 2) -> np.ndarray:
    return _vectors(n, 9)


CASES: list[tuple[str, Callable[[Ctx], Any], type[BaseException]]] = [
    # --- head file variants (written, then loaded; "state" is the damaged head itself)
    ("head-not-json", _head_then_load("{not json"), ManifestSerde),
    ("head-empty", _head_then_load(""), ManifestSerde),
    ("head-invalid-utf8", _head_then_load(b"\xff\xfe{}"), ManifestSerde),
    ("head-json-array", _head_then_load("[1, 2]"), ManifestSerde),
    ("head-json-null", _head_then_load("null"), ManifestSerde),
    ("head-no-version", _head_doc(version=_DROP), ManifestSerde),
    ("head-version-2", _head_doc(version=2), UnsupportedVersion),
    ("head-version-string", _head_doc(version="1"), UnsupportedVersion),
    ("head-no-head", _head_doc(head=_DROP), ManifestSerde),
    ("head-head-int", _head_doc(head=5), ManifestSerde),
    ("head-head-short-hex", _head_doc(head="0100ab"), ManifestSerde),
    ("head-head-bad-kind", _head_doc(head="01ff" + "00" * 38), ManifestSerde),
    ("head-head-unknown-cid", _head_doc(head=CID.for_book(b"nothing").hex), SnapshotNotFound),
    ("head-generation-negative", _head_doc(generation=-1), ManifestSerde),
    ("head-generation-bool", _head_doc(generation=True), ManifestSerde),
    ("head-generation-float", _head_doc(generation=2.0), ManifestSerde),
    ("head-generation-wrong", _head_doc(generation=7), ManifestSerde),
    # --- manifest bytes
    (
        "manifest-version-3",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, version=3)),
        UnsupportedVersion,
    ),
    (
        "manifest-v2-fields-as-version-1",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, version=1)),
        ManifestSerde,
    ),
    (
        "manifest-missing-field",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, entries=_DROP)),
        ManifestSerde,
    ),
    (
        "manifest-extra-field",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, extra=1)),
        ManifestSerde,
    ),
    (
        "manifest-wrong-format",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, format="x")),
        ManifestSerde,
    ),
    (
        "manifest-negative-counter",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, key_counter=-1)),
        ManifestSerde,
    ),
    (
        "manifest-cid-as-text",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, index_cid="01")),
        ManifestSerde,
    ),
    (
        "manifest-bad-cid-bytes",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, parent=b"\x09" * 40)),
        ManifestSerde,
    ),
    (
        "manifest-note-bytes",
        lambda c: SnapshotManifest.from_bytes(_manifest_doc(c, note=b"x")),
        ManifestSerde,
    ),
    (
        "manifest-top-level-list",
        lambda c: SnapshotManifest.from_bytes(cbor2.dumps([1])),
        ManifestSerde,
    ),
    (
        "manifest-not-canonical",
        lambda c: SnapshotManifest.from_bytes(
            cbor2.dumps(dict(reversed(cbor2.loads(c.manifest_bytes).items())))
        ),
        ManifestSerde,
    ),
    ("manifest-garbage", lambda c: SnapshotManifest.from_bytes(b"\xff\x00garbage"), ManifestSerde),
    # --- CID text and references
    ("cid-not-hex", lambda c: CID.parse("xyz"), MalformedCID),
    ("cid-bad-version", lambda c: CID.parse("09" + "00" * 39), ValueError),
    ("cid-not-str", lambda c: CID.parse(12), MalformedCID),
    ("ref-unknown-tag", lambda c: c.lab.checkout("no-such-tag"), SnapshotNotFound),
    ("ref-unknown-generation", lambda c: c.lab.checkout(99), SnapshotNotFound),
    ("ref-bool", lambda c: c.lab.checkout(True), TypeError),
    ("ref-float", lambda c: c.lab.resolve(1.5), TypeError),
    ("ref-unknown-cid", lambda c: c.lab.checkout(CID.for_book(b"x")), SnapshotNotFound),
    # --- vectors, ids, k
    ("add-wrong-dim", lambda c: c.eng.add(np.zeros((2, DIM + 1), np.float32)), DimensionMismatch),
    (
        "add-nan",
        lambda c: c.eng.add(np.full((1, DIM), np.nan, np.float32), ids=["z"]),
        InvalidVector,
    ),
    (
        "add-inf",
        lambda c: c.eng.add(np.full((1, DIM), np.inf, np.float32), ids=["z"]),
        InvalidVector,
    ),
    (
        "add-zero-cosine",
        lambda c: c.eng.add(np.zeros((1, DIM), np.float32), ids=["z"]),
        InvalidVector,
    ),
    ("add-strings", lambda c: c.eng.add(np.array([["a"] * DIM]), ids=["z"]), EngineInputError),
    ("add-3d", lambda c: c.eng.add(np.zeros((1, 2, DIM), np.float32), ids=["z"]), EngineInputError),
    ("add-duplicate-ids", lambda c: c.eng.add(_vector_rows(), ids=["d", "d"]), DuplicateIds),
    ("add-ids-length", lambda c: c.eng.add(_vector_rows(), ids=["only-one"]), EngineInputError),
    ("add-id-float", lambda c: c.eng.add(_vector_rows(1), ids=[1.5]), EngineInputError),
    (
        "add-metadata-object",
        lambda c: c.eng.add(_vector_rows(1), ids=["o"], metadata=[{"x": object()}]),
        UnencodableMetadata,
    ),
    (
        "add-metadata-nan",
        lambda c: c.eng.add(_vector_rows(1), ids=["o"], metadata=[{"x": float("nan")}]),
        UnencodableMetadata,
    ),
    (
        "add-metadata-int-key",
        lambda c: c.eng.add(_vector_rows(1), ids=["o"], metadata=[{1: "x"}]),
        UnencodableMetadata,
    ),
    (
        "search-wrong-dim",
        lambda c: c.eng.search(np.zeros((1, DIM - 1), np.float32)),
        DimensionMismatch,
    ),
    ("search-nan", lambda c: c.eng.search(np.full((1, DIM), np.nan, np.float32)), InvalidVector),
    ("search-k-huge", lambda c: c.eng.search(_vector_rows(1), k=10**12), InvalidK),
    ("search-k-negative", lambda c: c.eng.search(_vector_rows(1), k=-3), InvalidK),
    ("search-k-float", lambda c: c.eng.search(_vector_rows(1), k=2.5), InvalidK),
    ("search-k-str", lambda c: c.eng.search(_vector_rows(1), k="3"), InvalidK),
    ("delete-unknown-id", lambda c: c.eng.delete(["w0", "nope"]), UnknownId),
    ("engine-bad-metric", lambda c: OluoEngine(DIM, metric="manhattan"), UnknownMetric),
    # --- commit / persist arguments
    (
        "commit-annotation-object",
        lambda c: c.lab.commit(c.eng, note="x", obj=object()),
        ManifestSerde,
    ),
    ("commit-annotation-nan", lambda c: c.lab.commit(c.eng, score=float("nan")), ManifestSerde),
    ("commit-note-not-str", lambda c: c.lab.commit(c.eng, note=42), ManifestSerde),
    ("persist-generation-negative", lambda c: _persist(c, generation=-1), ManifestSerde),
    ("persist-generation-bool", lambda c: _persist(c, generation=True), ManifestSerde),
    ("persist-generation-behind", lambda c: _persist(c, generation=1), HeadRegression),
    (
        "persist-metadata-garbage",
        lambda c: _persist(c, metadata_bytes=b"\x00garbage"),
        MetadataDeserialize,
    ),
    ("persist-annotation-set", lambda c: _persist(c, annotations={"s": {1, 2}}), ManifestSerde),
    # --- paths
    ("persist-dir-missing", lambda c: _persist(c, data_dir=c.d / "missing"), PersistIOError),
    ("persist-dir-is-file", lambda c: _persist(c, data_dir=c.d / HEAD_NAME), PersistIOError),
    (
        "persist-dir-under-file",
        lambda c: _persist(c, data_dir=c.d / HEAD_NAME / "x"),
        PersistIOError,
    ),
    ("load-dir-is-file", lambda c: load_snapshot(c.d / HEAD_NAME, c.store), PersistIOError),
    ("lab-path-is-file", lambda c: Lab(c.d / HEAD_NAME), PersistIOError),
    ("lab-path-under-file", lambda c: Lab(c.d / HEAD_NAME / "sub"), PersistIOError),
    ("lab-path-in-proc", lambda c: Lab("/proc/oluo-lab-test"), PersistIOError),
    ("lab-cas-is-file", lambda c: Lab(c.d / "cas" / "oluo-cas-format"), PersistIOError),
    # --- tags and gc
    ("tag-bad-name", lambda c: c.lab.tag("1st"), ValueError),
    ("tag-named-head", lambda c: c.lab.tag("head"), ValueError),
    ("tag-unknown-ref", lambda c: c.lab.tag("ok", 42), SnapshotNotFound),
    ("untag-missing", lambda c: c.lab.untag("absent"), KeyError),
    ("gc-keep-last-zero", lambda c: c.lab.gc(dry_run=False, keep_last=0), ValueError),
]


def test_the_table_is_large_and_ids_unique():
    names = [c[0] for c in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "call", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_typed_error_and_changes_nothing(ctx, name, call, expected):
    if name.startswith("head-"):
        before_engine = _engine_state(ctx.eng)
        with pytest.raises(expected):
            call(ctx)
        assert _engine_state(ctx.eng) == before_engine
        return
    before = (_tree(ctx.d), sorted(ctx.store), _engine_state(ctx.eng))
    with pytest.raises(expected):
        call(ctx)
    after = (_tree(ctx.d), sorted(open_store(ctx.d / "cas")), _engine_state(ctx.eng))
    assert after[0] == before[0], "stored files changed"
    assert after[1] == before[1], "store listing changed"
    assert after[2] == before[2], "engine state changed"


# --- hostile labs: contents written by someone else are data, never trusted -----------------
# Each plant() writes hostile bytes the way a foreign lab would hold them (through the
# public write path, so every CID and digest is consistent); loading must then raise the
# typed error before faiss (or cbor2) is handed anything it would trust.


def _hnsw_spans(index_bytes: bytes) -> tuple[int, dict[str, tuple[int, int]]]:
    from oluo_lab.snapshot.index_codec import _parse

    layout = _parse(memoryview(index_bytes))
    return layout.ntotal, layout.spans


def _forged_index(ctx: Ctx, forge: Callable[[bytearray, int, dict], None]) -> None:
    """Persist the payload with its faiss bytes changed by ``forge(buf, ntotal, spans)``."""
    buf = bytearray(ctx.payload.index_bytes)
    ntotal, spans = _hnsw_spans(bytes(buf))
    forge(buf, ntotal, spans)
    _persist(ctx, index_bytes=bytes(buf))


def _set_i32(buf: bytearray, at: int, value: int) -> None:
    buf[at : at + 4] = int(value).to_bytes(4, "little", signed=True)


def _neighbor_out_of_range(buf: bytearray, ntotal: int, spans: dict) -> None:
    _set_i32(buf, spans["neighbors"][0] + 8, ntotal + 1000)


def _neighbor_negative(buf: bytearray, ntotal: int, spans: dict) -> None:
    _set_i32(buf, spans["neighbors"][0] + 4, -7)


def _level_out_of_range(buf: bytearray, ntotal: int, spans: dict) -> None:
    _set_i32(buf, spans["levels"][0], 60)


def _offset_shifted(buf: bytearray, ntotal: int, spans: dict) -> None:
    at = spans["offsets"][0] + 8
    buf[at : at + 8] = (int.from_bytes(buf[at : at + 8], "little") + 1).to_bytes(8, "little")


def _entry_point_out_of_range(buf: bytearray, ntotal: int, spans: dict) -> None:
    start, nbytes = spans["neighbors"]
    _set_i32(buf, start + nbytes, ntotal + 5)  # entry_point follows the neighbour array


def _neighbors_claim_4gb(buf: bytearray, ntotal: int, spans: dict) -> None:
    at = spans["neighbors"][0] - 8  # the vector's u64 count
    buf[at : at + 8] = (1 << 30).to_bytes(8, "little")  # 2^30 int32s: 4 GiB


def _huge_cbor_manifest(ctx: Ctx) -> None:
    """The head names a manifest book whose CBOR claims a 4 GiB byte string."""
    from oluo_lab.snapshot.head import Head, write_head

    raw = b"\xa1\x66format\x5b" + (4 << 30).to_bytes(8, "big") + b"x" * 64
    cid = ctx.store.put(raw)
    write_head(ctx.d, Head(cid, 3))


def _load(ctx: Ctx) -> Any:
    return load_snapshot(ctx.d, open_store(ctx.d / "cas"))


def _checkout(ctx: Ctx) -> Any:
    return Lab(ctx.d).checkout("HEAD")


HOSTILE: list[tuple[str, Callable[[Ctx], None], Callable[[Ctx], Any], type[BaseException]]] = [
    (
        f"hostile-faiss-{name}-{how.__name__.strip('_')}",
        (lambda f: lambda c: _forged_index(c, f))(forge),
        how,
        EngineRestoreError,
    )
    for name, forge in (
        ("neighbor-out-of-range", _neighbor_out_of_range),
        ("neighbor-negative", _neighbor_negative),
        ("level-out-of-range", _level_out_of_range),
        ("offset-shifted", _offset_shifted),
        ("entry-point-out-of-range", _entry_point_out_of_range),
        ("neighbors-claim-4gb", _neighbors_claim_4gb),
    )
    for how in (_load, _checkout)
] + [
    ("hostile-manifest-cbor-claims-4gb", _huge_cbor_manifest, _load, ManifestSerde),
]


@pytest.mark.parametrize(
    ("name", "plant", "call", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_lab_contents_are_typed_errors(ctx, name, plant, call, expected):
    plant(ctx)
    before = (_tree(ctx.d), sorted(open_store(ctx.d / "cas")))
    with pytest.raises(expected) as info:
        call(ctx)
    assert str(info.value)
    assert (_tree(ctx.d), sorted(open_store(ctx.d / "cas"))) == before, "stored files changed"


_PEAK = """
import resource, sys
from pathlib import Path
from oluo_lab.cas import open_store
from oluo_lab.snapshot import OluoPersistError, load_snapshot
d = Path(sys.argv[1])
store = open_store(d / "cas")
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_snapshot(d, store, progress=False)
    print("loaded")
except OluoPersistError as exc:
    print(type(exc).__name__)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start)
"""


@pytest.mark.parametrize(
    ("name", "plant", "expected"),
    [
        (
            "faiss-neighbors-claim-4gb",
            lambda c: _forged_index(c, _neighbors_claim_4gb),
            "EngineRestoreError",
        ),
        ("manifest-cbor-claims-4gb", _huge_cbor_manifest, "ManifestSerde"),
    ],
)
def test_hostile_claimed_sizes_allocate_nothing_near_them(ctx, name, plant, expected):
    """A 4 GiB claim is refused in a fresh process whose peak resident memory grows by
    less than 64 MiB while loading."""
    import os
    import subprocess
    import sys

    plant(ctx)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, str(ctx.d)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    outcome, grew_kib = proc.stdout.split()
    assert outcome == expected
    assert int(grew_kib) < 64 * 1024, f"peak RSS grew by {int(grew_kib) // 1024} MiB"
