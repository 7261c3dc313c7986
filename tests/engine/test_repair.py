"""In-place graph repair (oluo_lab.engine._repair) against a literal reference of the rule.

The reference below re-implements, one node at a time in plain Python, what the
vectorised repair must compute: FreshDiskANN's candidate pool, faiss's
``merge_reverse_links`` selection (keep a pool that fits; else sort by (distance,
position) and apply ``shrink_neighbor_list`` up to the pruned size) and the degree
top-up (the node's own surviving neighbours first, then the others, nearest first).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from oluo_lab.engine._repair import (
    _pruned_size,
    graph_arrays,
    graph_problems,
    repair_graph,
    unreachable,
)


def _index(metric: str, n: int = 1500, d: int = 16, M: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if metric == "ip":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    fm = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    ix = faiss.IndexHNSWFlat(d, M, fm)
    ix.hnsw.efConstruction = 40
    ix.hnsw.rng = faiss.RandomGenerator(7)
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ix.add(x)
    finally:
        faiss.omp_set_num_threads(prev)
    return ix, x


def _reference(ix, x, metric, dead, headroom, top_up):
    """{(level, node): expected neighbour set} for every live node whose list changes."""
    nbrs, offsets, levels, cum = graph_arrays(ix)
    is_dead = np.zeros(len(x), bool)
    is_dead[dead] = True

    def dist(a, b):
        if metric == "ip":
            return -float(np.dot(x[a], x[b]))
        return float(((x[a] - x[b]) ** 2).sum())

    def lst(node, level):
        lo = int(offsets[node] + cum[level])
        return [int(v) for v in nbrs[lo : lo + int(cum[level + 1] - cum[level])] if v >= 0]

    want = {}
    for level in range(int(levels.max())):
        cap = int(cum[level + 1] - cum[level])
        limit = _pruned_size(cap, headroom)
        for p in np.nonzero(levels > level)[0].tolist():
            old = lst(p, level)
            if is_dead[p] or not any(is_dead[v] for v in old):
                continue
            pool = {v for v in old if not is_dead[v]}
            for v in old:
                if is_dead[v]:
                    pool |= {u for u in lst(v, level) if not is_dead[u]}
            pool.discard(p)
            if len(pool) <= cap:
                want[level, p] = pool
                continue
            ranked = sorted((dist(p, v), v) for v in pool)
            kept, rejected = [], []
            for dq, v in ranked:
                ok = len(kept) < limit and all(not dist(k, v) < dq for _, k in kept)
                (kept if ok else rejected).append((dq, v))
            target = min(len(old) if top_up == "previous" else cap, cap)
            olds = set(old)
            for item in [r for r in rejected if r[1] in olds] + [
                r for r in rejected if r[1] not in olds
            ]:
                if len(kept) >= target:
                    break
                kept.append(item)
            want[level, p] = {v for _, v in kept}
    return want


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("top_up", ["previous", "capacity"])
def test_repair_matches_the_reference_rule(metric, top_up):
    ix, x = _index(metric)
    rng = np.random.default_rng(1)
    dead = rng.choice(len(x), 60, replace=False)
    want = _reference(ix, x, metric, dead, 0.2, top_up)
    before = graph_arrays(ix)[0].copy()
    stats = repair_graph(ix, dead, prune_headroom=0.2, top_up=top_up)
    nbrs, offsets, levels, cum = graph_arrays(ix)
    assert want, "the deletions must touch some lists"
    for (level, p), expected in want.items():
        lo = int(offsets[p] + cum[level])
        got = nbrs[lo : lo + int(cum[level + 1] - cum[level])]
        assert set(got[got >= 0].tolist()) == expected, (level, p)
    # every other live list is untouched
    touched = np.zeros(len(before), bool)
    for level, p in want:
        lo = int(offsets[p] + cum[level])
        touched[lo : lo + int(cum[level + 1] - cum[level])] = True
    for p in dead:
        touched[int(offsets[p]) : int(offsets[p + 1])] = True
    assert np.array_equal(before[~touched], nbrs[~touched])
    assert stats.holes == 60
    assert graph_problems(ix, np.sort(dead)) == []


def test_kept_neighbours_keep_their_slots():
    ix, x = _index("ip")
    dead = np.random.default_rng(2).choice(len(x), 30, replace=False)
    before = graph_arrays(ix)[0].copy()
    repair_graph(ix, dead, prune_headroom=0.2)
    after, offsets, levels, cum = graph_arrays(ix)
    is_dead = np.zeros(len(x), bool)
    is_dead[dead] = True
    moved = kept = 0
    for p in np.nonzero(~is_dead)[0]:
        old, new = before[offsets[p] : offsets[p] + cum[1]], after[offsets[p] : offsets[p] + cum[1]]
        for slot, v in enumerate(old.tolist()):
            if v >= 0 and v in new:
                kept += 1
                moved += new[slot] != v
    # an entry moves only to fill a gap left of it (packing): rare
    assert moved < 0.02 * kept


def test_holes_are_unlinked_and_zeroed():
    ix, x = _index("l2")
    dead = np.arange(0, len(x), 7)
    repair_graph(ix, dead, prune_headroom=0.2)
    nbrs, offsets, levels, cum = graph_arrays(ix)
    xb = faiss.rev_swig_ptr(faiss.downcast_index(ix.storage).get_xb(), ix.ntotal * ix.d)
    xb = xb.reshape(ix.ntotal, ix.d)
    assert not xb[dead].any()
    for p in dead:
        assert (nbrs[offsets[p] : offsets[p + 1]] == -1).all()
    assert not np.isin(nbrs, dead).any()
    # a search never returns a hole, even asking for every position
    _, found = ix.search(x[:50], 100)
    assert not np.isin(found, dead).any()


def test_dead_entry_point_is_replaced_by_the_first_highest_live_node():
    ix, x = _index("ip")
    _, _, levels, _ = graph_arrays(ix)
    ep = int(ix.hnsw.entry_point)
    top = levels.max()
    dead = np.nonzero(levels == top)[0]  # the whole top level
    assert ep in dead
    stats = repair_graph(ix, dead, prune_headroom=0.2)
    live_levels = levels.copy()
    live_levels[dead] = 0
    assert stats.entry_point == int(np.argmax(live_levels)) == ix.hnsw.entry_point
    assert ix.hnsw.max_level == int(live_levels.max()) - 1 == stats.max_level
    assert graph_problems(ix, dead) == []


def test_repair_is_a_pure_function_of_graph_and_dead_set():
    a, x = _index("ip", seed=3)
    b = faiss.clone_index(a)
    dead = np.random.default_rng(3).choice(len(x), 40, replace=False)
    repair_graph(a, dead, prune_headroom=0.2)
    repair_graph(b, dead[::-1].copy(), prune_headroom=0.2)  # order of the dead set is irrelevant
    assert faiss.serialize_index(a).tobytes() == faiss.serialize_index(b).tobytes()


def test_appends_after_holes_never_link_to_them():
    ix, x = _index("ip")
    dead = np.random.default_rng(4).choice(len(x), 100, replace=False)
    repair_graph(ix, np.sort(dead), prune_headroom=0.2)
    ix.add(np.random.default_rng(5).standard_normal((300, x.shape[1])).astype(np.float32))
    assert graph_problems(ix, np.sort(dead)) == []
    assert unreachable(ix, np.sort(dead)) <= 0.01 * (ix.ntotal - len(dead))


def test_graph_problems_name_the_position():
    ix, x = _index("ip")
    dead = np.sort(np.random.default_rng(6).choice(len(x), 20, replace=False))
    repair_graph(ix, dead, prune_headroom=0.2)
    nbrs, offsets, _, _ = graph_arrays(ix)
    live = int(np.setdiff1d(np.arange(len(x)), dead)[0])
    nbrs[offsets[live]] = dead[0]  # a live list names a hole
    xb = faiss.rev_swig_ptr(faiss.downcast_index(ix.storage).get_xb(), ix.ntotal * ix.d)
    xb[dead[1] * ix.d] = 1.0  # a hole keeps a vector byte
    nbrs[offsets[dead[2]]] = live  # a hole links out
    problems = graph_problems(ix, dead)
    assert (live, "level 0: list names a hole") in problems
    assert (int(dead[1]), "hole vector bytes not zero") in problems
    assert (int(dead[2]), "level 0: hole has links out") in problems


def test_bad_arguments_are_refused():
    ix, x = _index("ip", n=200)
    with pytest.raises(ValueError, match="top_up"):
        repair_graph(ix, [1], prune_headroom=0.2, top_up="all")
    with pytest.raises(ValueError, match="dead positions"):
        repair_graph(ix, [len(x)], prune_headroom=0.2)
