"""Corruption of every stored file kind: flip a byte, truncate, delete, swap in another valid
file, fill with garbage. Each case ends in a typed error naming the file or CID, or in a
correct result (the base cache is rebuilt from the CAS) — never a crash or a wrong answer.
Forged sizes (a bundle or an index record claiming 1 TB) fail before any allocation.

Labs of both store kinds: books in a pack store (whose own files, packs with their
trailers and index files, are damaged in ``test_pack_corruption.py``) and in a directory
store (one file per book)."""

from __future__ import annotations

import random
import shutil
import tracemalloc
from pathlib import Path

import cbor2
import numpy as np
import pytest

from oluo_lab.cas import (
    ContentError,
    DagSizeMismatch,
    DirStore,
    blob_info,
    open_store,
    reassemble,
)
from oluo_lab.cas.dag import RootMeta
from oluo_lab.cas.params import CHUNK_PARAMS
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import (
    BASE_NAME,
    HEAD_NAME,
    IndexCodecError,
    Lab,
    ManifestSerde,
    OluoPersistError,
    PersistIOError,
    load_snapshot,
    read_head,
)
from oluo_lab.snapshot.durable import LOCK_NAME, TEMP_PREFIX
from oluo_lab.snapshot.index_codec import decode_index, read_index_record
from oluo_lab.snapshot.lab import TAGS_NAME
from oluo_lab.testing.damage import book_file, damage_book

pytestmark = pytest.mark.reliability

DIM = 16
TYPED = (OluoPersistError, ContentError)
MUTATIONS = ("flip", "truncate", "delete", "other-valid", "garbage")


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


QUERIES = _vectors(8, 42)


def _answers(eng: OluoEngine) -> tuple:
    res = eng.search(QUERIES, k=10)
    return (res.ids.tolist(), res.scores.tolist(), len(eng), eng.generation)


