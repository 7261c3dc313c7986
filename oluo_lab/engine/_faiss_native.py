"""faiss, SWIG and libc helpers of the compound index (engine layer, no policy).

What the index needs to know about faiss's native side and nothing else: the SWIG C
entry points behind ``swig_ptr`` and ``Index.search_c`` (one interpreter frame less per
call on the single-query path), huge-page backing of a base (``madvise``), the OpenMP
thread count of a build, the breadth-first renumbering of an HNSW graph, and reading
or writing an index's serialisation. ``CompoundIndex`` (``index.py``) decides when each
is used; the benchmark harness uses :func:`locality_order` and :func:`faiss_threads`
too, so its peers are built exactly as the engine builds its bases.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import blake3
import faiss
import numpy as np

__all__ = [
    "c_search_of",
    "collapse_huge_pages",
    "deserialize_index",
    "digest",
    "faiss_threads",
    "locality_order",
    "read_index_mapped",
    "serialize_index",
    "swig_ptr",
]

# the SWIG C functions themselves: faiss.swig_ptr and Index.search_c are Python
# wrappers around them (one interpreter frame each, per call)
swig_ptr: Callable[[np.ndarray], object] = getattr(
    getattr(sys.modules.get(faiss.swig_ptr.__module__), "_swigfaiss", None),
    "swig_ptr",
    faiss.swig_ptr,
)


def c_search_of(index: object) -> Callable[..., None]:
    """The SWIG C function behind ``index.search_c``."""
    lib = getattr(sys.modules.get(type(index).__module__), "_swigfaiss", None)
    for cls in type(index).__mro__:
        fn = getattr(lib, f"{cls.__name__}_search", None)
        if fn is not None:
            return fn
    return type(index).search_c


_MADV_COLLAPSE = 25  # Linux >= 6.1; older kernels answer EINVAL, which is ignored
_HUGE = 2 << 20
_madvise = None


def collapse_huge_pages(index: object) -> None:
    """Ask Linux to move the index's stored vectors and neighbour lists onto huge pages.

    An HNSW search is a random walk over tens of MB; with 4 KiB pages most steps miss
    the TLB. Whether faiss's allocations land on transparent huge pages is luck of the
    heap (THP "madvise" mode: only memory somebody advised, e.g. a freed NumPy buffer),
    and the same graph searched 10-25% slower on 4 KiB pages (docs/BENCHMARKS.md,
    engine). ``MADV_COLLAPSE`` makes it deterministic; it only changes the page
    backing, never the contents, and any failure leaves things as they were. A no-op
    outside Linux.
    """
    global _madvise
    if not sys.platform.startswith("linux"):
        return
    try:
        if _madvise is None:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = fn
        n = int(index.ntotal)
        if isinstance(index, faiss.IndexBinary):
            st = faiss.downcast_IndexBinary(index.storage)
            spans = [(int(st.xb.data()), n * int(index.code_size))]
        else:
            st = faiss.downcast_index(index.storage)
            spans = [(int(st.get_xb()), n * int(index.d) * 4)]
        nb = index.hnsw.neighbors
        spans.append((int(nb.data()), int(nb.size()) * 4))
        for addr, size in spans:
            lo = -(-addr // _HUGE) * _HUGE
            hi = (addr + size) // _HUGE * _HUGE
            if hi > lo:
                _madvise(lo, hi - lo, _MADV_COLLAPSE)
    except Exception:  # advisory only: no ctypes, no libc madvise, odd SWIG build
        return


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run with ``n`` faiss (OpenMP) threads, restoring the previous count after.

    A build with 1 thread gives deterministic graph bytes; more threads insert in a
    varying order."""
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


def digest(data: bytes | memoryview) -> bytes:
    """blake3-256 of the base bytes (for CompactComplete's file check); multi-threaded:
    it runs on every compaction and restore over the whole index (blake2b took 5x longer)."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()


def locality_order(ix: object) -> np.ndarray:
    """Breadth-first order of an HNSW index's level-0 graph from its entry point.

    Returns the int64 permutation ``perm`` for ``permute_entries`` (new position ``i``
    holds old position ``perm[i]``). Neighbours are discovered in neighbour-list order
    and nodes the search cannot reach from the entry point follow in their old order,
    so the result is a pure function of the graph (deterministic). Renumbering this
    way puts each node's neighbours near it in memory; a search then touches fewer
    cache lines and pages (faiss search is ~1.1-1.5x faster at equal recall on GloVe).
    """
    h = ix.hnsw
    n = int(ix.ntotal)
    if n == 0:
        return np.zeros(0, np.int64)
    offsets = faiss.vector_to_array(h.offsets).astype(np.int64)
    nbrs = faiss.vector_to_array(h.neighbors)
    width = h.nb_neighbors(0)
    level0 = nbrs[offsets[:n, None] + np.arange(width)[None, :]]  # level 0 comes first
    seen = np.zeros(n, bool)
    first = np.empty(n, np.int64)  # scratch: first index of a node in the candidate list
    order = []
    frontier = np.array([max(int(h.entry_point), 0)], np.int64)
    seen[frontier] = True
    while len(frontier):
        order.append(frontier)
        nxt = level0[frontier].ravel().astype(np.int64)
        nxt = nxt[nxt >= 0]
        nxt = nxt[~seen[nxt]]
        # keep each node's first occurrence, in discovery order (no sort): writing the
        # indices in reverse leaves the smallest index of every node in `first`
        idx = np.arange(len(nxt))
        first[nxt[::-1]] = idx[::-1]
        nxt = nxt[first[nxt] == idx]
        seen[nxt] = True
        frontier = nxt
    order.append(np.nonzero(~seen)[0])
    return np.ascontiguousarray(np.concatenate(order), dtype=np.int64)


def serialize_index(ix: object, binary: bool) -> bytes:
    """The faiss serialisation of a float (``binary=False``) or binary index."""
    if binary:
        return faiss.serialize_index_binary(ix).tobytes()
    return faiss.serialize_index(ix).tobytes()


def deserialize_index(data: bytes | memoryview, binary: bool) -> object:
    """faiss index from its serialisation, read in 1 MiB pieces.

    ``faiss.deserialize_index`` first copies the whole serialisation into a fresh
    ``std::vector`` (zero-filled, then memcpy'd: ~0.1 s at 137 MB) and then reads the
    index out of it; a callback reader hands faiss the bytes piece by piece instead
    (1.7x faster at 400k GloVe vectors, docs/BENCHMARKS.md ``snapshot-io``).
    ValueError when bytes follow the index."""
    mv = memoryview(data).cast("B")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        piece = mv[pos : pos + n].tobytes()
        pos += len(piece)
        return piece

    reader = faiss.PyCallbackIOReader(read, 1 << 20)
    ix = faiss.read_index_binary(reader) if binary else faiss.read_index(reader)
    if pos != len(mv):
        raise ValueError(f"{len(mv) - pos} trailing bytes after the index")
    return ix


def read_index_mapped(path: str, binary: bool) -> object:
    """The index at ``path`` with its stored vectors memory-mapped from the file
    (``IO_FLAG_MMAP_IFC``: zero-copy codes, the HNSW graph read into RAM). The file
    must not be modified in place afterwards (replace it by rename only)."""
    flags = faiss.IO_FLAG_MMAP_IFC
    if binary:
        return faiss.read_index_binary(str(path), flags)
    return faiss.read_index(str(path), flags)
