"""Corruption of a pack store's own files, locally and on S3 (moto): pack bodies, pack
headers, trailers, whole packs and index files.

Two generations are persisted (data directory local, store local or on the moto server).
Each damage ends in a typed error naming the book (or its pack), or in a correct load;
the store's ``check`` names the damaged file; and, where the bytes still exist, gc or
``recover`` gets the store back to clean.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from oluo_lab.cas import BookNotFound, ContentError, CorruptBook, PackStore
from oluo_lab.cas._packfile import FOOTER_LEN, index_key, pack_key
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import (
    OluoPersistError,
    SnapshotNotFound,
    load_snapshot,
    persist_snapshot,
    read_head,
)

pytestmark = pytest.mark.reliability

DIM = 16
TYPED = (ContentError, OluoPersistError)
QUERIES = np.random.default_rng(42).standard_normal((8, DIM)).astype(np.float32)


def _answers(eng: OluoEngine) -> tuple:
    res = eng.search(QUERIES, k=10)
    return (res.ids.tolist(), res.scores.tolist(), len(eng), eng.generation)


def _engine_states() -> list:
    rng = np.random.default_rng(0)
    eng = OluoEngine(DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)
    notes = ["".join(random.Random(i).choices("abcdefgh", k=900)) for i in range(250)]
    eng.add(
        rng.standard_normal((250, DIM)).astype(np.float32),
        ids=[f"w{i}" for i in range(250)],
        metadata=[{"note": n} for n in notes],
    )
    first = eng.compact(force=True)
    eng.add(rng.standard_normal((30, DIM)).astype(np.float32), ids=[f"v{i}" for i in range(30)])
    eng.delete([f"w{i}" for i in range(10)])
    second = eng.compact(force=True)
    return [first, second, _answers(eng)]


STATES = _engine_states()


class Ctx:
    """A data directory whose two generations live in a pack store at ``location``."""

    def __init__(self, d, location, options):
        self.d, self.location, self.options = d, location, options

    def store(self) -> PackStore:
        """A fresh store object (no view cached from before the damage)."""
        return PackStore(self.location, **self.options)

    def load(self):
        return load_snapshot(self.d, self.store())

    def head_books(self) -> tuple[str, str]:
        """(pack id, index id) holding the head manifest."""
        store = self.store()
        cid = read_head(self.d).cid
        pid, _ = store._view.loc[cid]
        ident = next(
            i for i in store._view.live if pid in {p.id for p in store._view.docs[i].packs}
        )
        return pid, ident

    def read(self, key: str) -> bytes:
        return self.store().backend.read(key)

    def write(self, key: str, data: bytes) -> None:
        self.store().backend.put_replace(key, data)

    def delete(self, key: str) -> None:
        self.store().backend.delete(key)


@pytest.fixture(params=["local", "s3"])
def ctx(request, tmp_path, s3_or_skip):
    d = tmp_path / "lab"
    d.mkdir()
    if request.param == "local":
        location, options = str(d / "cas"), {}
    else:
        location, options = s3_or_skip.url("corrupt"), dict(s3_or_skip.options)
    c = Ctx(d, location, options)
    store = c.store()
    for snap in STATES[:2]:
        persist_snapshot(
            d, store, snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
        )
    assert _answers(c.load()[0]) == STATES[2]
    assert c.store().check()
    return c


@pytest.fixture
def s3_or_skip(request):
    return request.getfixturevalue("s3")


def _names(exc: BaseException, store: PackStore, pid: str) -> bool:
    """Whether an error names a book of pack ``pid`` (or the pack itself)."""
    text = str(exc)
    return pid in text or any(
        cid.hex in text for cid, (p, _) in store._view.loc.items() if p == pid
    )


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]


@pytest.mark.parametrize("where", ["body", "header", "trailer-entry", "trailer-footer"])
def test_flipped_pack_byte(ctx, where):
    pid, _ = ctx.head_books()
    key = pack_key(pid)
    data = ctx.read(key)
    store = ctx.store()
    entries = sorted(store._view.packs[pid].values(), key=lambda e: e.offset)
    manifest = store._view.loc[read_head(ctx.d).cid][1]
    i = {
        "body": manifest.offset + manifest.length // 2,
        "header": 2,
        "trailer-entry": entries[-1].end + 10,
        "trailer-footer": len(data) - 3,
    }[where]
    ctx.write(key, _flip(data, i))
    if where == "body":
        with pytest.raises(CorruptBook) as info:
            ctx.load()
        assert info.value.cid == read_head(ctx.d).cid
    else:  # reads go through the index: the answer is still exact
        assert _answers(ctx.load()[0]) == STATES[2]
    problems = ctx.store().check().problems
    assert [p.where for p in problems] == [key]
    assert "does not match its name" in problems[0].message


@pytest.mark.parametrize("how", ["delete", "garbage", "other-valid", "truncate", "cut-trailer"])
def test_damaged_whole_pack(ctx, how):
    pid, _ = ctx.head_books()
    key = pack_key(pid)
    data = ctx.read(key)
    store = ctx.store()
    if how == "delete":
        ctx.delete(key)
    elif how == "garbage":
        ctx.write(key, random.Random(5).randbytes(len(data)))
    elif how == "other-valid":
        other = next(p for p in store._view.packs if p != pid)
        ctx.write(key, ctx.read(pack_key(other)))
    elif how == "truncate":
        ctx.write(key, data[: len(data) // 2])
    else:  # the trailer (and nothing else) is cut off
        ctx.write(key, data[: -FOOTER_LEN - 5])
    if how == "cut-trailer":
        assert _answers(ctx.load()[0]) == STATES[2]
    else:
        with pytest.raises(TYPED) as info:
            ctx.load()
        assert _names(info.value, store, pid)
    problems = ctx.store().check().problems
    assert problems and all(p.where == key for p in problems)


@pytest.mark.parametrize("how", ["flip", "truncate", "garbage", "other-valid", "empty"])
def test_damaged_index_file_falls_back_to_the_trailers(ctx, how):
    _, ident = ctx.head_books()
    key = index_key(ident)
    data = ctx.read(key)
    if how == "flip":
        bad = _flip(data, len(data) // 2)
    elif how == "truncate":
        bad = data[: len(data) // 2]
    elif how == "garbage":
        bad = random.Random(6).randbytes(len(data))
    elif how == "other-valid":
        other = next(i for i in ctx.store()._view.live if i != ident)
        bad = ctx.read(index_key(other))
    else:
        bad = b""
    ctx.write(key, bad)
    assert _answers(ctx.load()[0]) == STATES[2]  # every pack's trailer still lists its books
    store = ctx.store()
    assert [p.where for p in store.check().problems] == [key]
    report = store.sweep([], grace_s=0)  # a new index supersedes the damaged file
    assert report.books == 0
    assert ctx.store().check() and _answers(ctx.load()[0]) == STATES[2]


def test_lost_index_file_is_a_typed_error_and_recover_finds_the_books(ctx):
    pid, ident = ctx.head_books()
    ctx.delete(index_key(ident))
    with pytest.raises(SnapshotNotFound) as info:
        ctx.load()
    assert isinstance(info.value.__cause__, BookNotFound)
    assert info.value.cid == read_head(ctx.d).cid.hex
    store = ctx.store()
    assert store.check().info["unreferenced_packs"] == 1
    assert store.recover() > 0
    assert _answers(ctx.load()[0]) == STATES[2]
    assert ctx.store().check()
