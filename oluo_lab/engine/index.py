"""Compound vector index: an immutable faiss HNSW base plus an exact mutable delta.

* **base**: ``faiss.IndexHNSWFlat`` (cosine/ip: inner product, l2: squared L2)
  or ``faiss.IndexBinaryHNSW`` (hamming over all bits of packed codes). Base
  position ``i`` holds key ``base_keys[i]`` (-1: a *hole*, see below). A full rebuild
  renumbers the float positions in breadth-first order of the new graph
  (:func:`locality_order`: graph neighbours sit close in memory, so a search touches
  fewer cache lines); rows a copy-on-write append adds follow in ascending key order,
  and the old positions keep theirs. ``base_pos`` maps keys to positions through a
  sorted copy. Deleted, evicted and shadowed (re-ingested) positions are tombstoned
  in ``base_alive``; the next compaction either rebuilds without them or, under the
  :class:`CompactionPolicy`, repairs the graph in place (``_repair.py``) and leaves
  them as holes: zeroed, unlinked positions no search can reach.
* **delta**: NumPy rows searched exactly with ``faiss.knn`` / ``faiss.knn_hamming``.
  A key in the delta shadows its base position.

Filters (scope, optional per-key mask) are applied inside the base search with an
``IDSelectorBitmap`` in ``SearchParametersHNSW``; rows that still come back short
(HNSW can miss allowed points under a very selective filter) are retried with a
doubled ``efSearch`` and finally answered exactly, so a query returns
``min(k, allowed)`` hits. Very selective filters (<= ``EXACT_LIMIT`` allowed base
positions) are answered exactly from the stored vectors straight away.

Scores (ascending = better): cosine ``1 - cos``; l2 squared Euclidean; ip
``-<q, x>``; hamming differing bits / n_bits.

Layer: engine. The index lives in memory, except that a base may be memory-mapped
from a file whose path the caller gives (:meth:`CompoundIndex.map_file`,
:meth:`CompoundIndex.swap_to_file`). faiss's native side is in ``_faiss_native.py``,
the exact-match probe in ``_exact_match.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import blake3
import faiss
import numpy as np

try:  # the C entry point skips einsum's Python dispatch (~1 us per single query)
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # numpy < 2
    from numpy.core.multiarray import c_einsum as _einsum

from ._exact_match import ExactMatchIndex, may_hold
from ._faiss_native import (
    c_search_of,
    collapse_huge_pages,
    default_build_threads,
    deserialize_index,
    faiss_threads,
    locality_order,
    read_index_mapped,
    serialize_index,
)
from ._faiss_native import digest as _digest
from ._faiss_native import swig_ptr as _ptr
from ._hnsw_check import check_hnsw_bytes
from ._repair import graph_problems, repair_graph
from .errors import CompactCompleteFailed, DimensionMismatch, EngineRestoreFailed, InvalidVector

__all__ = [
    "COMPACTION_MODES",
    "DEFAULT_HOLE_FRACTION",
    "DEFAULT_REPAIR_FRACTION",
    "EXACT_LIMIT",
    "HUGE_PAGES",
    "LEGACY_PRUNE_HEADROOM",
    "LEVEL_SEED",
    "METRICS",
    "CompactionPolicy",
    "CompoundIndex",
    "IndexConfig",
]

#: format (docs/FORMAT.md §2.2, ``config.metric``): the metrics a snapshot can name
METRICS = ("cosine", "l2", "ip", "hamming")
#: format (docs/FORMAT.md §2.1): the HNSW level generator is reseeded with
#: LEVEL_SEED + ntotal before every add, so the index bytes depend only on (base
#: bytes, added vectors), not on process history. Changing it changes snapshot bytes.
LEVEL_SEED = 12345
#: format (docs/FORMAT.md §2.2, ``config.prune_headroom``): the headroom of snapshots
#: whose config does not record one (metadata versions 1 and 2), faiss 1.15's default
#: and so the rule every such snapshot was built with.
LEGACY_PRUNE_HEADROOM = 0.2

#: format (docs/FORMAT.md §2.2, ``config.repair_fraction``): the default share of a base's
#: entries that may be dead when a compaction repairs in place (see CompactionPolicy)
DEFAULT_REPAIR_FRACTION = 0.05
#: format (docs/FORMAT.md §2.2, ``config.hole_fraction``): the default share of holes a
#: repaired base may hold
DEFAULT_HOLE_FRACTION = 0.05
#: what a compaction does: copy-on-write append, in-place repair (+ append), rebuild
COMPACTION_MODES = ("append", "repair", "rebuild")

# Tuning knobs: they change speed or memory, never the answers or the bytes.
#: allowed-base-position count at or below which filtered search is exact brute force
EXACT_LIMIT = 2048
#: Back a base's vectors and graph with 2 MiB pages before searching it (Linux only;
#: see :func:`~oluo_lab.engine._faiss_native.collapse_huge_pages`).
HUGE_PAGES = True


@dataclass(frozen=True)
class IndexConfig:
    """Index parameters; they travel with every snapshot.

    The defaults of M, ef_construction, ef_search and prune_headroom are the engine's
    defaults (``OluoEngine`` takes them from here).

    ``prune_headroom`` is faiss's ``hnsw.prune_headroom``: when a neighbour list is full
    and a new link arrives, the list is pruned to ``(1 - prune_headroom)`` of its slots
    (faiss's default 0.2 leaves 20% free, so fewer prunings; 0 keeps lists full: a
    denser graph). It decides which neighbours a build keeps, so the graph bytes, but
    faiss does not serialise it: the engine records it here and sets it on every base
    it builds, restores, clones or maps before any insertion.
    """

    dim: int
    metric: str
    M: int = 24
    ef_construction: int = 128
    ef_search: int = 64
    prune_headroom: float = 0.0

    @property
    def binary(self) -> bool:
        return self.metric == "hamming"

    @property
    def width(self) -> int:
        """Row width of a stored vector: dim floats, or dim/8 bytes for hamming."""
        return self.dim // 8 if self.binary else self.dim

    @property
    def faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def as_dict(self) -> dict:
        return {
            "dim": self.dim,
            "metric": self.metric,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "prune_headroom": float(self.prune_headroom),
            "faiss_version": faiss.__version__,
        }

    def apply_build_rules(self, ix: object) -> object:
        """Set the build rules faiss does not serialise (``prune_headroom``) on ``ix``, a
        base built, deserialised, cloned or mapped, so whatever it inserts next is chosen
        by the rules its snapshot records. Returns ``ix``."""
        ix.hnsw.prune_headroom = float(self.prune_headroom)
        return ix


@dataclass(frozen=True)
class CompactionPolicy:
    """When a compaction repairs the base's graph in place instead of rebuilding it.

    Deleted, evicted and re-ingested entries leave *dead* positions in the base. A
    compaction of a float base with dead positions **repairs** when they are at most
    ``repair_fraction`` of the base's entries and the base would then hold at most
    ``hole_fraction`` holes (of all its positions): the dead positions become holes,
    the graph is re-linked around them (``_repair.repair_graph``) and new rows are
    appended, so the snapshot shares most of its bytes with its parent. Otherwise it
    **rebuilds** the base from the live vectors and renumbers it, which drops every
    hole. ``repair_fraction = 0`` turns repair off. Hamming bases always rebuild.

    The defaults come from ``bench/mutations.py`` (docs/BENCHMARKS.md, mutations). The
    policy decides which bytes a compaction writes, so it travels with every snapshot
    (metadata ``config``) and a restored engine continues with it."""

    repair_fraction: float = DEFAULT_REPAIR_FRACTION
    hole_fraction: float = DEFAULT_HOLE_FRACTION

    def __post_init__(self) -> None:
        for name in ("repair_fraction", "hole_fraction"):
            v = getattr(self, name)
            if (
                not isinstance(v, (int, float, np.integer, np.floating))
                or isinstance(v, (bool, np.bool_))
                or not 0.0 <= float(v) <= 1.0
            ):
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))

    def as_dict(self) -> dict:
        return {"repair_fraction": self.repair_fraction, "hole_fraction": self.hole_fraction}


class _FastPlan(NamedTuple):
    """What :meth:`CompoundIndex.search_one` needs for one scope (unpacked positionally)."""

    scope_entry: tuple  # the scope cache entry the plan was made for (identity-checked)
    c_search: object  # the SWIG search function of the base's class
    base: object
    width: int
    vdtype: np.dtype
    binary: bool
    metric: str
    bitmap: tuple[bytes, int]  # the exact-match probe (ExactMatchIndex.bitmap)
    base_keys: np.ndarray | None  # None: base position i holds key i
    ddtype: type  # faiss's distance dtype for this base


class CompoundIndex:
    """Base + delta + tombstones, in memory (a base may be memory-mapped from a file
    the caller names); the engine owns all policy."""

    def __init__(
        self, config: IndexConfig, build_threads: int | None = None, reorder: bool = True
    ) -> None:
        self.config = config
        #: faiss threads for compaction builds; None: :func:`default_build_threads` at
        #: each build (faiss's thread count where that cannot change the graph, else 1)
        self.build_threads = None if build_threads is None else int(build_threads)
        #: renumber float bases in :func:`locality_order` on full rebuilds
        self.reorder = bool(reorder)
        w = config.width
        self._vdtype = np.uint8 if config.binary else np.float32
        self._vdtype_obj = np.dtype(self._vdtype)
        # base
        self.base = None
        self.base_mapped = False
        self.base_digest: bytes | None = None
        self.base_keys = np.zeros(0, np.int64)
        #: base_keys ascending (with ``_keys_pos``, their positions; None: the identity)
        self.keys_sorted = np.zeros(0, np.int64)
        self._keys_pos: np.ndarray | None = None
        self._ident = True  # base position i holds key i (see _keys_are_positions)
        self.base_alive = np.zeros(0, bool)
        self.base_scope = np.zeros(0, np.int8)
        #: dead positions: tombstoned entries the next compaction drops (not holes)
        self.n_dead = 0
        #: positions that hold no entry (ascending): zeroed, unlinked, never searched
        self.holes = np.zeros(0, np.int64)
        self._base_vecs: np.ndarray | None = None
        #: exact-match lookup over the base rows; built by the first search that needs it
        self.exact_matches: ExactMatchIndex | None = None
        # delta (rows 0..delta_n-1 are valid; order is arbitrary)
        self.delta_n = 0
        self.delta_keys = np.zeros(16, np.int64)
        self.delta_vecs = np.zeros((16, w), self._vdtype)
        self.delta_scope = np.zeros(16, np.int8)
        self.delta_row: dict[int, int] = {}
        # caches
        self._scope_cache: dict[int, tuple] = {}
        self._params: dict[int, object] = {}

    #: search_one plans per scope (see _fast_plan); created on first use
    _plans: dict[int, _FastPlan] | None = None
    #: the base whose pages were last collapsed (see HUGE_PAGES)
    _paged: object = None

    # ------------------------------------------------------------------ vectors
    def prepare(self, vectors: object, what: str = "vectors") -> np.ndarray:
        """Validate a batch and return it in storage form ((n, width), C-contiguous).

        Raises DimensionMismatch / InvalidVector; never mutates anything.
        """
        cfg = self.config
        a = np.asarray(vectors)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise DimensionMismatch(f"{what} must be 1-D or 2-D, got shape {a.shape}")
        if cfg.binary:
            if a.dtype != np.uint8:
                raise InvalidVector(
                    f"{what}: metric 'hamming' takes packed bits as uint8, got dtype {a.dtype}"
                )
            if a.shape[1] != cfg.width:
                raise DimensionMismatch(
                    f"{what} have {a.shape[1]} bytes per row; dim={cfg.dim} bits needs {cfg.width}"
                )
            return np.ascontiguousarray(a)
        if a.dtype.kind != "f":
            raise InvalidVector(f"{what} must be floating point (float32), got dtype {a.dtype}")
        if a.shape[1] != cfg.dim:
            raise DimensionMismatch(f"{what} have dimension {a.shape[1]}, engine dim is {cfg.dim}")
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            with np.errstate(over="ignore"):  # overflow becomes inf, rejected just below
                a = np.ascontiguousarray(a, dtype=np.float32)
        # NaN/inf make the squared norm non-finite; only then look element-wise
        sq = _einsum("ij,ij->i", a, a)
        if a.shape[0] == 1:  # single-query fast path: scalar checks, same arithmetic
            s = float(sq[0])
            if math.isfinite(s):
                if cfg.metric != "cosine":
                    return a
                if s == 0.0:
                    raise InvalidVector(f"{what}: zero vector has no cosine direction (rows [0])")
                # float32(sqrt in double) is the correctly rounded float32 sqrt, so this
                # equals the batch path bit for bit (exact-match lookups rely on it)
                return a / np.float32(math.sqrt(s))
        if not np.isfinite(sq).all() and not np.isfinite(a).all():
            bad = np.nonzero(~np.isfinite(a).all(axis=1))[0]
            raise InvalidVector(f"{what} contain NaN or inf (rows {bad[:5].tolist()})")
        if cfg.metric == "cosine":
            norms = np.sqrt(sq)
            if not np.isfinite(norms).all():  # finite but huge: norm in float64
                norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64)).astype(np.float32)
            if (norms == 0).any():
                bad = np.nonzero(norms == 0)[0]
                raise InvalidVector(
                    f"{what}: zero vector has no cosine direction (rows {bad[:5].tolist()})"
                )
            a = a / norms[:, None]
        return a

    def to_scores(self, d: np.ndarray) -> np.ndarray:
        """Scores (ascending = better, float64) of faiss distances or similarities ``d``."""
        m = self.config.metric
        if m == "cosine":
            # rounding can push 1 - cos a few ulp below 0 (exact duplicates): clip there
            s = np.subtract(1.0, d, dtype=np.float64)
            return np.maximum(s, 0.0, out=s)
        if m == "ip":
            return np.negative(d, dtype=np.float64)
        if m == "l2":
            return np.maximum(d, 0.0, dtype=np.float64)
        return d.astype(np.float64) / self.config.dim

    # ------------------------------------------------------------------ sizes
    @property
    def base_n(self) -> int:
        """Positions in the base (entries, dead ones and holes)."""
        return 0 if self.base is None else int(self.base.ntotal)

    @property
    def base_entries(self) -> int:
        """Positions that hold an entry (live or dead): all but the holes. A search of
        the whole graph can reach every one of them and no hole."""
        return self.base_n - len(self.holes)

    def _new_index(self):
        cfg = self.config
        if cfg.binary:
            ix = faiss.IndexBinaryHNSW(cfg.dim, cfg.M)
        else:
            ix = faiss.IndexHNSWFlat(cfg.dim, cfg.M, cfg.faiss_metric)
        ix.hnsw.efConstruction = cfg.ef_construction
        ix.hnsw.efSearch = cfg.ef_search
        return cfg.apply_build_rules(ix)

    def base_vectors(self) -> np.ndarray:
        """Zero-copy (n, width) view of the base's stored vectors."""
        if self._base_vecs is None:
            n, w = self.base_n, self.config.width
            if n == 0:
                self._base_vecs = np.zeros((0, w), self._vdtype)
            elif self.config.binary:
                st = faiss.downcast_IndexBinary(self.base.storage)
                self._base_vecs = faiss.rev_swig_ptr(st.xb.data(), n * w).reshape(n, w)
            else:
                st = faiss.downcast_index(self.base.storage)
                self._base_vecs = faiss.rev_swig_ptr(st.get_xb(), n * w).reshape(n, w)
        return self._base_vecs

    def base_pos(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base positions of ``keys`` and a mask of which keys are alive in the base."""
        ks = self.keys_sorted
        pos = np.searchsorted(ks, keys)
        ok = pos < len(ks)
        ok[ok] = ks[pos[ok]] == keys[ok]
        if self._keys_pos is not None:
            pos = np.where(ok, self._keys_pos[np.minimum(pos, max(len(ks) - 1, 0))], pos)
        ok[ok] = self.base_alive[pos[ok]]
        return pos, ok

    def _invalidate(self) -> None:
        self._scope_cache.clear()

    # ------------------------------------------------------------------ mutation
    def upsert(self, keys: np.ndarray, vecs: np.ndarray, scopes: np.ndarray) -> None:
        """Put prepared vectors into the delta (shadowing any base copy). Keys are unique."""
        pos, alive = self.base_pos(keys)
        if alive.any():
            self.base_alive[pos[alive]] = False
            self.n_dead += int(alive.sum())
            self._invalidate()
        rows = np.fromiter((self.delta_row.get(int(k), -1) for k in keys), np.int64, len(keys))
        old = rows >= 0
        if old.any():
            self.delta_vecs[rows[old]] = vecs[old]
            self.delta_scope[rows[old]] = scopes[old]
        new = ~old
        n_new = int(new.sum())
        if n_new:
            need = self.delta_n + n_new
            if need > len(self.delta_keys):
                cap = max(need, 2 * len(self.delta_keys))
                self.delta_keys = np.resize(self.delta_keys, cap)
                self.delta_scope = np.resize(self.delta_scope, cap)
                grown = np.zeros((cap, self.config.width), self._vdtype)
                grown[: self.delta_n] = self.delta_vecs[: self.delta_n]
                self.delta_vecs = grown
            sl = slice(self.delta_n, need)
            self.delta_keys[sl] = keys[new]
            self.delta_vecs[sl] = vecs[new]
            self.delta_scope[sl] = scopes[new]
            for i, k in enumerate(keys[new].tolist()):
                self.delta_row[k] = self.delta_n + i
            self.delta_n = need

    def remove(self, keys: np.ndarray) -> None:
        """Remove keys from the delta and tombstone them in the base (unknown keys ignored)."""
        pos, alive = self.base_pos(keys)
        if alive.any():
            self.base_alive[pos[alive]] = False
            self.n_dead += int(alive.sum())
            self._invalidate()
        for k in keys.tolist():
            row = self.delta_row.pop(k, None)
            if row is None:
                continue
            last = self.delta_n - 1
            if row != last:
                lk = int(self.delta_keys[last])
                self.delta_keys[row] = lk
                self.delta_vecs[row] = self.delta_vecs[last]
                self.delta_scope[row] = self.delta_scope[last]
                self.delta_row[lk] = row
            self.delta_n = last

    # ------------------------------------------------------------------ search
    def _scope_allowed(self, scope: int) -> tuple[np.ndarray, int, bool, object]:
        hit = self._scope_cache.get(scope)
        if hit is None:
            allowed = self.base_alive & (self.base_scope <= scope)
            count = int(allowed.sum())
            packed = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(packed))
            hit = (allowed, count, count == self.base_entries, (packed, sel))
            self._scope_cache[scope] = hit
        return hit

    def _plain_params(self, ef: int):
        p = self._params.get(ef)
        if p is None:
            p = faiss.SearchParametersHNSW(efSearch=ef)
            self._params[ef] = p
        return p

    def exact_knn(self, q: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of q against xb: (faiss distances, row indices, -1 padded)."""
        nq = q.shape[0]
        kk = min(k, xb.shape[0])
        dist = np.full((nq, k), np.inf if not self.config.binary else 0, np.float64)
        pos_ = np.full((nq, k), -1, np.int64)
        if kk == 0:
            return dist, pos_
        if self.config.binary:
            d, i = faiss.knn_hamming(q, xb, kk)
        else:
            d, i = faiss.knn(q, xb, kk, metric=self.config.faiss_metric)
        dist[:, :kk] = d
        pos_[:, :kk] = i
        return dist, pos_

    def _search_base(
        self, q: np.ndarray, k: int, ef: int, scope: int, key_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Base hits as (scores, keys); -1 keys / inf scores pad."""
        nq = q.shape[0]
        if key_mask is None:
            allowed, count, everything, holder = self._scope_allowed(scope)
        else:
            allowed = self.base_alive & (self.base_scope <= scope)
            allowed &= key_mask[np.maximum(self.base_keys, 0)]
            count = int(allowed.sum())
            everything = count == self.base_entries
            holder = None
        if count == 0:
            return np.full((nq, k), np.inf), np.full((nq, k), -1, np.int64)
        all_valid = False
        if count <= EXACT_LIMIT and not everything:
            positions = np.nonzero(allowed)[0]
            dist, rows = self.exact_knn(q, self.base_vectors()[positions], k)
            pos_ = np.where(rows >= 0, positions[np.maximum(rows, 0)], -1)
        else:
            if self._paged is not self.base:  # once per base
                self._paged = self.base
                if HUGE_PAGES:
                    collapse_huge_pages(self.base)
            if everything:
                sel = None
                dist, pos_ = self.base.search(q, k, params=self._plain_params(ef))
            else:
                if holder is None:
                    packed = np.packbits(allowed, bitorder="little")
                    holder = (packed, faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(packed)))
                sel = holder[1]
                p = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
                dist, pos_ = self.base.search(q, k, params=p)
            # HNSW can come back short (selective filter, unreachable nodes, ties):
            # retry those rows with a doubled efSearch, finally answer them exactly.
            want = min(k, count)
            # faiss fills rows left to right: column want-1 tells which rows are short
            full = (pos_[0, want - 1] >= 0) if nq == 1 else (pos_[:, want - 1].min() >= 0)
            if full:
                short = ()
                all_valid = want == k
            else:
                short = np.nonzero((pos_ >= 0).sum(axis=1) < want)[0]
            cur = ef
            while len(short) and cur < self.base_n:
                cur *= 2
                if sel is None:
                    p = faiss.SearchParametersHNSW(efSearch=cur)
                else:
                    p = faiss.SearchParametersHNSW(sel=sel, efSearch=cur)
                d2, i2 = self.base.search(q[short], k, params=p)
                dist[short], pos_[short] = d2, i2
                short = short[(i2 >= 0).sum(axis=1) < want]
            if len(short):
                positions = np.nonzero(allowed)[0]
                d2, rows = self.exact_knn(q[short], self.base_vectors()[positions], k)
                dist[short] = d2
                pos_[short] = np.where(rows >= 0, positions[np.maximum(rows, 0)], -1)
        if all_valid or pos_.min() >= 0:
            scores = self.to_scores(dist)
            keys = pos_ if self._keys_are_positions() else self.base_keys[pos_]
        else:
            valid = pos_ >= 0
            scores = np.where(valid, self.to_scores(dist), np.inf)
            keys = np.where(valid, self.base_keys[np.maximum(pos_, 0)], -1)
        if everything or count > EXACT_LIMIT:
            self._add_exact_matches(q, k, allowed, scores, keys)
        return scores, keys

    def _add_exact_matches(
        self, q: np.ndarray, k: int, allowed: np.ndarray, scores: np.ndarray, keys: np.ndarray
    ) -> None:
        """Guarantee that a query equal to a stored vector finds it (HNSW can miss it):
        equal base rows are merged into the row's results in place."""
        matches = self.exact_matches
        if matches is None:
            matches = self.exact_matches = ExactMatchIndex(self.base_vectors())
        matches.merge_into(self, q, k, allowed, scores, keys)

    def _search_delta(
        self, q: np.ndarray, k: int, scope: int, key_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.delta_n
        keys = self.delta_keys[:n]
        allowed = self.delta_scope[:n] <= scope
        if key_mask is not None:
            allowed &= key_mask[keys]
        if allowed.all():
            xb, kb = self.delta_vecs[:n], keys
        else:
            xb, kb = self.delta_vecs[:n][allowed], keys[allowed]
        dist, rows = self.exact_knn(q, xb, k)
        valid = rows >= 0
        scores = np.where(valid, self.to_scores(dist), np.inf)
        out = np.where(valid, kb[np.maximum(rows, 0)] if len(kb) else -1, -1)
        return scores, out

    def _keys_are_positions(self) -> bool:
        """True when base position i holds key i, so positions need no translation
        (decided by :meth:`install`)."""
        return self._ident

    def _fast_plan(self, scope: int) -> _FastPlan | None:
        """What :meth:`search_one` needs for ``scope``, or None when it does not apply.

        The plan is cached per scope and tied to the identity of the scope filter
        entry, which :meth:`_invalidate` drops whenever the base, its tombstones or
        its exact-match table change; the delta is checked on every call."""
        hit = self._scope_cache.get(scope)
        if hit is None or not hit[2] or self.delta_n or self.base is None:
            return None
        matches = self.exact_matches
        if matches is None or matches.bitmap is None:
            return None
        cfg = self.config
        plan = _FastPlan(
            hit,
            c_search_of(self.base),
            self.base,
            cfg.width,
            self._vdtype_obj,
            cfg.binary,
            cfg.metric,
            matches.bitmap,
            None if self._keys_are_positions() else self.base_keys,
            np.int32 if cfg.binary else np.float32,
        )
        if self._plans is None:
            self._plans = {}
        self._plans[scope] = plan
        return plan

    def search_one(self, v: np.ndarray, k: int, ef: int, scope: int) -> tuple | None:
        """Single-query fast path for the common case, or None when it does not apply.

        Applies to a 1-D float32 (or uint8 for hamming) query against a base with no
        delta and nothing filtered for ``scope``. It computes exactly what
        :meth:`search` would (same normalisation, same faiss call, same scores), with
        fewer interpreter round-trips; anything unusual (validation problems, a short
        row, an exact-match candidate, tied scores) falls back to the general path.
        """
        plans = self._plans
        plan = None if plans is None else plans.get(scope)
        if plan is None or plan[0] is not self._scope_cache.get(scope) or self.delta_n:
            plan = self._fast_plan(scope)
            if plan is None:
                return None
        _, c_search, base, width, vdtype, binary, metric, kfilter, base_keys, ddtype = plan
        if v.dtype is not vdtype or v.shape[0] != width:
            return None
        # contiguous first, like prepare(): einsum sums a strided row in another order
        a = v.reshape(1, width) if v.flags.c_contiguous else np.ascontiguousarray(v[None])
        if not binary:
            s = float(_einsum("ij,ij->i", a, a)[0])
            if not math.isfinite(s) or s == 0.0:
                return None
            if metric == "cosine":
                # same arithmetic as prepare(): float32 of the double sqrt is the
                # correctly rounded float32 sqrt, so the bytes equal the batch path's
                a = a / np.float32(math.sqrt(s))
        if may_hold(kfilter, a.tobytes()):
            return None  # a stored row may equal the query: the general path checks and merges
        p = self._params.get(ef)
        if p is None:
            p = self._plain_params(ef)
        # the SWIG function directly: faiss's Python wrapper re-validates and
        # converts what is already checked here (saves ~5 us per call)
        dist = np.empty((1, k), ddtype)
        pos_ = np.empty((1, k), np.int64)
        c_search(base, 1, _ptr(a), k, _ptr(dist), _ptr(pos_), p)
        if pos_[0, k - 1] < 0:
            return None
        d = dist[0].tolist()
        # the scores of to_scores, in Python floats (same IEEE double arithmetic)
        if metric == "cosine":
            row = [1.0 - x if x <= 1.0 else 0.0 for x in d]
        elif metric == "ip":
            row = [-x for x in d]
        elif metric == "l2":
            row = [x if x >= 0.0 else 0.0 for x in d]
        else:
            row = [x / (width * 8) for x in d]
        if len(set(row)) != k:
            return None  # tied scores: the general path breaks ties by key
        return np.array([row]), pos_ if base_keys is None else base_keys[pos_]

    def search(
        self,
        q: np.ndarray,
        k: int,
        ef: int,
        scope: int = 2,
        key_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, keys) for prepared queries; ties broken by key."""
        parts = []
        nq = q.shape[0]
        if self.base is not None and self.base.ntotal:
            parts.append(self._search_base(q, k, ef, scope, key_mask))
        if self.delta_n:
            parts.append(self._search_delta(q, k, scope, key_mask))
        if not parts:
            return np.full((nq, k), np.inf), np.full((nq, k), -1, np.int64)
        if len(parts) == 1:
            scores, keys = parts[0]
            if nq == 1:
                row = scores[0].tolist()
                if all(a != b for a, b in zip(row, row[1:], strict=False)):
                    return scores, keys
            else:
                tied = np.nonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))[0]
                if len(tied) == 0:
                    return scores, keys
                # only rows with equal scores need the key tie-break
                s2, k2 = self._tie_sort(scores[tied], keys[tied], k)
                scores, keys = scores.copy(), keys.copy()
                scores[tied], keys[tied] = s2, k2
                return scores, keys
        else:
            scores = np.concatenate([p[0] for p in parts], axis=1)
            keys = np.concatenate([p[1] for p in parts], axis=1)
        return self._tie_sort(scores, keys, k)

    @staticmethod
    def _tie_sort(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Sort rows by (score, key) and keep k; padding (-1) sorts after real keys."""
        tie = np.where(keys < 0, np.iinfo(np.int64).max, keys)
        order = np.lexsort((tie, scores), axis=-1)[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(keys, order, 1)

    # ------------------------------------------------------------------ compaction
    def effective_build_threads(self) -> int:
        """The faiss threads the next build uses."""
        return default_build_threads() if self.build_threads is None else self.build_threads

    def pending(self) -> bool:
        """True when a compaction would change the base."""
        return self.delta_n > 0 or self.n_dead > 0 or self.base is None

    def compaction_mode(self, policy: CompactionPolicy) -> str:
        """What the next compaction does under ``policy`` (one of :data:`COMPACTION_MODES`).

        ``append`` when the base has no dead positions and the delta's keys follow its
        own; ``repair`` when it has dead positions and ``policy`` allows repairing them
        (float bases that keep a live entry); ``rebuild`` otherwise, and always for the
        first base."""
        if self.base is None:
            return "rebuild"
        n = self.delta_n
        if self.n_dead == 0 and (
            self.base_entries == 0
            or n == 0
            or int(self.delta_keys[:n].min()) > int(self.keys_sorted[-1])
        ):
            return "append"
        entries = self.base_entries
        holes = len(self.holes) + self.n_dead
        if (
            not self.config.binary
            and self.n_dead < entries
            and self.n_dead <= policy.repair_fraction * entries
            and holes <= policy.hole_fraction * (self.base_n + n)
        ):
            return "repair"
        return "rebuild"

    def compact(self, mode: str) -> tuple[object, bytes, np.ndarray, np.ndarray]:
        """Build the next base without touching the current state.

        Returns (index, index_bytes, keys, scopes) with ``keys[i]`` the key at position
        ``i`` (-1 at a hole); :meth:`install` makes it current. ``mode`` (what
        :meth:`compaction_mode` picks under the engine's policy):

        * ``append``: copy-on-write append, new rows in key order after the old ones,
          which keep their positions, so snapshots of the old part dedupe;
        * ``repair``: the dead positions of a copy of the base become holes
          (``_repair.repair_graph``: no links in or out, zeroed vectors, the graph
          re-linked around them), then the new rows are appended as above;
        * ``rebuild``: a new base from the live vectors inserted in key order, then
          renumbered by :func:`locality_order` (float metrics); no holes.

        ``build_threads`` faiss threads (the bytes are the same for any count where
        :func:`deterministic_threaded_build` holds), level RNG reseeded from the row
        count, the config's build rules set on the index first.
        """
        if mode not in COMPACTION_MODES:
            raise ValueError(f"mode must be one of {COMPACTION_MODES}, got {mode!r}")
        n = self.delta_n
        order = np.argsort(self.delta_keys[:n], kind="stable")
        d_keys = self.delta_keys[:n][order]
        d_vecs = self.delta_vecs[:n][order]
        d_scope = self.delta_scope[:n][order]
        if mode != "rebuild":
            ix = self._owned_copy()
            keys = np.concatenate([self.base_keys, d_keys])
            scopes = np.concatenate([self.base_scope, d_scope])
            if mode == "repair":
                dead = np.flatnonzero(~self.base_alive & (self.base_keys >= 0))
                repair_graph(ix, dead, prune_headroom=self.config.prune_headroom)
                keys[dead], scopes[dead] = -1, 0
            vecs = d_vecs
        else:
            live = np.nonzero(self.base_alive)[0]
            keys = np.concatenate([self.base_keys[live], d_keys])
            scopes = np.concatenate([self.base_scope[live], d_scope])
            vecs = np.concatenate([self.base_vectors()[live], d_vecs])
            o = np.argsort(keys, kind="stable")
            keys, scopes, vecs = keys[o], scopes[o], np.ascontiguousarray(vecs[o])
            ix = self._new_index()
        if len(vecs):
            self.config.apply_build_rules(ix)
            ix.hnsw.rng = faiss.RandomGenerator(LEVEL_SEED + int(ix.ntotal))
            with faiss_threads(self.effective_build_threads()):
                ix.add(vecs)
        if mode == "rebuild" and self.reorder and not self.config.binary and ix.ntotal > 1:
            perm = locality_order(ix)
            ix.permute_entries(perm)
            keys, scopes = keys[perm], scopes[perm]
        data = serialize_index(ix, self.config.binary)
        return ix, data, keys, scopes.astype(np.int8)

    def _owned_copy(self) -> object:
        """A copy of the base that owns its arrays (a mapped base is read-only)."""
        if self.base_mapped:
            return deserialize_index(self.base_bytes(), self.config.binary)
        if self.config.binary:
            return faiss.clone_binary_index(self.base)
        return faiss.clone_index(self.base)

    def graph_problems(self, limit: int = 20) -> list[tuple[int, str]]:
        """Broken invariants of a float base's graph and holes as ``(position, message)``
        (``_repair.graph_problems``); empty for a sound base and for hamming bases."""
        if self.base is None or self.config.binary:
            return []
        return graph_problems(self.base, self.holes, limit)

    def install(
        self,
        ix: object,
        data: bytes,
        keys: np.ndarray,
        scopes: np.ndarray,
        digest: bytes | None = None,
        mapped: bool = False,
    ) -> None:
        """Make a compacted (or restored) index the base and empty the delta.

        ``keys[i]``: the key at position ``i``, -1 at a hole. ``digest``: the blake3-256 of
        ``data`` when the caller already has it (a restore from the CAS verified it);
        ``mapped``: ``ix`` was read with IO_FLAG_MMAP_IFC."""
        self.base = self.config.apply_build_rules(ix)
        self.base_mapped = mapped
        self.base_digest = _digest(data) if digest is None else digest
        self.base_keys = bk = np.ascontiguousarray(keys, np.int64)
        self.holes = np.flatnonzero(bk < 0)
        where = None if not len(self.holes) else np.flatnonzero(bk >= 0)
        lk = bk if where is None else bk[where]
        if len(lk) < 2 or bool((lk[1:] > lk[:-1]).all()):
            self.keys_sorted, self._keys_pos = lk, where
            # sorted and unique: the identity exactly when the ends are 0 and n-1
            self._ident = where is None and (
                len(bk) == 0 or (int(bk[0]) == 0 and int(bk[-1]) == len(bk) - 1)
            )
        else:
            self._ident = False
            o = np.argsort(lk, kind="stable")
            self.keys_sorted, self._keys_pos = lk[o], o if where is None else where[o]
        self.base_alive = bk >= 0
        self.base_scope = np.ascontiguousarray(scopes, np.int8)
        self.n_dead = 0
        self._base_vecs = None
        self.exact_matches = None
        self.delta_n = 0
        self.delta_row = {}
        if len(self.delta_keys) > 16:  # the delta is in the base now: free its buffers
            self.delta_keys = np.zeros(16, np.int64)
            self.delta_vecs = np.zeros((16, self.config.width), self._vdtype)
            self.delta_scope = np.zeros(16, np.int8)
        self._invalidate()

    def base_bytes(self) -> bytes:
        """The faiss serialisation of the current base (what snapshots store)."""
        return serialize_index(self.base, self.config.binary)

    def load(self, data: bytes, path: str | None = None) -> tuple[object, bool]:
        """An index for :meth:`install` from its bytes, or mapped from ``path`` when the
        caller guarantees that file holds exactly ``data`` (``(index, mapped)``; if
        mapping fails, e.g. a filesystem without mmap, the bytes are read instead).
        Raises EngineRestoreFailed when the index does not match this config, or when its
        bytes are not a well-formed HNSW serialisation (checked before faiss reads them:
        the bytes may come from someone else's lab)."""
        try:
            check_hnsw_bytes(data, self.config.binary)
        except ValueError as exc:
            raise EngineRestoreFailed(
                f"index bytes are not a faiss index: {exc} (refused before faiss read them)"
            ) from exc
        if path is not None:
            try:
                return self.map_file(path), True
            except EngineRestoreFailed:
                pass
        return self.load_bytes(data), False

    def load_bytes(self, data: bytes) -> object:
        """Deserialise index bytes and check they match this config (EngineRestoreFailed)."""
        try:
            ix = deserialize_index(data, self.config.binary)
        except Exception as exc:
            raise EngineRestoreFailed(f"index bytes are not a faiss index: {exc}") from exc
        self.check_index(ix, EngineRestoreFailed)
        return ix

    def map_file(self, path: str) -> object:
        """Read the index at ``path`` with its vectors memory-mapped (IO_FLAG_MMAP_IFC, as
        :meth:`swap_to_file` does) and check it matches this config (EngineRestoreFailed)."""
        try:
            ix = read_index_mapped(path, self.config.binary)
        except Exception as exc:
            raise EngineRestoreFailed(f"faiss could not map {path}: {exc}") from exc
        self.check_index(ix, EngineRestoreFailed)
        return ix

    def check_index(self, ix: object, err: type[Exception]) -> None:
        cfg = self.config
        want = "IndexBinaryHNSW" if cfg.binary else "IndexHNSWFlat"
        if type(ix).__name__ != want:
            raise err(f"index is {type(ix).__name__}, config metric {cfg.metric!r} needs {want}")
        if ix.d != cfg.dim:
            raise err(f"index dim {ix.d} != config dim {cfg.dim}")
        if not cfg.binary and ix.metric_type != cfg.faiss_metric:
            raise err(f"index metric_type {ix.metric_type} does not match metric {cfg.metric!r}")
        if ix.hnsw.nb_neighbors(1) != cfg.M:
            raise err(f"index M {ix.hnsw.nb_neighbors(1)} != config M {cfg.M}")
        if ix.hnsw.efConstruction != cfg.ef_construction:
            raise err(
                f"index efConstruction {ix.hnsw.efConstruction} != config {cfg.ef_construction}"
            )

    def swap_to_file(self, path: str) -> None:
        """Replace the in-RAM base by a memory-mapped read of ``path`` (must hold the same bytes).

        Uses ``faiss.IO_FLAG_MMAP_IFC``: the stored vectors (flat codes) are mapped
        zero-copy from the file; the HNSW graph is read into RAM. The file must not be
        modified in place afterwards (replace it by rename only).
        """
        if self.base is None:
            raise CompactCompleteFailed("no base to swap")
        # The hash check and faiss's read must see the same file even if another writer
        # renames a new file over ``path`` meanwhile: both go through one open fd
        # (/proc/self/fd on Linux; elsewhere the inode is compared after the read).
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise CompactCompleteFailed(f"cannot read {path}: {exc}") from exc
        try:
            pinned = os.fstat(fd)
            src = f"/proc/self/fd/{fd}"
            if not os.path.exists(src):
                src = str(path)
            try:
                hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
                digest = hasher.update_mmap(src).digest()
            except (OSError, ValueError) as exc:
                raise CompactCompleteFailed(f"cannot read {path}: {exc}") from exc
            if digest != self.base_digest:
                raise CompactCompleteFailed(
                    f"{path} does not hold the current base (content hash differs)"
                )
            try:
                ix = read_index_mapped(src, self.config.binary)
            except Exception as exc:
                raise CompactCompleteFailed(f"faiss could not map {path}: {exc}") from exc
            if src == str(path):
                now = os.stat(path)
                if (now.st_dev, now.st_ino) != (pinned.st_dev, pinned.st_ino):
                    raise CompactCompleteFailed(f"{path} was replaced while being mapped")
        finally:
            os.close(fd)
        self.check_index(ix, CompactCompleteFailed)
        if ix.ntotal != self.base_n:
            raise CompactCompleteFailed(f"{path} has {ix.ntotal} vectors, base has {self.base_n}")
        self.base = self.config.apply_build_rules(ix)
        self.base_mapped = True
        self._base_vecs = None
        self.exact_matches = None
        self._invalidate()
