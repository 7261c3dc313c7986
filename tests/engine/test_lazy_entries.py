"""Entries are columnar and their EntryMetadata built on first access, for ingested and
restored engines alike: whatever is (or is not) looked at, the entries, search results and
snapshot bytes equal an independent model of the operations and each other."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from engine_helpers import make_vectors

from oluo_lab.engine import (
    EngineError,
    EntryMetadata,
    IndexFull,
    IndexLightweight,
    Ingest,
    OluoEngine,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
    encode_metadata,
)

VECS = make_vectors("l2", 80, 8, seed=11)


def _ops() -> list:
    """Ingest events, ("delete", ids), ("evict", now_ms) and "compact", with every field
    kind: caller maps (some empty), TTLs, scopes, tiers, overlays, re-ingests, rejects."""
    return [
        Ingest(
            VECS[:30], [f"w{i}" for i in range(30)], [{"i": i} if i % 3 else {} for i in range(30)]
        ),
        Ingest(
            VECS[30:40],
            list(range(100, 110)),
            [{"j": [j, None], "s": "x" * j} for j in range(10)],
            IndexLightweight(30),
            now_ms=2000,
            scope=Scope.COMMUNITY,
            privacy_tier=PrivacyTier.PUBLIC_EPHEMERAL,
            overlays=[[f"o{j}"] * (j % 3) for j in range(10)],
        ),
        "compact",
        # re-ingest a stored row ("w1") and a TTL entry (101: no TTL now, its wider scope
        # kept), add "n1", reject (remove) "w2"
        Ingest(
            VECS[40:44],
            ["w1", 101, "n1", "w2"],
            [{"again": 1}, None, {"n": 1}, None],
            [IndexFull(), IndexFull(), IndexFull(), Reject()],
            now_ms=2500,
            scope=[Scope.PERSONAL, Scope.PERSONAL, Scope.NETWORK_WIDE, Scope.PERSONAL],
        ),
        ("delete", ["w3", 100]),
        Ingest(VECS[44:50], ["w4", "n1", "n2", "n3", "n4", "n5"], {"batch": True}, now_ms=2600),
        ("evict", 32_000),
        "compact",
        Ingest(
            VECS[50:52],
            ["w5", "z"],
            None,
            IndexLightweight(1),
            now_ms=40_000,
            privacy_tier=[PrivacyTier.PUBLIC_DURABLE, PrivacyTier.ENCRYPTED_EPHEMERAL],
        ),
        ("delete", ["w6"]),
    ]


class Model:
    """The entry table the operations should produce, kept as plain EntryMetadata."""

    def __init__(self) -> None:
        self.entries: dict[int, EntryMetadata] = {}
        self.key_of: dict = {}
        self.next_key = 0

    def apply(self, op) -> None:
        if op == "compact":
            return
        if isinstance(op, tuple) and op[0] == "delete":
            for t in op[1]:
                del self.entries[self.key_of.pop(t)]
            return
        if isinstance(op, tuple) and op[0] == "evict":
            gone = [k for k, e in self.entries.items() if (e.expires_at or op[1] + 1) <= op[1]]
            for k in gone:
                del self.key_of[self.entries.pop(k).target]
            return
        n = len(op.targets)

        def per(v):
            return list(v) if isinstance(v, list) else [v] * n

        metas, decisions = per(op.metadata), per(op.decision)
        scopes, tiers = per(op.scope), per(op.privacy_tier)
        overlays = op.overlays if op.overlays is not None else [()] * n
        for i, t in enumerate(op.targets):
            old = self.key_of.get(t)
            if isinstance(decisions[i], Reject) or tiers[i] == PrivacyTier.ENCRYPTED_EPHEMERAL:
                if old is not None:
                    del self.entries[old]
                    del self.key_of[t]
                continue
            scope = Scope(scopes[i])
            if old is None:
                key = self.key_of[t] = self.next_key
                self.next_key += 1
            else:
                key = old
                scope = max(scope, self.entries[old].scope)
            d = decisions[i]
            exp = op.now_ms + d.ttl_secs * 1000 if isinstance(d, IndexLightweight) else None
            self.entries[key] = EntryMetadata(
                t, dict(metas[i] or {}), PrivacyTier(tiers[i]), exp, op.now_ms, scope,
                tuple(overlays[i]),
            )  # fmt: skip


def _run(eng: OluoEngine, op, look) -> PersistSnapshot | None:
    out = None
    if op == "compact":
        out = eng.compact()
    elif isinstance(op, tuple) and op[0] == "delete":
        eng.delete(op[1])
    elif isinstance(op, tuple) and op[0] == "evict":
        eng.evict_expired(op[1])
    else:
        acts = eng.handle(op)
        assert not [a for a in acts if isinstance(a, EngineError)]
    look(eng)
    return out


def _nothing(eng: OluoEngine) -> None:
    pass


def _everything(eng: OluoEngine) -> None:
    eng.entries()


def _some(eng: OluoEngine) -> None:
    """Build a few entries: an id lookup, a search's entries, a predicate search."""
    if "w1" in eng:
        eng.entry("w1")
    eng.search(VECS[:3], k=4).entries  # noqa: B018
    eng.search(VECS[3], k=2, predicate=lambda e: e.scope == Scope.NETWORK_WIDE)


