"""In-place repair of a faiss HNSW graph after deletions (engine layer, no policy).

:func:`repair_graph` turns the positions of deleted vectors into *holes* and re-links
the live nodes that pointed at them, without rebuilding the graph:

* every live node whose list at some level names a deleted node gets a new list
  chosen from its live neighbours and the live neighbours of its deleted neighbours
  (FreshDiskANN's ``process_delete`` candidate pool), with the rule faiss's build uses
  to re-prune an existing list (``merge_reverse_links`` in faiss/impl/HNSW.cpp): a
  pool no larger than the list's capacity is kept whole; a larger pool is sorted by
  (distance, position) and filtered with the HNSW neighbour-selection heuristic
  (``shrink_neighbor_list``: a candidate is dropped when a neighbour already kept is
  strictly closer to it than the node is) up to ``(1 - prune_headroom)`` of the
  capacity. The list is then *topped up* from the rejected candidates, nearest first,
  to its previous length (``top_up="previous"``) or to capacity (``"capacity"``, the
  rule of faiss's ``keep_max_size_level0``), so degrees do not decay generation after
  generation;
* a hole keeps its rows in ``levels``/``offsets``, has no links out (every slot -1),
  none in (no live list names it) and zeroed vector bytes;
* a deleted entry point is replaced by the live node with the highest level (the
  smallest position among equals), and ``max_level`` follows it.

Lists stay packed left and padded with -1 (faiss's search stops at the first -1). A
repaired list keeps each surviving neighbour in its slot and puts new neighbours in
the freed slots, so most of a list's bytes, and the index codec's neighbour blocks,
stay as they were.

Everything is computed from the parent graph, in numpy and batched over many nodes
at once (no per-node Python loop): gathers of candidate pools, distances of a batch
as one matrix product, the greedy heuristic as one vector step per candidate rank
across the whole batch. The result is a pure function of (parent bytes, deleted
positions): no RNG, no threads, ties broken by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = [
    "TOP_UP_RULES",
    "RepairStats",
    "graph_arrays",
    "graph_problems",
    "repair_graph",
    "unreachable",
]

#: how a repaired list is topped up from rejected candidates (see module docstring)
TOP_UP_RULES = ("previous", "capacity")
#: candidates (rows x width) per batch: a batch's gathered vectors (4 * dim bytes per
#: candidate) stay under glibc's 32 MB mmap threshold at dim <= 64, so batches reuse heap
#: memory instead of page-faulting fresh mappings (3x faster at 100k nodes)
_BATCH_CELLS = 1 << 17
#: rows of affected nodes gathered at once before grouping by pool size
_ROW_CHUNK = 1 << 15
#: candidate ranks the greedy heuristic decides per batched distance product
_BLOCK = 16


@dataclass(frozen=True)
class RepairStats:
    """What one repair changed."""

    holes: int  # positions turned into holes
    relinked: tuple[int, ...]  # live nodes whose list changed, per level
    entry_point: int  # the entry point after the repair
    max_level: int


def _pruned_size(cap: int, prune_headroom: float) -> int:
    """faiss's ``pruned_neighbor_size``: ``size_t(cap - cap * clamp(h, 0, 0.5))`` in float32."""
    h = np.float32(min(max(prune_headroom, 0.0), 0.5))
    return max(int(np.float32(cap) - np.float32(cap) * h), 1)


