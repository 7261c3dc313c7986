"""Run one index through the harness: build, batch QPS, single-query latency, sizes.

An adapter wraps one library behind the same small protocol (:class:`Adapter`), so
oluo_lab and its peers (raw faiss, hnswlib, usearch) are measured by the same code on
the same arrays in the same process. Adapters receive the raw vectors and handle the
metric themselves (normalising for cosine where the library has no cosine space);
that work is inside the timed calls for every library alike.

Timing rules: QPS = queries / best-of-``repeat`` batch time after one warm-up run,
with ``threads`` threads for every library; latency percentiles come from timing
one-row calls. Peers are imported only when their adapter is built.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..engine._faiss_native import faiss_threads
from ..engine._faiss_native import locality_order as bfs_order
from .metrics import distances_of, recall_distance, recall_ids

__all__ = [
    "ADAPTERS",
    "Adapter",
    "BruteForceAdapter",
    "bfs_order",
    "FaissHNSWAdapter",
    "HnswlibAdapter",
    "Measurement",
    "OluoAdapter",
    "UsearchAdapter",
    "faiss_threads",
    "make_adapter",
    "latencies_ms",
    "measure",
    "release",
    "score",
    "time_batch",
    "rss_bytes",
    "thread_count",
    "timed_build",
]


@runtime_checkable
class Adapter(Protocol):
    """What the harness needs from an index: build, search, sizes, release.

    ``search`` returns base row numbers ``(n_queries, k)`` int64, ``-1`` padding.
    """

    library: str
    index: str

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None: ...

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray: ...

    def search_one(self, query: np.ndarray, k: int, ef: int) -> np.ndarray: ...

    def index_bytes(self) -> int: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- threads / memory


def thread_count() -> int:
    """The OpenMP thread count faiss uses now."""
    import faiss

    return int(faiss.omp_get_max_threads())


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def _space(metric: str) -> str:
    if metric not in ("cosine", "l2", "ip"):
        raise ValueError(f"unknown metric {metric!r}; expected cosine, l2 or ip")
    return metric


# --------------------------------------------------------------------------- adapters


class _Base:
    library = "?"
    index = "?"

    def __init__(self, threads: int = 1) -> None:
        self.threads = int(threads)
        self.metric = "cosine"

    def search_one(self, query: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.search(query[None, :], k, ef)

    def close(self) -> None:
        for name in list(vars(self)):
            if name not in ("threads", "metric", "params", "build_threads", "library", "index"):
                setattr(self, name, None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(library={self.library!r}, index={self.index!r})"


class BruteForceAdapter(_Base):
    """Exact search with a faiss flat index: the harness's recall-1.0 reference."""

    library = "faiss"
    index = "Flat"

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None:
        import faiss

        self.metric = _space(params.get("metric", "cosine"))
        self._ix = (
            faiss.IndexFlatL2(base.shape[1])
            if self.metric == "l2"
            else faiss.IndexFlatIP(base.shape[1])
        )
        self._ix.add(_normalised(base) if self.metric == "cosine" else base)

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        q = _normalised(queries) if self.metric == "cosine" else queries
        return self._ix.search(q, k)[1]

    def index_bytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self._ix).size)


