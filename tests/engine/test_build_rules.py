"""Build rules that decide graph bytes (prune_headroom) travel with every snapshot and are
set again on restored, mapped and swapped bases; build threads never change the bytes."""

from __future__ import annotations

import math

import cbor2
import faiss
import numpy as np
import pytest
from engine_helpers import make_vectors

from oluo_lab.engine import CompactComplete, InvalidEvent, OluoEngine, decode_metadata
from oluo_lab.engine import _faiss_native as native
from oluo_lab.engine.index import LEGACY_PRUNE_HEADROOM, IndexConfig
from oluo_lab.engine.metadata import _columns_from_v4

DIM = 16
# small lists fill up fast, so appends prune often and the headroom shows in the bytes
SMALL = {"compact_threshold": 100_000, "M": 4, "ef_construction": 32}


def _vectors(metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dim = 64 if metric == "hamming" else DIM
    v = make_vectors(metric, 2600, dim, seed=11)
    return v[:2000], v[2000:2300], v[2300:]


def _engine(metric: str, **kw) -> OluoEngine:
    return OluoEngine(64 if metric == "hamming" else DIM, metric, **SMALL, **kw)


def _grow(eng: OluoEngine, vecs: np.ndarray, first_id: int):
    eng.add(vecs, ids=list(range(first_id, first_id + len(vecs))))
    return eng.compact()


def _restore(snap, **kw) -> OluoEngine:
    return OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation, **kw
    )


def _same(a, b) -> bool:
    return a.index_bytes == b.index_bytes and a.metadata_bytes == b.metadata_bytes


def _history(metric: str, **kw):
    """Snapshots of one never-restored engine: build, append, append."""
    base, more, last = _vectors(metric)
    eng = _engine(metric, **kw)
    return [_grow(eng, base, 0), _grow(eng, more, 2000), _grow(eng, last, 2300)]


@pytest.mark.parametrize("metric", ["cosine", "l2", "hamming"])
def test_headroom_decides_the_graph_and_is_recorded(metric):
    dense, loose = _history(metric, prune_headroom=0.0), _history(metric, prune_headroom=0.2)
    assert [s.index_bytes != t.index_bytes for s, t in zip(dense, loose, strict=True)] == [True] * 3
    assert decode_metadata(dense[0].metadata_bytes).config["prune_headroom"] == 0.0
    assert decode_metadata(loose[0].metadata_bytes).config["prune_headroom"] == 0.2
    # the snapshot's config is what a restore uses, not the caller's default
    assert _restore(loose[0]).config.prune_headroom == 0.2


@pytest.mark.parametrize("metric", ["cosine", "l2", "hamming"])
@pytest.mark.parametrize("headroom", [0.0, 0.2, 0.5])
def test_restored_engine_appends_the_bytes_a_never_restored_one_would(metric, headroom, tmp_path):
    want = _history(metric, prune_headroom=headroom)
    _, more, last = _vectors(metric)
    for how in ("bytes", "mapped"):
        path = None
        if how == "mapped":
            path = tmp_path / f"{metric}-{headroom}.faiss"
            path.write_bytes(want[0].index_bytes)
        eng = _restore(want[0], base_path=path)
        assert eng._index.base_mapped is (how == "mapped")
        assert _same(_grow(eng, more, 2000), want[1]), how
        # the new base swapped for a memory-mapped file of itself (CompactComplete)
        swap = tmp_path / f"{metric}-{headroom}-{how}-2.faiss"
        swap.write_bytes(want[1].index_bytes)
        eng.handle(CompactComplete(str(swap), eng.generation))
        assert eng._index.base_mapped
        assert _same(_grow(eng, last, 2300), want[2]), how


def test_without_the_rules_a_restored_engine_would_append_other_bytes(monkeypatch):
    """The control: faiss reads every index back with its own default headroom (0.2), so
    a restore that did not set the recorded rule would grow another graph."""
    want = _history("l2", prune_headroom=0.0)
    _, more, _ = _vectors("l2")
    back = faiss.deserialize_index(np.frombuffer(want[0].index_bytes, np.uint8))
    assert back.hnsw.prune_headroom == pytest.approx(0.2)
    monkeypatch.setattr(IndexConfig, "apply_build_rules", lambda self, ix: ix)
    eng = _restore(want[0])
    assert not _same(_grow(eng, more, 2000), want[1])


@pytest.mark.parametrize("metric", ["cosine", "hamming"])
def test_version_2_snapshots_keep_growing_with_faiss_s_old_headroom(metric):
    want = _history(metric, prune_headroom=LEGACY_PRUNE_HEADROOM)
    doc = cbor2.loads(want[0].metadata_bytes)
    for name in ("prune_headroom", "repair_fraction", "hole_fraction"):
        del doc["config"][name]
    del doc["holes"]
    doc["entry_columns"] = _columns_from_v4(doc["entry_columns"], doc["entries"])
    doc["version"] = 2
    v2 = cbor2.dumps(doc, canonical=True)
    eng = OluoEngine.from_snapshot(want[0].index_bytes, v2, 2000, 1)
    assert eng.config.prune_headroom == LEGACY_PRUNE_HEADROOM
    _, more, _ = _vectors(metric)
    snap = _grow(eng, more, 2000)
    assert _same(snap, want[1])
    assert cbor2.loads(snap.metadata_bytes)["version"] == 4


@pytest.mark.parametrize("bad", [-0.1, 0.51, math.nan, math.inf, True, "0.2", None])
def test_bad_prune_headroom_is_refused(bad):
    with pytest.raises(InvalidEvent, match="prune_headroom"):
        OluoEngine(DIM, "l2", prune_headroom=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_build_threads_is_refused(bad):
    with pytest.raises(InvalidEvent, match="build_threads"):
        OluoEngine(DIM, "l2", build_threads=bad)


def test_default_build_threads_follow_faiss_only_where_its_build_is_deterministic(monkeypatch):
    assert native.deterministic_threaded_build("1.15.1")
    for version in ("1.15.0", "1.14.3", "1.16.0", "2.0.0"):
        assert not native.deterministic_threaded_build(version)
    if not native.deterministic_threaded_build():
        pytest.skip(f"faiss {faiss.__version__} builds thread-dependent graphs")
    prev = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(3)
        eng = OluoEngine(DIM, "l2")
        assert eng._index.effective_build_threads() == 3
        assert OluoEngine(DIM, "l2", build_threads=2)._index.effective_build_threads() == 2
        # a faiss outside the tested range: the default falls back to one thread
        monkeypatch.setattr(faiss, "__version__", "1.15.0")
        assert eng._index.effective_build_threads() == 1
        assert OluoEngine(DIM, "l2", build_threads=2)._index.effective_build_threads() == 2
    finally:
        faiss.omp_set_num_threads(prev)