def graph_arrays(ix: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(neighbors, offsets, levels, cum_nneighbor) of an HNSW index as numpy arrays.

    ``neighbors`` is a writable zero-copy view of the index's own array (never use it
    on a memory-mapped base); the others are copies. ``levels`` holds level + 1."""
    h = ix.hnsw
    nb = h.neighbors
    size = int(nb.size())
    nbrs = faiss.rev_swig_ptr(nb.data(), size) if size else np.zeros(0, np.int32)
    offsets = faiss.vector_to_array(h.offsets).astype(np.int64)
    levels = faiss.vector_to_array(h.levels).astype(np.int64)
    cum = faiss.vector_to_array(h.cum_nneighbor_per_level).astype(np.int64)
    return nbrs, offsets, levels, cum


def _vectors(ix: object) -> np.ndarray:
    n, d = int(ix.ntotal), int(ix.d)
    if n == 0:
        return np.zeros((0, d), np.float32)
    st = faiss.downcast_index(ix.storage)
    return faiss.rev_swig_ptr(st.get_xb(), n * d).reshape(n, d)


def repair_graph(
    ix: object,
    dead: np.ndarray,
    *,
    prune_headroom: float,
    top_up: str = "previous",
) -> RepairStats:
    """Turn positions ``dead`` of the float HNSW index ``ix`` into holes, in place.

    ``ix`` must own its arrays (a deserialised or cloned index, never a memory-mapped
    one). ``dead``: positions of live nodes to delete (unique). ``prune_headroom``: the
    build's ``hnsw.prune_headroom`` (the heuristic keeps at most ``(1 - headroom)`` of a
    list's capacity before the top-up). ``top_up``: one of :data:`TOP_UP_RULES`."""
    if top_up not in TOP_UP_RULES:
        raise ValueError(f"top_up must be one of {TOP_UP_RULES}, got {top_up!r}")
    n = int(ix.ntotal)
    dead = np.unique(np.asarray(dead, np.int64))
    if len(dead) and (dead[0] < 0 or dead[-1] >= n):
        raise ValueError(f"dead positions must be in 0..{n - 1}")
    h = ix.hnsw
    nbrs, offsets, levels, cum = graph_arrays(ix)
    x = _vectors(ix)
    l2 = ix.metric_type == faiss.METRIC_L2
    is_dead = np.zeros(n + 1, bool)  # shifted by one: index 0 stands for an empty slot
    is_dead[dead + 1] = True
    # every slot naming a dead node, as (owner, level) of its list
    hits = np.flatnonzero(is_dead[nbrs + 1])
    owner = np.searchsorted(offsets, hits, side="right") - 1
    level_of = np.searchsorted(cum, hits - offsets[owner], side="right") - 1
    live_owner = ~is_dead[owner + 1]
    is_dead = is_dead[1:]
    pairs = np.unique(owner[live_owner] * 64 + level_of[live_owner])
    relinked = []
    for level in range(int(levels.max()) if n else 0):
        cap = int(cum[level + 1] - cum[level])
        nodes = pairs[pairs % 64 == level] // 64
        relinked.append(len(nodes))
        if not len(nodes):
            continue
        new = _repair_level(
            x,
            l2,
            nbrs,
            offsets + cum[level],
            nodes,
            is_dead,
            cap,
            _pruned_size(cap, prune_headroom),
            top_up,
        )
        nbrs[(offsets[nodes] + cum[level])[:, None] + np.arange(cap)] = new
    # holes: no links out, no vector bytes
    for p in dead.tolist():
        nbrs[offsets[p] : offsets[p + 1]] = -1
    x[dead] = 0
    ep, max_level = int(h.entry_point), int(h.max_level)
    if n and (ep < 0 or is_dead[ep]):
        live_levels = np.where(is_dead, 0, levels)
        if live_levels.max() > 0:
            ep = int(np.argmax(live_levels))  # first position of the highest level
            max_level = int(live_levels[ep]) - 1
        else:
            ep, max_level = -1, -1
        h.entry_point = ep
        h.max_level = max_level
    return RepairStats(len(dead), tuple(relinked), ep, max_level)


def _repair_level(
    x: np.ndarray,
    l2: bool,
    nbrs: np.ndarray,
    starts: np.ndarray,
    nodes: np.ndarray,
    is_dead: np.ndarray,
    cap: int,
    limit: int,
    top_up: str,
) -> np.ndarray:
    """New lists (int32, (len(nodes), cap)) of live ``nodes`` whose list on one level
    names a dead node. ``starts[p]``: where node p's list on this level begins in
    ``nbrs``."""
    lists = nbrs[starts[nodes][:, None] + np.arange(cap)].astype(np.int64)
    valid = lists >= 0
    hit = valid & is_dead[np.where(valid, lists, 0)]
    n_dead = hit.sum(axis=1)
    # the length each list is topped up to: its previous degree, or its capacity
    target = valid.sum(axis=1) if top_up == "previous" else np.full(len(nodes), cap)
    out = np.empty((len(nodes), cap), np.int32)
    # rows with the same number of dead neighbours gather pools of the same width
    for rows in _chunks(np.argsort(n_dead, kind="stable"), _ROW_CHUNK):
        pools = _pools(
            nbrs, starts, nodes[rows], lists[rows], hit[rows], n_dead[rows], is_dead, cap
        )
        n_valid = (pools >= 0).sum(axis=1)
        # rows with similar pool sizes share a batch, so padding stays small
        by_size = np.argsort(n_valid, kind="stable")
        i = 0
        while i < len(rows):
            # as many rows as the narrowest allows, then cut to what the widest allows
            j = min(i + _batch_rows(n_valid[by_size[i]]), len(rows))
            j = min(i + _batch_rows(n_valid[by_size[j - 1]]), j)
            width = max(int(n_valid[by_size[j - 1]]), 1)
            sel = by_size[i:j]
            old = lists[rows[sel]]
            chosen = _select(
                x,
                l2,
                nodes[rows[sel]],
                pools[sel, :width],
                cap,
                limit,
                target[rows[sel]],
                old,
            )
            out[rows[sel]] = _layout(old, chosen)
            i = j
    return out