class OluoAdapter(_Base):
    """oluo_lab's :class:`~oluo_lab.engine.OluoEngine`: add everything, compact once, search
    through ``eng.search``. The build is the engine's compaction: by default its
    deterministic single-thread build (``build_threads=1``); ``build_threads=N`` uses the
    engine's opt-in N-thread build (faster, graph bytes not deterministic)."""

    library = "oluo_lab"

    def __init__(self, threads: int = 1, build_threads: int = 1) -> None:
        super().__init__(threads)
        self.build_threads = int(build_threads)
        self.index = "OluoEngine" + (
            f" ({self.build_threads} build threads)" if self.build_threads > 1 else ""
        )

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None:
        from ..engine import OluoEngine

        self.metric = _space(params.get("metric", "cosine"))
        n = base.shape[0]
        self.engine = OluoEngine(
            base.shape[1],
            self.metric,
            compact_threshold=n + 1,
            M=int(params["M"]),
            ef_construction=int(params["ef_construction"]),
            ef_search=int(params.get("ef_search", 64)),
            build_threads=self.build_threads,
        )
        self.engine.add(base)
        snap = self.engine.compact()
        # only the size is kept: a caller persists the snapshot and lets it go, so holding
        # its bytes here would count them in the engine's resident memory (``release``)
        self._snap_bytes = len(snap.index_bytes) + len(snap.metadata_bytes)

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        # default ids are running ints equal to the base row, so keys are the rows
        return self.engine.search(queries, k=k, ef=ef).keys

    def search_one(self, query: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.engine.search(query, k=k, ef=ef).keys

    def index_bytes(self) -> int:
        return self._snap_bytes


class FaissHNSWAdapter(_Base):
    """Raw faiss HNSW: ``HNSWFlat`` (default), or ``HNSWSQ8`` with an optional exact
    re-ranking (``refine``: IndexRefineFlat over ``k * refine`` candidates).

    ``bounded_queue`` sets faiss's ``bounded_queue`` search parameter. ``reorder=True``
    renumbers the stored vectors in breadth-first order of the level-0 graph after the
    build (faiss's ``permute_entries``), so neighbours sit close in memory; the answers
    are mapped back to base rows inside the timed search.
    """

    library = "faiss"

    def __init__(
        self,
        threads: int = 1,
        variant: str = "HNSWFlat",
        refine: int = 0,
        bounded_queue: bool = True,
        reorder: bool = False,
    ) -> None:
        super().__init__(threads)
        if variant not in ("HNSWFlat", "HNSWSQ8"):
            raise ValueError(f"unknown faiss variant {variant!r}; expected HNSWFlat or HNSWSQ8")
        self.variant = variant
        self.refine = int(refine)
        self.bounded_queue = bool(bounded_queue)
        self.reorder = bool(reorder)
        if self.reorder and self.refine:
            raise ValueError("reorder applies to HNSW indexes without refine")
        label = variant + (f"+refine{self.refine}" if self.refine else "")
        label += "" if self.bounded_queue else "-unbounded"
        self.index = label + ("+bfs" if self.reorder else "")

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None:
        import faiss

        self.metric = _space(params.get("metric", "cosine"))
        fm = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        d, m = base.shape[1], int(params["M"])
        if self.variant == "HNSWFlat":
            hnsw_ix = faiss.IndexHNSWFlat(d, m, fm)
        else:
            hnsw_ix = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, m, fm)
        hnsw_ix.hnsw.efConstruction = int(params["ef_construction"])
        x = _normalised(base) if self.metric == "cosine" else np.ascontiguousarray(base, np.float32)
        self._hnsw = hnsw_ix
        # the refine index keeps its own exact copy; adding to it adds to both
        self._ix = faiss.IndexRefineFlat(hnsw_ix) if self.refine else hnsw_ix
        with faiss_threads(self.threads):
            if self.variant == "HNSWSQ8":
                self._ix.train(x)
            self._ix.add(x)
        self._rows = None
        if self.reorder:
            perm = bfs_order(hnsw_ix)
            hnsw_ix.permute_entries(perm)
            self._rows = perm  # new position i holds original row perm[i]
        self._params: dict[int, Any] = {}

    def _search_params(self, ef: int):
        import faiss

        p = self._params.get(ef)
        if p is None:
            hp = faiss.SearchParametersHNSW(efSearch=int(ef))
            hp.bounded_queue = self.bounded_queue
            if self.refine:
                p = faiss.IndexRefineSearchParameters(
                    base_index_params=hp, k_factor=float(self.refine)
                )
                p._keep = hp  # keep the inner object alive with the outer one
            else:
                p = hp
            self._params[ef] = p
        return p

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        q = _normalised(queries) if self.metric == "cosine" else queries
        ids = self._ix.search(q, k, params=self._search_params(ef))[1]
        if self._rows is not None:
            ids = np.where(ids >= 0, self._rows[np.maximum(ids, 0)], -1)
        return ids

    def index_bytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self._ix).size)


