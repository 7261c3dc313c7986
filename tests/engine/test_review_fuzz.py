"""Review fuzz: random ingests/deletes/evicts/compactions/restores on a fully-looked-at and a
never-looked-at engine; entries, held search results (ids read or not) and snapshot bytes
must match a model."""
import random

import numpy as np
import pytest
from oluo_lab.engine import EngineError, IndexFull, IndexLightweight, Ingest, OluoEngine, PersistSnapshot, PrivacyTier, Reject, Scope  # noqa: E501
from test_lazy_entries import Model


def run(seed):
    rnd = random.Random(seed); random.seed(seed)
    rng = np.random.default_rng(seed)
    pool = [f"t{i}" for i in range(12)] + list(range(5))
    model = Model()
    TH = rnd.choice([3, 7, 10_000])
    A = OluoEngine(8, "l2", compact_threshold=TH, M=8, ef_construction=40)
    B = OluoEngine(8, "l2", compact_threshold=TH, M=8, ef_construction=40)
    held = []  # (engine, results, expected ids, expected entries)
    now = 0
    for step in range(40):
        r = rnd.random()
        now += rnd.randint(0, 3000)
        if r < 0.5:
            n = rnd.randint(1, 5)
            ts = rnd.sample(pool, n)
            md = rnd.choice([None, "each", {"b": 1}])
            if md == "each": md = [rnd.choice([None, {}, {"x": rnd.randint(0,9), "a": [1]}]) for _ in ts]
            dec = [rnd.choice([IndexFull(), IndexLightweight(rnd.randint(0,5)), Reject()]) for _ in ts]
            if rnd.random() < 0.3: dec = IndexFull()
            sc = [rnd.choice(list(Scope)) for _ in ts]
            tr = [rnd.choice(list(PrivacyTier)) for _ in ts] if rnd.random()<0.5 else PrivacyTier.PUBLIC_DURABLE
            ov = None if rnd.random()<0.5 else [[f"o{rnd.randint(0,3)}"]*rnd.randint(0,2) for _ in ts]
            op = Ingest(rng.standard_normal((n, 8)).astype(np.float32), ts, md, dec, now_ms=now, scope=sc, privacy_tier=tr, overlays=ov)
        elif r < 0.6:
            live = list(model.key_of)
            if not live: continue
            op = ("delete", rnd.sample(live, rnd.randint(1, min(3, len(live)))))
        elif r < 0.7:
            op = ("evict", now)
        else:
            op = "compact"
        model.apply(op)
        outs = []
        for e, look in ((A, True), (B, False)):
            if op == "compact": outs.append(e.compact(force=True)); e.take_snapshots()
            elif isinstance(op, tuple) and op[0] == "delete": e.delete(op[1])
            elif isinstance(op, tuple): e.evict_expired(op[1])
            else:
                acts = e.handle(op)
                if look and any(isinstance(a, PersistSnapshot) for a in acts) and rnd.random()<0.5:
                    sn = [a for a in acts if isinstance(a, PersistSnapshot)][0]
                    A = e = OluoEngine.from_snapshot(sn.index_bytes, sn.metadata_bytes, sn.key_counter, sn.generation, compact_threshold=TH)
                assert not [a for a in acts if isinstance(a, EngineError)], acts
            if look: e.entries()
            elif rnd.random() < 0.5 and model.key_of:
                t = rnd.choice(list(model.key_of)); e.entry(t)
            assert e._n_lazy == int(e._lazy_by_key.sum())
            assert e.entries() == model.entries if look else True
        if op == "compact":
            assert outs[0] == outs[1], step
            s = outs[0]
            if rnd.random() < 0.5:
                B = OluoEngine.from_snapshot(s.index_bytes, s.metadata_bytes, s.key_counter, s.generation, compact_threshold=TH)
        # searches held across events
        if model.entries and rnd.random() < 0.6:
            for e in (A, B):
                q = rng.standard_normal((2, 8)).astype(np.float32)
                res = e.search(q if rnd.random()<0.5 else q[0], k=3, exact=rnd.random()<0.3)
                if res.keys.ndim == 1: res_keys = res.keys[None]
                exp_ids = [[None if k < 0 else model.entries[k].target for k in row] for row in res.keys.tolist()]
                exp_ent = [[None if k < 0 else model.entries[k] for k in row] for row in res.keys.tolist()]
                if rnd.random() < 0.5: res.ids
                held.append((res, exp_ids, exp_ent))
        for res, ei, ee in held:
            if rnd.random() < 0.3:
                assert res.ids.tolist() == ei, (seed, step)
            if rnd.random() < 0.2:
                assert res.entries.tolist() == ee, (seed, step)
    for e in (A, B):
        assert e.entries() == model.entries, seed
    sa, sb = A.compact(force=True), B.compact(force=True)
    assert sa.metadata_bytes == sb.metadata_bytes
    for res, ei, ee in held:
        assert res.ids.tolist() == ei and res.entries.tolist() == ee

@pytest.mark.parametrize("seed", range(12))
def test_review_fuzz(seed):
    run(seed)
