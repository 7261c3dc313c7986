"""Bad input: a typed error, and the engine state is exactly unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import fingerprint, make_vectors

from oluo_lab.engine import (
    Delete,
    DimensionMismatch,
    DuplicateIds,
    EngineError,
    EngineInputError,
    EvictExpired,
    IndexLightweight,
    Ingest,
    InvalidEvent,
    InvalidK,
    InvalidVector,
    OluoEngine,
    Search,
    UnknownMetric,
)


@pytest.fixture(params=["cosine", "hamming"])
def eng(request):
    metric = request.param
    dim = 16 if metric == "cosine" else 64
    e = OluoEngine(dim, metric, compact_threshold=50)
    e.add(make_vectors(metric, 60, dim, seed=41), ids=[f"x{i}" for i in range(60)])  # base
    e.add(make_vectors(metric, 10, dim, seed=42), ids=[f"y{i}" for i in range(10)])  # delta
    e.delete(["x1"])
    return e


def _good(eng, n=2):
    return make_vectors(eng.metric, n, eng.dim, seed=43)


def _bad_ingests(eng):
    g = _good(eng)
    nan = g.astype(np.float32) if eng.metric == "cosine" else None
    cases = [
        (Ingest(g[:, :-1], ["a", "b"]), DimensionMismatch),
        (Ingest(g[0][None, None], ["a"]), DimensionMismatch),
        (Ingest(g, ["a", "a"]), DuplicateIds),
        (Ingest(g, ["a"]), InvalidEvent),
        (Ingest(g, ["a", 1.5]), InvalidEvent),
        (Ingest(g, ["a", True]), InvalidEvent),
        (Ingest(g, ["a", "x0"], now_ms=-1), InvalidEvent),
        (Ingest(g, ["a", "b"], decision="yes"), InvalidEvent),
        (Ingest(g, ["a", "b"], decision=IndexLightweight(-5)), InvalidEvent),
        (Ingest(g, ["a", "b"], scope=7), InvalidEvent),
        (Ingest(g, ["a", "b"], privacy_tier=9), InvalidEvent),
        (Ingest(g, ["a", "b"], overlays=[[1], []]), InvalidEvent),
        (Ingest(g, ["a", "b"], metadata=[{"ok": 1}, {"bad": (1,)}]), EngineInputError),
    ]
    if eng.metric == "cosine":
        nan[1, 3] = np.nan
        inf = g.astype(np.float32)
        inf[0, 0] = np.inf
        zero = g.astype(np.float32)
        zero[1] = 0
        cases += [
            (Ingest(nan, ["a", "b"]), InvalidVector),
            (Ingest(inf, ["a", "b"]), InvalidVector),
            (Ingest(zero, ["a", "b"]), InvalidVector),
            (Ingest(g.astype(np.int64), ["a", "b"]), InvalidVector),
            (Ingest(np.full((2, eng.dim), 1e39), ["a", "b"]), InvalidVector),  # overflows float32
        ]
    else:
        cases += [
            (Ingest(g.astype(np.int16), ["a", "b"]), InvalidVector),
            (Ingest(g.astype(np.float32), ["a", "b"]), InvalidVector),
        ]
    return cases


def test_bad_ingest_leaves_state_unchanged(eng):
    before = fingerprint(eng)
    for ev, err in _bad_ingests(eng):
        acts = eng.handle(ev)
        assert len(acts) == 1 and isinstance(acts[0], EngineError), ev
        assert isinstance(acts[0].error, err), (ev, acts[0].error)
        assert acts[0].message.startswith(type(acts[0].error).__name__)
        assert fingerprint(eng) == before, ev


def test_bad_search_is_typed_and_carries_query_id(eng):
    before = fingerprint(eng)
    g = _good(eng)
    cases = [
        (Search(7, g, k=-1), InvalidK),
        (Search(7, g, k=2.5), InvalidK),
        (Search(7, g, k=True), InvalidK),
        (Search(7, g, ef=0), InvalidK),
        (Search(7, g[:, 1:]), DimensionMismatch),
        (Search(7, g, scope="everyone"), InvalidEvent),
        (Search(7, g, predicate=lambda e: 1 / 0), EngineInputError),
    ]
    if eng.metric == "cosine":
        q = g.copy()
        q[0, 0] = np.nan
        cases.append((Search(7, q), InvalidVector))
    for ev, err in cases:
        (act,) = eng.handle(ev)
        assert isinstance(act, EngineError) and isinstance(act.error, err), ev
        assert act.query_id == 7
    assert fingerprint(eng) == before


def test_bad_delete_and_evict(eng):
    before = fingerprint(eng)
    for ev in (Delete(["x0", "nope"]), Delete(["x0", "x0"]), Delete(["x1"]), EvictExpired(-3)):
        (act,) = eng.handle(ev)
        assert isinstance(act, EngineError) and isinstance(act.error, EngineInputError)
    assert fingerprint(eng) == before
    (act,) = eng.handle("not an event")
    assert isinstance(act.error, InvalidEvent)


def test_convenience_layer_raises_and_state_unchanged(eng):
    before = fingerprint(eng)
    with pytest.raises(DimensionMismatch):
        eng.add(_good(eng)[:, :-1])
    with pytest.raises(DuplicateIds):
        eng.add(_good(eng), ids=["q", "q"])
    with pytest.raises(InvalidK):
        eng.search(_good(eng), k=0 - 1)
    assert fingerprint(eng) == before
    # the same good batch afterwards works
    assert len(eng.add(_good(eng), ids=["p", "q"])) == 2


def test_constructor_validation():
    with pytest.raises(UnknownMetric):
        OluoEngine(8, "manhattan")
    for kw in ({"dim": 0}, {"dim": 8, "M": 0}, {"dim": 8, "compact_threshold": 0}):
        with pytest.raises(EngineInputError):
            OluoEngine(**kw)
    with pytest.raises(InvalidK):
        OluoEngine(8, ef_search=0)