def _engine() -> OluoEngine:
    return OluoEngine(8, "l2", compact_threshold=10_000, M=8, ef_construction=40)


@pytest.mark.parametrize("look", [_nothing, _some, _everything], ids=["none", "some", "all"])
def test_fresh_and_restored_engines_match_a_model_whatever_was_looked_at(look):
    model = Model()
    ref, eng = _engine(), _engine()  # ref: every entry built after every step
    restored: list[OluoEngine] = []  # one more engine restored at every compaction
    for op in _ops():
        model.apply(op)
        s_ref = _run(ref, op, _everything)
        snaps = [_run(e, op, look) for e in (eng, *restored)]
        for e in (eng, *restored):  # the count of entries not built yet is exact
            assert e._table.n_lazy == int(e._table.lazy_by_key.sum()) <= len(e)
        if op != "compact":
            continue
        assert all(s == s_ref for s in snaps)  # identical index and metadata bytes
        assert s_ref.metadata_bytes == encode_metadata(
            ref.config.as_dict(),
            s_ref.key_counter,
            s_ref.generation,
            model.entries,
            row_keys=ref._index.base_keys,
        )
        restored.append(
            OluoEngine.from_snapshot(
                s_ref.index_bytes,
                s_ref.metadata_bytes,
                s_ref.key_counter,
                s_ref.generation,
                compact_threshold=10_000,
            )
        )
    assert len(restored) == 2
    q = make_vectors("l2", 5, 8, seed=12)
    r_ref = ref.search(q, k=6)
    for e in (ref, eng, *restored):
        assert e.entries() == model.entries
        assert len(e) == len(model.entries) and e.key_counter == model.next_key
        assert e.scope_counts == ref.scope_counts
        for t, k in model.key_of.items():
            assert e.key_of(t) == k and e.entry(t) == model.entries[k]
        r = e.search(q, k=6)
        assert r.ids.tolist() == r_ref.ids.tolist() and np.array_equal(r.scores, r_ref.scores)
        assert r.entries.tolist() == r_ref.entries.tolist()
    last = ref.compact()
    assert all(e.compact() == last for e in (eng, *restored))


def test_reingest_after_an_entry_was_built_replaces_it():
    eng = OluoEngine(8, "l2", compact_threshold=10_000, M=8, ef_construction=40)
    eng.add(VECS[:4], ids=["a", "b", "c", "d"], metadata={"v": 1}, ttl_secs=5)
    assert eng.entry("a") == EntryMetadata("a", {"v": 1}, PrivacyTier.PUBLIC_DURABLE, 5000, 0)
    eng.add(VECS[3], ids="a", metadata={"v": 2}, now_ms=7, scope=Scope.PERSONAL)
    assert eng.entry("a") == EntryMetadata("a", {"v": 2}, PrivacyTier.PUBLIC_DURABLE, None, 7)
    eng.add(VECS[5], ids="d", now_ms=8)  # never built; its new map is empty
    assert eng.entry("d") == EntryMetadata("d", {}, PrivacyTier.PUBLIC_DURABLE, None, 8)
    eng.compact()
    eng.entry("b")
    eng.add(VECS[4], ids="b", now_ms=9)
    assert eng.entry("b").metadata == {} and eng.entry("b").ingested_at_ms == 9
    assert eng.entry("c").metadata == {"v": 1}  # read back from the stored bytes
    assert eng.evict_expired(10_000) == ["c"]


def test_an_ingested_map_keeps_its_key_order_through_compactions():
    eng = _engine()
    eng.add(VECS[:2], ids=["a", "b"], metadata=[{"zz": 1, "a": 2}, {}])
    for _ in range(2):
        eng.compact(force=True)
        assert list(eng.entry("a").metadata) == ["zz", "a"]  # as given, not canonical
        assert eng.entry("b").metadata == {}
    snap = eng.compact(force=True)
    back = OluoEngine.from_snapshot(snap.index_bytes, snap.metadata_bytes, 2, snap.generation)
    assert back.entry("a").metadata == {"zz": 1, "a": 2}


def test_a_fresh_build_keeps_no_python_object_per_entry():
    """After add + compact the entry table is columns: the Python/NumPy memory it holds
    (faiss's own allocations are not traced) stays a small fixed cost per entry."""
    n = 20_000
    x = make_vectors("l2", n, 8, seed=13)
    gc.collect()
    tracemalloc.start()
    try:
        eng = OluoEngine(8, "l2", compact_threshold=10**9, M=4, ef_construction=8)
        eng.add(x, progress=False)
        del x
        eng.compact()  # (the snapshot is dropped, as a caller does after persisting it)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ids (slot + int object), the per-key columns, the base's key/scope/alive arrays and
    # the stored caller-map offsets: ~130 bytes (it was ~395 with one EntryMetadata and
    # one dict per entry, the id -> key map and the delta's copy of the vectors)
    assert held / n < 200, held / n
    assert len(eng) == n and eng.entry(n - 1).target == n - 1