def _chunks(a: np.ndarray, size: int) -> list[np.ndarray]:
    return [a[i : i + size] for i in range(0, len(a), size)]


def _batch_rows(width: int) -> int:
    return max(1, _BATCH_CELLS // max(int(width), 1))


def _pools(
    nbrs: np.ndarray,
    starts: np.ndarray,
    owners: np.ndarray,
    own: np.ndarray,
    own_hit: np.ndarray,
    k: np.ndarray,
    is_dead: np.ndarray,
    cap: int,
) -> np.ndarray:
    """Candidate pools of ``owners`` (lists ``own``, dead slots ``own_hit``, ``k`` of
    them per row): live neighbours and the live neighbours of dead neighbours, without
    the node itself, unique, ascending, padded with -1 at the end (n_rows, width)."""
    kmax = int(k.max())
    # the dead neighbours of each row, left-packed into (n_rows, kmax)
    order = np.argsort(~own_hit, axis=1, kind="stable")[:, :kmax]
    dead_nb = np.take_along_axis(own, order, axis=1)
    dead_ok = np.arange(kmax)[None, :] < k[:, None]
    second = nbrs[starts[np.where(dead_ok, dead_nb, 0)][:, :, None] + np.arange(cap)]
    second = np.where(dead_ok[:, :, None], second, -1).reshape(len(owners), -1)
    pool = np.concatenate([own, second], axis=1)
    bad = (pool < 0) | (pool == owners[:, None]) | is_dead[np.where(pool >= 0, pool, 0)]
    big = np.iinfo(np.int64).max
    pool = np.sort(np.where(bad, big, pool), axis=1)
    drop = pool == big
    drop[:, 1:] |= pool[:, 1:] == pool[:, :-1]
    width = int((~drop).sum(axis=1).max())
    # left-pack what is kept: a stable sort of a bool mask keeps the ascending order
    pool = np.take_along_axis(
        np.where(drop, -1, pool), np.argsort(drop, axis=1, kind="stable"), axis=1
    )
    return pool[:, :width]


def _select(
    x: np.ndarray,
    l2: bool,
    owners: np.ndarray,
    pool: np.ndarray,
    cap: int,
    limit: int,
    target: np.ndarray,
    old: np.ndarray,
) -> np.ndarray:
    """The new neighbour set of each owner, nearest first, padded with -1 (b, cap).

    ``pool`` (b, w): candidates ascending by position, -1 at the end. A pool of at most
    ``cap`` candidates is kept whole; a larger one goes through the heuristic (up to
    ``limit``) and is topped up to ``target`` from what the heuristic rejected."""
    b, w = pool.shape
    valid = pool >= 0
    n_valid = valid.sum(axis=1)
    xc = x[np.where(valid, pool, 0)]  # (b, w, d)
    xp = x[owners]
    dq = _distances(xc, xp[:, None, :], l2)[:, :, 0]
    dq[~valid] = np.inf
    # pools ascend by position, so a stable sort breaks distance ties by position
    order = np.argsort(dq, axis=1, kind="stable")
    keep = np.take_along_axis(valid, order, axis=1)  # by rank
    ranked = np.take_along_axis(pool, order, axis=1)
    rows = np.nonzero(n_valid > cap)[0]
    if len(rows):
        ranked_rows = ranked[rows]
        dq_rows = np.take_along_axis(dq[rows], order[rows], axis=1)
        xs = xc[rows[:, None], order[rows]]  # (r, w, d), nearest first
        keep[rows] = _heuristic(xs, dq_rows, n_valid[rows], l2, limit)
        # top up from the rejected candidates: the node's own surviving neighbours
        # first (they keep their slots, so the list changes less), then the others,
        # nearest first
        count = keep[rows].sum(axis=1)
        want = np.minimum(np.maximum(target[rows], count), cap)
        rejected = ~keep[rows] & (np.arange(w)[None, :] < n_valid[rows, None])
        was_there = (ranked_rows[:, :, None] == old[rows][:, None, :]).any(axis=2)
        for group in (rejected & was_there, rejected & ~was_there):
            add = group & (np.cumsum(group, axis=1) <= (want - count)[:, None])
            keep[rows] |= add
            count = count + add.sum(axis=1)
    # left-pack the chosen candidates, nearest first
    pick = np.argsort(~keep, axis=1, kind="stable")[:, :cap]
    chosen = np.take_along_axis(np.where(keep, ranked, -1), pick, axis=1)
    if chosen.shape[1] < cap:
        chosen = np.pad(chosen, ((0, 0), (0, cap - chosen.shape[1])), constant_values=-1)
    return chosen


def _distances(
    a: np.ndarray,
    b: np.ndarray,
    l2: bool,
    a_sq: np.ndarray | None = None,
    b_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Batched distance matrices (ascending = closer) between rows of ``a`` (r, i, d)
    and ``b`` (r, j, d): squared L2, or the negated inner product. ``a_sq`` / ``b_sq``:
    the squared norms of ``a`` (r, i) / ``b`` (r, j) when already known (L2 only)."""
    dots = np.matmul(a, b.transpose(0, 2, 1))
    if not l2:
        return np.negative(dots, out=dots)
    if a_sq is None:
        a_sq = np.einsum("rid,rid->ri", a, a)
    if b_sq is None:
        b_sq = a_sq if a is b else np.einsum("rjd,rjd->rj", b, b)
    dots *= -2
    dots += a_sq[:, :, None]
    dots += b_sq[:, None, :]
    return dots


def _heuristic(
    xs: np.ndarray, dq: np.ndarray, n_valid: np.ndarray, l2: bool, limit: int
) -> np.ndarray:
    """faiss's ``shrink_neighbor_list`` over many pools at once: which candidates (by
    rank) are kept. ``xs`` (r, w, d): the vectors of each pool's candidates nearest
    first (``n_valid`` of them, then padding), ``dq`` their distances to the owner. A
    candidate is kept when no kept candidate is strictly closer to it than the owner is,
    until ``limit`` are kept.

    Candidates are taken in blocks of :data:`_BLOCK` ranks: one batched product gives a
    block's distances to the candidates kept so far, another those within the block,
    then a vector step per rank decides the block. A pool leaves the batch once it has
    ``limit`` candidates or none left, so the work follows what the greedy rule needs
    (about w * kept distances per pool) rather than all w * w pairs."""
    r, w, d = xs.shape
    sq = np.einsum("rwd,rwd->rw", xs, xs) if l2 else None
    keep = np.zeros((r, w), bool)
    count = np.zeros(r, np.int64)
    kept_x = np.zeros((r, min(limit, w), d), xs.dtype)
    kept_sq = np.zeros((r, min(limit, w)), xs.dtype)
    for s in range(0, w, _BLOCK):
        rows = np.nonzero((count < limit) & (n_valid > s))[0]
        if not len(rows):
            break
        e = min(s + _BLOCK, w)
        xb = xs[rows, s:e]
        dqb = dq[rows, s:e, None]
        sqb = None if sq is None else sq[rows, s:e]
        c0 = count[rows]
        # conflicts with the candidates kept in earlier blocks
        kmax = int(c0.max())
        if kmax:
            kept_sqb = None if sq is None else kept_sq[rows, :kmax]
            old = _distances(xb, kept_x[rows, :kmax], l2, sqb, kept_sqb)
            blocked = ((old < dqb) & (np.arange(kmax)[None, None, :] < c0[:, None, None])).any(2)
        else:
            blocked = np.zeros((len(rows), e - s), bool)
        inner = _distances(xb, xb, l2, sqb)
        inner = inner < dqb  # inner[p, j, i]: block candidate i is closer to j than the owner
        kb = np.zeros((len(rows), e - s), bool)
        cnt = c0.copy()
        nv = n_valid[rows]
        for j in range(e - s):
            ok = (s + j < nv) & (cnt < limit) & ~blocked[:, j]
            if j:
                ok &= ~(inner[:, j, :j] & kb[:, :j]).any(axis=1)
            kb[:, j] = ok
            cnt += ok
        keep[rows, s:e] = kb
        # append the block's kept candidates to each pool's kept set
        pr, pj = np.nonzero(kb)
        slot = (c0[:, None] + np.cumsum(kb, axis=1) - 1)[pr, pj]
        kept_x[rows[pr], slot] = xb[pr, pj]
        if sq is not None:
            kept_sq[rows[pr], slot] = sq[rows[pr], s + pj]
        count[rows] = cnt
    return keep


def _layout(old: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Write each chosen set over the old list so that surviving neighbours keep their
    slots: new neighbours fill the freed slots (in order), then the list is packed
    left by moving its last entries into the remaining gaps."""
    b, cap = old.shape
    pos = np.arange(cap)
    # which old entries survive, and which chosen ones are new
    survive = (old[:, :, None] == chosen[:, None, :]).any(axis=2) & (old >= 0)
    is_new = ~(chosen[:, :, None] == old[:, None, :]).any(axis=2) & (chosen >= 0)
    out = np.where(survive, old, -1)
    free = out < 0
    # the k-th free slot gets the k-th new neighbour
    free_rank = np.cumsum(free, axis=1) - 1
    n_new = is_new.sum(axis=1)
    fill = free & (free_rank < n_new[:, None])
    r_fill, c_fill = np.nonzero(fill)
    r_new, c_new = np.nonzero(is_new)
    # both lists come row-major, so the k-th fill slot of a row meets its k-th new id
    out[r_fill, c_fill] = chosen[r_new, c_new]
    # pack: entries at or after the final length move into the gaps before it
    m = (out >= 0).sum(axis=1)
    gaps = (out < 0) & (pos[None, :] < m[:, None])
    movers = (out >= 0) & (pos[None, :] >= m[:, None])
    if gaps.any():
        r_g, c_g = np.nonzero(gaps)
        r_m, c_m = np.nonzero(movers)
        out[r_g, c_g] = out[r_m, c_m]
        out[r_m, c_m] = -1
    return out


def graph_problems(ix: object, holes: np.ndarray, limit: int = 20) -> list[tuple[int, str]]:
    """The invariants of a float HNSW base with holes, as ``(position, message)`` rows
    (at most ``limit``; empty when all hold):

    * every list is packed left (no neighbour after a -1) and names positions in range;
    * a hole has no links out, its vector bytes are zero, and no live list names it;
    * the entry point is live and on the top level, and no live node is above it."""
    n = int(ix.ntotal)
    found: list[tuple[int, str]] = []

    def report(positions: np.ndarray, message: str) -> None:
        for p in positions[: max(limit - len(found), 0)].tolist():
            found.append((int(p), message))

    holes = np.asarray(holes, np.int64)
    is_hole = np.zeros(n, bool)
    is_hole[holes] = True
    nbrs, offsets, levels, cum = graph_arrays(ix)
    for level in range(int(levels.max()) if n else 0):
        cap = int(cum[level + 1] - cum[level])
        nodes = np.nonzero(levels > level)[0]
        lists = nbrs[offsets[nodes, None] + cum[level] + np.arange(cap)].astype(np.int64)
        at = f"level {level}"
        report(nodes[((lists < -1) | (lists >= n)).any(axis=1)], f"{at}: neighbour out of range")
        empty = lists < 0
        report(nodes[(empty[:, :-1] & ~empty[:, 1:]).any(axis=1)], f"{at}: list not packed left")
        report(nodes[is_hole[nodes] & ~empty.all(axis=1)], f"{at}: hole has links out")
        names_hole = ~empty & is_hole[np.clip(lists, 0, max(n - 1, 0))]
        report(nodes[~is_hole[nodes] & names_hole.any(axis=1)], f"{at}: list names a hole")
    if len(holes):
        report(holes[(_vectors(ix)[holes] != 0).any(axis=1)], "hole vector bytes not zero")
    live = ~is_hole
    if live.any():
        ep, top = int(ix.hnsw.entry_point), int(ix.hnsw.max_level)
        if not 0 <= ep < n or is_hole[ep]:
            found.append((ep, "entry point is not a live position"))
        elif int(levels[ep]) - 1 != top:
            found.append((ep, f"entry point is on level {int(levels[ep]) - 1}, max_level {top}"))
        report(np.nonzero(live & (levels - 1 > top))[0], f"live node above max_level {top}")
    return found[:limit]


def unreachable(ix: object, holes: np.ndarray) -> int:
    """Live positions a search cannot reach at level 0 from the entry point."""
    n = int(ix.ntotal)
    if n == 0 or ix.hnsw.entry_point < 0:
        return 0
    nbrs, offsets, _, cum = graph_arrays(ix)
    level0 = nbrs[offsets[:n, None] + np.arange(int(cum[1]))]
    seen = np.zeros(n, bool)
    seen[np.asarray(holes, np.int64)] = True
    frontier = np.array([int(ix.hnsw.entry_point)])
    seen[frontier] = True
    while len(frontier):
        nxt = level0[frontier].ravel()
        nxt = np.unique(nxt[nxt >= 0])
        nxt = nxt[~seen[nxt]]
        seen[nxt] = True
        frontier = nxt
    return int((~seen).sum())
