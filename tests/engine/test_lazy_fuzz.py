"""Model-based fuzz of lazily built entries.

Random ingests (every field varied), re-ingests, deletes, evictions, forced and automatic
compactions and restores from snapshots run on two engines: one whose entries are all
looked at after every step, one whose entries are (mostly) never built. Both must agree
with a model, held search results (ids read at once or not) must keep describing the
engine at search time, and both must write identical snapshot bytes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from test_lazy_entries import Model

from oluo_lab.engine import (
    EngineError,
    IndexFull,
    IndexLightweight,
    Ingest,
    OluoEngine,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
)


def _random_ingest(rnd: random.Random, rng: np.random.Generator, pool: list, now: int) -> Ingest:
    n = rnd.randint(1, 5)
    targets = rnd.sample(pool, n)
    meta = rnd.choice([None, "each", {"b": 1}])
    if meta == "each":
        meta = [rnd.choice([None, {}, {"x": rnd.randint(0, 9), "a": [1]}]) for _ in targets]
    decisions = [
        rnd.choice([IndexFull(), IndexLightweight(rnd.randint(0, 5)), Reject()]) for _ in targets
    ]
    if rnd.random() < 0.3:
        decisions = IndexFull()
    scopes = [rnd.choice(list(Scope)) for _ in targets]
    tiers = (
        [rnd.choice(list(PrivacyTier)) for _ in targets]
        if rnd.random() < 0.5
        else PrivacyTier.PUBLIC_DURABLE
    )
    overlays = (
        None
        if rnd.random() < 0.5
        else [[f"o{rnd.randint(0, 3)}"] * rnd.randint(0, 2) for _ in targets]
    )
    vecs = rng.standard_normal((n, 8)).astype(np.float32)
    return Ingest(
        vecs,
        targets,
        meta,
        decisions,
        now_ms=now,
        scope=scopes,
        privacy_tier=tiers,
        overlays=overlays,
    )


def _restore(snap: PersistSnapshot, threshold: int) -> OluoEngine:
    return OluoEngine.from_snapshot(
        snap.index_bytes,
        snap.metadata_bytes,
        snap.key_counter,
        snap.generation,
        compact_threshold=threshold,
    )


@pytest.mark.parametrize("seed", range(12))
def test_lazy_entries_agree_with_a_model_under_random_operations(seed):
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    pool = [f"t{i}" for i in range(12)] + list(range(5))
    model = Model()
    threshold = rnd.choice([3, 7, 10_000])
    looked = OluoEngine(8, "l2", compact_threshold=threshold, M=8, ef_construction=40)
    unlooked = OluoEngine(8, "l2", compact_threshold=threshold, M=8, ef_construction=40)
    held = []  # (results, expected ids, expected entries) at search time
    now = 0
    for step in range(40):
        r = rnd.random()
        now += rnd.randint(0, 3000)
        if r < 0.5:
            op = _random_ingest(rnd, rng, pool, now)
        elif r < 0.6:
            live = list(model.key_of)
            if not live:
                continue
            op = ("delete", rnd.sample(live, rnd.randint(1, min(3, len(live)))))
        elif r < 0.7:
            op = ("evict", now)
        else:
            op = "compact"
        model.apply(op)
        snaps = []
        engines = [looked, unlooked]
        for i, look in ((0, True), (1, False)):
            e = engines[i]
            if op == "compact":
                snaps.append(e.compact(force=True))
                e.take_snapshots()
            elif isinstance(op, tuple) and op[0] == "delete":
                e.delete(op[1])
            elif isinstance(op, tuple):
                e.evict_expired(op[1])
            else:
                acts = e.handle(op)
                assert not [a for a in acts if isinstance(a, EngineError)], acts
                auto = [a for a in acts if isinstance(a, PersistSnapshot)]
                if look and auto and rnd.random() < 0.5:
                    e = engines[i] = _restore(auto[0], threshold)  # right after an auto-compaction
            if look:
                assert e.entries() == model.entries, (seed, step)
            elif rnd.random() < 0.5 and model.key_of:
                e.entry(rnd.choice(list(model.key_of)))  # build one entry now and then
            assert e._table.n_lazy == int(e._table.lazy_by_key.sum())
        looked, unlooked = engines
        if op == "compact":
            assert snaps[0] == snaps[1], (seed, step)
            if rnd.random() < 0.5:
                unlooked = _restore(snaps[0], threshold)
        if model.entries and rnd.random() < 0.6:
            for e in (looked, unlooked):
                q = rng.standard_normal((2, 8)).astype(np.float32)
                res = e.search(q if rnd.random() < 0.5 else q[0], k=3, exact=rnd.random() < 0.3)
                rows = res.keys.tolist()
                exp_ids = [
                    [None if k < 0 else model.entries[k].target for k in row] for row in rows
                ]
                exp_entries = [[None if k < 0 else model.entries[k] for k in row] for row in rows]
                if rnd.random() < 0.5:
                    assert res.ids.tolist() == exp_ids  # ids read at once, entries later
                held.append((res, exp_ids, exp_entries))
        for res, exp_ids, exp_entries in held:
            if rnd.random() < 0.3:
                assert res.ids.tolist() == exp_ids, (seed, step)
            if rnd.random() < 0.2:
                assert res.entries.tolist() == exp_entries, (seed, step)
    for e in (looked, unlooked):
        assert e.entries() == model.entries, seed
    assert looked.compact(force=True).metadata_bytes == unlooked.compact(force=True).metadata_bytes
    for res, exp_ids, exp_entries in held:
        assert res.ids.tolist() == exp_ids and res.entries.tolist() == exp_entries
