"""Property tests: random operation sequences against a pure-Python model, and decoders fed
arbitrary bytes that may raise only their documented error types.

Documented decoder errors (docs/RELIABILITY.md):
  read_head                      ManifestSerde, UnsupportedVersion
  SnapshotManifest.from_bytes    ManifestSerde, UnsupportedVersion
  decode_metadata                SnapshotDecodeError
  put_bundle / blob_info / reassemble   ContentError subclasses
  read_index_record / decode_index      IndexCodecError, ContentError subclasses
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from oluo_lab.cas import CID, ContentError, MemoryStore, blob_info, reassemble
from oluo_lab.cas.dag import RootMeta
from oluo_lab.cas.params import CHUNK_PARAMS
from oluo_lab.engine import IndexLightweight, Ingest, OluoEngine, decode_metadata
from oluo_lab.engine.errors import SnapshotDecodeError
from oluo_lab.snapshot import (
    HEAD_NAME,
    IndexCodecError,
    Lab,
    ManifestSerde,
    SnapshotManifest,
    UnsupportedVersion,
    read_head,
)
from oluo_lab.snapshot.index_codec import decode_index, encode_index, read_index_record

pytestmark = pytest.mark.reliability

DIM = 8
IDS = [f"e{i}" for i in range(24)]


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class EngineVsModel(RuleBasedStateMachine):
    """The engine (l2, HNSW base + delta) against a dict id -> (vector, metadata).

    With at most 24 entries and ef_search=64 the HNSW search visits every node, so the
    engine's answers must equal brute force over the model exactly (ids, in order; equal
    distances ordered by key: a new id takes the next key, a re-added live id keeps its)."""

    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="oluo-prop-"))
        self.lab = Lab(self.tmp / "lab")
        self.eng = OluoEngine(DIM, metric="l2", compact_threshold=6, M=8, ef_search=64)
        self.model: dict[str, tuple[np.ndarray, dict]] = {}
        self.committed: dict[str, tuple[np.ndarray, dict]] | None = None
        self.keys: dict[str, int] = {}
        self.next_key = 0

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "tmp", "/nonexistent"), ignore_errors=True)

    @rule(
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True),
        seed=st.integers(0, 10**6),
    )
    def add(self, ids: list[str], seed: int) -> None:
        vecs = np.stack([_vec(seed + i) for i in range(len(ids))])
        metas = [{"seed": seed + i} for i in range(len(ids))]
        self.eng.add(vecs, ids=ids, metadata=metas)
        for i, t in enumerate(ids):
            if t not in self.model:
                self.keys[t], self.next_key = self.next_key, self.next_key + 1
            self.model[t] = (vecs[i], metas[i])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data) -> None:
        t = data.draw(st.sampled_from(sorted(self.model)))
        self.eng.delete([t])
        del self.model[t]

    @rule(seed=st.integers(0, 10**6), k=st.integers(1, 6))
    def search(self, seed: int, k: int) -> None:
        q = _vec(seed + 7_000_000)
        res = self.eng.search(q[None, :], k=k)
        ids = sorted(self.model)
        d2 = [float(((self.model[t][0].astype(np.float64) - q) ** 2).sum()) for t in ids]
        order = sorted(range(len(ids)), key=lambda i: (d2[i], self.keys[ids[i]]))[:k]
        got = [t for t in res.ids[0].tolist() if t is not None]
        assert got == [ids[i] for i in order]
        assert np.allclose(res.scores[0][: len(got)], [d2[i] for i in order], rtol=1e-4, atol=1e-4)

    @rule()
    def compact(self) -> None:
        self.eng.compact()

    @rule()
    def persist(self) -> None:
        self.lab.commit(self.eng)
        self.committed = dict(self.model)
        self.committed_keys = (dict(self.keys), self.next_key)

    @precondition(lambda self: self.committed is not None)
    @rule()
    def load(self) -> None:
        self.eng = Lab(self.tmp / "lab").checkout("HEAD")
        self.model = dict(self.committed)
        keys, self.next_key = self.committed_keys
        self.keys = dict(keys)

    @invariant()
    def same_entries(self) -> None:
        if not hasattr(self, "eng"):
            return
        assert len(self.eng) == len(self.model)
        for t, (_, meta) in self.model.items():
            assert dict(self.eng.entry(t).metadata) == meta
        _, ids, vecs = self.eng.live_vectors()
        for t, v in zip(ids.tolist(), vecs, strict=True):
            assert np.array_equal(v, self.model[t][0])


TestEngineVsModel = EngineVsModel.TestCase
TestEngineVsModel.settings = settings(
    max_examples=12,
    stateful_step_count=14,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=90),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=300))
def test_read_head_arbitrary_bytes(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("h")
    (d / HEAD_NAME).write_bytes(raw)
    with contextlib.suppress(ManifestSerde, UnsupportedVersion):  # the documented errors only
        read_head(d)


@FUZZ
@given(json_values, st.sampled_from(["version", "head", "generation"]), json_values)
def test_read_head_json_documents(tmp_path_factory, doc, key, value):
    import json

    d = tmp_path_factory.mktemp("h")
    if isinstance(doc, dict):
        doc = dict(doc, version=1, head=CID.for_book(b"x").hex)
        doc[key] = value
    (d / HEAD_NAME).write_text(json.dumps(doc))
    try:
        head = read_head(d)
    except (ManifestSerde, UnsupportedVersion):
        return
    assert isinstance(head.cid, CID) and isinstance(head.generation, int)


@pytest.fixture(scope="module")
def valid():
    eng = OluoEngine(DIM, M=8)
    eng.add(np.stack([_vec(i) for i in range(40)]), ids=list(range(40)), metadata={"a": 1})
    snap = eng.compact()
    store = MemoryStore()
    rec = encode_index(snap.index_bytes, store)
    m = SnapshotManifest(
        index_cid=rec,
        metadata_cid=CID.for_book(snap.metadata_bytes),
        key_counter=40,
        compact_generation=1,
        entries=40,
    )
    return store, rec, snap, m.to_bytes()


@FUZZ
@given(st.binary(max_size=400))
def test_manifest_arbitrary_bytes(raw):
    with contextlib.suppress(ManifestSerde, UnsupportedVersion):  # the documented errors only
        SnapshotManifest.from_bytes(raw)


@FUZZ
@given(
    st.sampled_from(
        sorted(
            cbor2.loads(
                SnapshotManifest(
                    index_cid=CID.for_book(b"i"),
                    metadata_cid=CID.for_book(b"m"),
                    key_counter=0,
                    compact_generation=0,
                ).to_bytes()
            )
        )
    ),
    json_values | st.binary(max_size=50),
)
def test_manifest_field_replaced(valid, key, value):
    doc = cbor2.loads(valid[3])
    doc[key] = value
    try:
        m = SnapshotManifest.from_bytes(cbor2.dumps(doc, canonical=True))
    except (ManifestSerde, UnsupportedVersion):
        return
    assert m.to_bytes() == cbor2.dumps(doc, canonical=True)


@FUZZ
@given(st.binary(max_size=400))
def test_metadata_arbitrary_bytes(raw):
    with contextlib.suppress(SnapshotDecodeError):  # the documented errors only
        decode_metadata(raw)


@pytest.fixture(scope="module")
def rich_meta() -> bytes:
    """Metadata with every column non-empty (expiries, overlays, str and int ids)."""
    eng = OluoEngine(DIM, M=8)
    eng.add(np.stack([_vec(i) for i in range(6)]), ids=list(range(6)), metadata={"a": [1.5]})
    eng.handle(
        Ingest(
            np.stack([_vec(i) for i in range(6, 9)]),
            ["x", "y", 2**70],
            [{"b": b"\x00"}, {}, {"c": {"d": None}}],
            IndexLightweight(60),
            1234,
            overlays=[["o1"], [], ["o2", "o3"]],
        )
    )
    return eng.compact().metadata_bytes


@FUZZ
@given(st.integers(0, 17), json_values | st.binary(max_size=40))
def test_metadata_field_replaced(rich_meta, which, value):
    doc = cbor2.loads(rich_meta)
    keys = sorted(doc)
    if which < len(keys):
        doc[keys[which]] = value
    else:  # one of the 11 entry columns
        cols = doc["entry_columns"]
        cols[sorted(cols)[which - len(keys)]] = value
    with contextlib.suppress(SnapshotDecodeError):  # the documented errors only
        decode_metadata(cbor2.dumps(doc, canonical=True)).check_entries()


@FUZZ
@given(st.integers(0, 10), st.integers(0, 2**16), st.binary(min_size=1, max_size=3))
def test_metadata_column_bytes_damaged(rich_meta, which, at, junk):
    """A byte-level change inside one column: SnapshotDecodeError, at decode or when the
    entries are checked (what Lab.verify does), never another exception."""
    doc = cbor2.loads(rich_meta)
    cols = doc["entry_columns"]
    name = sorted(cols)[which]
    if type(cols[name]) is not bytes or not cols[name]:
        return
    b = bytearray(cols[name])
    i = at % len(b)
    b[i : i + len(junk)] = junk
    cols[name] = bytes(b)
    with contextlib.suppress(SnapshotDecodeError):
        decode_metadata(cbor2.dumps(doc, canonical=True)).check_entries()


@FUZZ
@given(st.binary(max_size=600))
def test_put_bundle_arbitrary_bytes(raw):
    with contextlib.suppress(ContentError):  # the documented errors only
        MemoryStore().put_bundle(raw)


@FUZZ
@given(
    st.lists(st.binary(max_size=64), min_size=1, max_size=5),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
def test_crafted_roots_reassemble_or_raise_content_errors(leaves, total, count, honest):
    store = MemoryStore()
    cids = [store.put(b) for b in leaves]
    if honest:
        total, count = sum(len(b) for b in leaves), len(leaves)
    root = store.put_bundle(
        RootMeta(total, count, CHUNK_PARAMS).encode() + b"".join(c.raw for c in cids)
    )
    try:
        data = reassemble(root, store)
    except ContentError:
        assert not honest
        return
    assert data == b"".join(leaves) and blob_info(root, store).total_size == total


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


@FUZZ
@given(st.data(), json_values | st.binary(max_size=48) | st.integers(-(2**40), 2**41))
def test_index_record_field_replaced(valid, data, value):
    store, rec, snap, _ = valid
    doc = cbor2.loads(store.get(rec))
    path = data.draw(st.sampled_from(sorted(_paths(doc), key=repr)))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    forged = store.put(cbor2.dumps(doc, canonical=True))
    assume(forged != rec)
    try:
        read_index_record(forged, store)
        out = decode_index(forged, store)
    except (IndexCodecError, ContentError):
        return
    assert out == snap.index_bytes  # the digest check admits only the original bytes


@FUZZ
@given(st.binary(max_size=300))
def test_index_record_arbitrary_bytes(valid, raw):
    store = valid[0]
    cid = store.put(raw)
    with contextlib.suppress(IndexCodecError, ContentError):  # the documented errors only
        decode_index(cid, store)