@pytest.fixture(scope="module", params=["packs", "dir"])
def template(tmp_path_factory, request):
    """Two generations; the metadata (long notes per entry) spans several chunks, so the
    head has a root bundle as well as plain books. One lab per store kind."""
    d = tmp_path_factory.mktemp("corrupt") / "lab"
    d.mkdir()
    open_store(d / "cas", kind=request.param)
    lab = Lab(d)
    eng = OluoEngine(DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)
    rng = random.Random(3)
    notes = ["".join(rng.choices("abcdefghij", k=1500)) for _ in range(300)]
    eng.add(
        _vectors(300, 0),
        ids=[f"w{i}" for i in range(300)],
        metadata=[{"i": i, "note": notes[i]} for i in range(300)],
    )
    lab.commit(eng, note="gen1")
    eng.add(_vectors(40, 1), ids=[f"v{i}" for i in range(40)])
    eng.delete([f"w{i}" for i in range(20)])
    lab.commit(eng, note="gen2")
    lab.tag("first", 1)
    head = lab.head()
    meta = blob_info(head.manifest.metadata_cid, lab.store)
    assert meta.bundles, "the metadata must be a multi-chunk DAG for the bundle cases"
    targets = {
        "manifest": head.cid,
        "bundle": meta.bundles[0],
        "book": meta.leaves[len(meta.leaves) // 2],
        "index-record": head.manifest.index_cid,
    }
    return d, targets, _answers(eng)


@pytest.fixture
def lab_copy(template, tmp_path):
    src, targets, answers = template
    d = tmp_path / "lab"
    shutil.copytree(src, d)
    return d, targets, answers


def _mutate(path: Path, how: str, other: Path | None = None, pos: float = 0.5) -> None:
    data = path.read_bytes()
    if how == "flip":
        i = min(len(data) - 1, int(len(data) * pos))
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "delete":
        path.unlink()
    elif how == "other-valid":
        assert other is not None
        path.write_bytes(other.read_bytes())
    elif how == "garbage":
        path.write_bytes(random.Random(9).randbytes(max(len(data), 64)))
    else:
        raise AssertionError(how)


def _load(d: Path):
    return load_snapshot(d, open_store(d / "cas"))


#: the damages of MUTATIONS as ``damage_book`` names them; a pack store's "truncate" cuts
#: the whole pack (every later record with it): test_pack_corruption.py covers that
BOOK_DAMAGE = {"flip": "flip", "truncate": "truncate", "delete": "delete"}
BOOK_DAMAGE |= {"other-valid": "swap", "garbage": "garbage"}


@pytest.mark.parametrize("how", MUTATIONS)
@pytest.mark.parametrize("kind", ["manifest", "bundle", "book", "index-record"])
def test_damaged_book_is_a_typed_error_naming_its_cid(lab_copy, kind, how):
    d, targets, _ = lab_copy
    cid = targets[kind]
    store = open_store(d / "cas")
    named = {cid.hex}
    if how == "truncate" and not isinstance(store, DirStore):
        # the pack ends inside the record: it and every later record of the pack are lost,
        # so the error may name any of them; verify names the pack itself
        pack, offset, _ = store.locate(cid)
        named = {pack} | {c.hex for c in store if store.locate(c)[:2] >= (pack, offset)}
    damage_book(store, cid, BOOK_DAMAGE[how])
    with pytest.raises(TYPED) as info:
        _load(d)
    assert any(name in str(info.value) for name in named)
    report = Lab(d).verify(sample=4)
    assert not report
    assert any(n in p.where or n in p.message for p in report.problems for n in named)


@pytest.mark.parametrize("how", MUTATIONS)
def test_damaged_base_cache_is_rebuilt_from_the_cas(lab_copy, how):
    d, _, answers = lab_copy
    base = d / BASE_NAME
    good = base.read_bytes()
    other = d / "other.bin"
    other.write_bytes(good[: len(good) // 3])  # a plausible other file
    _mutate(base, how, other)
    eng, path, gen = _load(d)
    assert _answers(eng) == answers and gen == 2
    assert path.read_bytes() == good
    assert Lab(d).verify(sample=4)


def test_every_single_byte_flip_and_truncation_of_the_head_is_a_typed_error(lab_copy):
    d, _, answers = lab_copy
    head = d / HEAD_NAME
    good = head.read_bytes()
    good_cid = read_head(d).cid
    kept = 0
    for i in range(len(good)):
        for mask in (0x01, 0x20, 0x80):
            head.write_bytes(good[:i] + bytes([good[i] ^ mask]) + good[i + 1 :])
            try:
                loaded = _load(d)
            except OluoPersistError as exc:
                text = str(exc)
                assert HEAD_NAME in text or "snapshot manifest" in text or "version" in text
                continue
            # a flip may keep the meaning (hex case: CIDs parse either case; a renamed
            # optional "generation" key is ignored): then it must load exactly the head
            assert read_head(d).cid == good_cid, (i, mask)
            assert _answers(loaded[0]) == answers
            kept += 1
    assert kept < len(good)  # most flips must be refused
    for n in range(len(good.rstrip(b"\n"))):  # (without its newline it is still complete)
        head.write_bytes(good[:n])
        with pytest.raises(ManifestSerde, match=HEAD_NAME):
            _load(d)
    head.write_bytes(good)
    assert _answers(_load(d)[0]) == answers


@pytest.mark.parametrize("how", ["delete", "other-valid", "garbage"])
def test_lost_or_replaced_head(lab_copy, tmp_path, how):
    d, _, answers = lab_copy
    elsewhere = Lab(tmp_path / "other")
    e = OluoEngine(DIM)
    e.add(_vectors(5, 8))
    elsewhere.commit(e)
    _mutate(d / HEAD_NAME, how, tmp_path / "other" / HEAD_NAME)
    if how == "delete":
        assert _load(d) is None  # the documented fresh start ...
    else:
        with pytest.raises(OluoPersistError) as info:
            _load(d)
        if how == "other-valid":
            assert read_head(tmp_path / "other").cid.hex in str(info.value)
    snap = Lab(d).repair_head()  # ... and the refs log gets the history back
    assert snap.generation == 2 and _answers(_load(d)[0]) == answers


@pytest.mark.parametrize("how", [*MUTATIONS, "directory"])
def test_damaged_lock_file(lab_copy, how):
    d, _, answers = lab_copy
    lock = d / LOCK_NAME
    if how == "directory":
        lock.unlink()
        lock.mkdir()
        with pytest.raises(PersistIOError, match=LOCK_NAME):
            _load(d)
        return
    _mutate(lock if lock.stat().st_size else _fill(lock), how, d / HEAD_NAME)
    lab = Lab(d)
    eng = lab.checkout()
    eng.add(_vectors(3, 11), ids=["n1", "n2", "n3"])
    assert lab.commit(eng).generation == 3  # the lock works whatever its content
    assert _answers(_load(d)[0]) != answers and lab.verify(sample=4)


def _fill(path: Path) -> Path:
    path.write_bytes(b"lock")
    return path


def test_temp_leftovers_are_ignored_by_load_and_swept_by_gc(lab_copy):
    d, targets, answers = lab_copy
    (d / f"{TEMP_PREFIX}{HEAD_NAME}.1.2.0").write_bytes(b'{"version":1,"head":"torn')
    (d / f"{TEMP_PREFIX}{BASE_NAME}.1.2.0").write_bytes(b"\0" * 100)
    store = open_store(d / "cas")
    if isinstance(store, DirStore):
        tmp_dir = book_file(store, targets["book"]).parent
    else:
        tmp_dir = d / "cas" / "packs"
    (tmp_dir / ".tmp-1-abc-0").write_bytes(b"OLP1 half a pack")
    lab = Lab(d)
    assert lab.verify(sample=4)
    assert _answers(_load(d)[0]) == answers
    assert not [p for p in d.iterdir() if p.name.startswith(TEMP_PREFIX)]  # load swept them
    report = lab.gc(dry_run=False, grace_s=0)
    assert report.temp_files_removed == 1  # the CAS's
    assert not (tmp_dir / ".tmp-1-abc-0").exists()
    assert _answers(_load(d)[0]) == answers


@pytest.mark.parametrize("how", MUTATIONS)
def test_damaged_tags_file(lab_copy, how):
    d, _, answers = lab_copy
    tags = d / TAGS_NAME
    _mutate(tags, how, d / HEAD_NAME)
    lab = Lab(d)
    if how == "delete":
        assert lab.tags() == {}
    else:
        try:
            tags = lab.tags()
        except ManifestSerde as exc:
            assert TAGS_NAME in str(exc)
            report = lab.verify(sample=4)
            assert any(p.where == TAGS_NAME for p in report.problems)
        else:  # a flip inside a CID: a tag naming a manifest that is not there
            assert how == "flip"
            report = lab.verify(sample=4)
            assert any(p.where == tags["first"].hex for p in report.problems)
        before = sorted(open_store(d / "cas"))
        with pytest.raises(OluoPersistError):
            lab.gc(dry_run=False, grace_s=0)  # never sweeps without knowing the pins
        assert sorted(open_store(d / "cas")) == before
    assert _answers(_load(d)[0]) == answers


@pytest.mark.parametrize("how", MUTATIONS)
def test_damaged_refs_log_never_breaks_loading(lab_copy, how):
    d, _, answers = lab_copy
    _mutate(d / "oluo_refs.log", how, d / HEAD_NAME)
    assert _answers(_load(d)[0]) == answers
    lab = Lab(d)
    assert lab.verify(sample=4)
    assert lab.log()["generation"].tolist() == [2, 1]


def _peak_during(fn) -> tuple[BaseException, int]:
    tracemalloc.start()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the caller checks the type
        caught = exc
    else:
        raise AssertionError("expected an error")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return caught, peak


def test_bundle_claiming_a_terabyte_allocates_nothing(lab_copy):
    d, targets, _ = lab_copy
    store = open_store(d / "cas")
    leaves = blob_info(targets["bundle"], store).leaves[:2]
    meta = RootMeta(1 << 40, 2, CHUNK_PARAMS)
    root = store.put_bundle(meta.encode() + b"".join(c.raw for c in leaves))
    exc, peak = _peak_during(lambda: reassemble(root, store))
    assert isinstance(exc, DagSizeMismatch) and root.hex in str(exc)
    assert peak < 16 << 20


def test_index_record_claiming_a_terabyte_allocates_nothing(lab_copy):
    d, targets, _ = lab_copy
    store = open_store(d / "cas")
    rec = read_index_record(targets["index-record"], store)
    for section in ("codes", "levels", "neighbors"):
        doc = cbor2.loads(store.get(rec.cid))
        doc["sections"][section]["len"] += 1 << 40
        doc["length"] += 1 << 40
        forged = store.put(cbor2.dumps(doc, canonical=True))
        exc, peak = _peak_during(lambda f=forged: decode_index(f, store))
        assert isinstance(exc, IndexCodecError) and forged.hex in str(exc), exc
        assert peak < 16 << 20


def test_flip_of_every_byte_of_the_manifest_file(lab_copy):
    """Every single-byte flip of the stored manifest (header, zstd frame or raw bytes, in
    its own file or in its pack) is caught by the store and named."""
    d, targets, answers = lab_copy
    store = open_store(d / "cas")
    cid = targets["manifest"]
    if isinstance(store, DirStore):
        path, start = book_file(store, cid), 0
        end = path.stat().st_size
    else:
        pid, e = store._view.loc[cid]
        path, start, end = d / "cas" / "packs" / f"{pid}.olp", e.offset, e.end
    good = path.read_bytes()
    step = max(1, (end - start) // 97)
    for i in range(start, end, step):
        path.write_bytes(good[:i] + bytes([good[i] ^ 0x04]) + good[i + 1 :])
        with pytest.raises(ContentError) as info:
            _load(d)
        assert cid.hex in str(info.value)
    path.write_bytes(good)
    assert _answers(_load(d)[0]) == answers