class HnswlibAdapter(_Base):
    """hnswlib (cosine space for cosine: it normalises internally)."""

    library = "hnswlib"
    index = "hnsw"

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None:
        import hnswlib

        self.metric = _space(params.get("metric", "cosine"))
        n, d = base.shape
        self._ix = hnswlib.Index(space=self.metric, dim=d)
        self._ix.init_index(
            max_elements=n,
            ef_construction=int(params["ef_construction"]),
            M=int(params["M"]),
            random_seed=100,
        )
        self._ix.set_num_threads(self.threads)
        self._ix.add_items(base, np.arange(n), num_threads=self.threads)
        self._ef = None

    def _set_ef(self, ef: int) -> None:
        if ef != self._ef:
            self._ix.set_ef(int(ef))
            self._ef = ef

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        self._set_ef(ef)
        return self._ix.knn_query(queries, k=k, num_threads=self.threads)[0].astype(np.int64)

    def search_one(self, query: np.ndarray, k: int, ef: int) -> np.ndarray:
        self._set_ef(ef)
        return self._ix.knn_query(query, k=k, num_threads=1)[0]

    def index_bytes(self) -> int:
        return int(self._ix.index_file_size())


class UsearchAdapter(_Base):
    """usearch (inner product over normalised vectors for cosine)."""

    library = "usearch"
    index = "hnsw"

    def build(self, base: np.ndarray, params: dict[str, Any]) -> None:
        from usearch.index import Index

        self.metric = _space(params.get("metric", "cosine"))
        self._ix = Index(
            ndim=base.shape[1],
            metric={"cosine": "ip", "ip": "ip", "l2": "l2sq"}[self.metric],
            dtype="f32",
            connectivity=int(params["M"]),
            expansion_add=int(params["ef_construction"]),
            expansion_search=int(params.get("ef_search", 64)),
        )
        x = _normalised(base) if self.metric == "cosine" else np.ascontiguousarray(base, np.float32)
        self._ix.add(np.arange(base.shape[0], dtype=np.uint64), x, threads=self.threads)

    def search(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        self._ix.expansion_search = int(ef)
        q = _normalised(queries) if self.metric == "cosine" else queries
        m = self._ix.search(q, k, threads=self.threads)
        keys = m.keys.astype(np.int64)
        # usearch pads with its default key; mark slots past each row's count as -1
        counts = m.counts
        keys[np.arange(k)[None, :] >= counts[:, None]] = -1
        return keys

    def search_one(self, query: np.ndarray, k: int, ef: int) -> np.ndarray:
        self._ix.expansion_search = int(ef)
        q = _normalised(query) if self.metric == "cosine" else query
        m = self._ix.search(q, k, threads=1)
        return m.keys.astype(np.int64)[None, :]

    def index_bytes(self) -> int:
        return int(self._ix.serialized_length)


ADAPTERS: dict[str, Callable[..., Any]] = {
    "oluo_lab": OluoAdapter,
    "oluo_lab-mt": lambda threads=1: OluoAdapter(threads, build_threads=threads),
    "faiss": FaissHNSWAdapter,
    "faiss-sq8-refine": lambda threads=1: FaissHNSWAdapter(threads, "HNSWSQ8", refine=4),
    "faiss-unbounded": lambda threads=1: FaissHNSWAdapter(threads, bounded_queue=False),
    "faiss-bfs": lambda threads=1: FaissHNSWAdapter(threads, reorder=True),
    "hnswlib": HnswlibAdapter,
    "usearch": UsearchAdapter,
    "brute-force": BruteForceAdapter,
}


def make_adapter(name: str, threads: int = 1) -> Any:
    """An adapter by short name (see :data:`ADAPTERS`)."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; choose one of {sorted(ADAPTERS)}") from None
    return factory(threads=threads)


# --------------------------------------------------------------------------- measurement


@dataclass
class Measurement:
    """One (index, efSearch) point: recall, throughput, latency; ``neighbors`` kept for export."""

    ef_search: int
    k: int
    recall: float
    recall_distance: float
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    best_search_s: float
    neighbors: np.ndarray = field(repr=False)
    distances: np.ndarray = field(repr=False)


def time_batch(adapter: Any, queries: np.ndarray, k: int, ef: int) -> tuple[float, np.ndarray]:
    """One timed batch search with the adapter's thread count: (seconds, ids)."""
    with faiss_threads(adapter.threads):
        t0 = time.perf_counter()
        found = adapter.search(queries, k, ef)
        return time.perf_counter() - t0, found


def latencies_ms(adapter: Any, queries: np.ndarray, k: int, ef: int, n: int) -> np.ndarray:
    """Wall time in ms of ``n`` one-row calls (the first ``n`` queries)."""
    n = max(1, min(int(n), queries.shape[0]))
    lat = np.empty(n)
    with faiss_threads(adapter.threads):
        for i in range(n):
            q = queries[i]
            t0 = time.perf_counter()
            adapter.search_one(q, k, ef)
            lat[i] = time.perf_counter() - t0
    return lat * 1e3


def score(
    found: np.ndarray,
    base: np.ndarray,
    queries: np.ndarray,
    true_ids: np.ndarray,
    true_distances: np.ndarray,
    metric: str,
    k: int,
) -> tuple[float, float, np.ndarray]:
    """(recall by ids, recall by ann-benchmarks' distance rule, recomputed distances).

    The distances returned follow oluo_lab's conventions (l2 squared). The distance rule
    is applied in ann-benchmarks' units, so for l2 on plain Euclidean distances: its
    ``+ 1e-3`` tolerance is not the same test on squared ones.
    """
    found = np.asarray(found, dtype=np.int64)
    dist = distances_of(base, queries, found, metric)
    if metric == "l2":
        r_dist = recall_distance(np.sqrt(dist), np.sqrt(np.maximum(true_distances, 0)), k)
    else:
        r_dist = recall_distance(dist, true_distances, k)
    return recall_ids(found, true_ids, k), r_dist, dist


def measure(
    adapter: Any,
    base: np.ndarray,
    queries: np.ndarray,
    true_ids: np.ndarray,
    true_distances: np.ndarray,
    metric: str,
    k: int,
    ef: int,
    repeat: int = 3,
    latency_queries: int = 500,
) -> Measurement:
    """Measure one built adapter at one efSearch.

    One warm-up batch, then the best of ``repeat`` timed batches gives QPS; the last
    batch's answers give both recalls (distances recomputed exactly from the ids, as
    ann-benchmarks does). Then ``latency_queries`` one-row calls give p50/p95/p99.
    (:func:`oluo_lab.bench.sweep` interleaves several adapters instead.)
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    time_batch(adapter, queries, k, ef)  # warm-up
    best, found = min(
        (time_batch(adapter, queries, k, ef) for _ in range(repeat)), key=lambda t: t[0]
    )
    r_ids, r_dist, dist = score(found, base, queries, true_ids, true_distances, metric, k)
    lat = latencies_ms(adapter, queries, k, ef, latency_queries)
    p50, p95, p99 = (float(v) for v in np.percentile(lat, [50, 95, 99]))
    return Measurement(
        ef_search=int(ef),
        k=int(k),
        recall=float(r_ids),
        recall_distance=float(r_dist),
        qps=queries.shape[0] / best,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        best_search_s=best,
        neighbors=np.asarray(found, dtype=np.int64),
        distances=dist.astype(np.float32),
    )


def timed_build(adapter: Any, base: np.ndarray, params: dict[str, Any]) -> float:
    """Build with faiss set to the adapter's thread count; returns wall seconds."""
    _trim()
    with faiss_threads(adapter.threads):
        t0 = time.perf_counter()
        adapter.build(base, params)
        return time.perf_counter() - t0


def release(adapter: Any) -> int:
    """Drop the adapter's index; returns the resident bytes that freed (approximate)."""
    _trim()
    before = rss_bytes()
    adapter.close()
    _trim()
    return max(0, before - rss_bytes())
