"""faiss, SWIG and libc helpers of the compound index (engine layer, no policy).

What the index needs to know about faiss's native side and nothing else: the SWIG C
entry points behind ``swig_ptr`` and ``Index.search_c`` (one interpreter frame less per
call on the single-query path), huge-page backing of a base (``madvise``, through
``oluo_lab._io``), the OpenMP thread count of a build and whether it changes the graph,
the breadth-first renumbering of an HNSW graph, and reading
or writing an index's serialisation. ``CompoundIndex`` (``index.py``) decides when each
is used; the benchmark harness uses :func:`locality_order` and :func:`faiss_threads`
too, so its peers are built exactly as the engine builds its bases.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator

import blake3
import faiss
import numpy as np

from .._io import MADVISE

__all__ = [
    "DETERMINISTIC_BUILD_VERSIONS",
    "c_search_of",
    "collapse_huge_pages",
    "default_build_threads",
    "deserialize_index",
    "deterministic_threaded_build",
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
    if MADVISE is None:
        return
    try:
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
                MADVISE(lo, hi - lo, _MADV_COLLAPSE)
    except Exception:  # advisory only: an odd SWIG build
        return


#: faiss versions (from, up to but excluding) whose HNSW ``add`` gives the same graph
#: bytes with any thread count. faiss-cpu 1.15.1 builds HNSW graphs ParlayANN-style
#: (``hnsw_add_vertices_deterministic``: insertion in prefix-doubling batches against a
#: frozen snapshot, reverse links merged per destination in a fixed order, ties broken
#: by id); 1.15.0 and earlier use a lock-based build whose graph depends on thread
#: timing. Tested byte for byte in separate processes (tests/engine/test_determinism.py);
#: later versions need the same test before they join this range.
DETERMINISTIC_BUILD_VERSIONS = ((1, 15, 1), (1, 16, 0))


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def deterministic_threaded_build(version: str | None = None) -> bool:
    """True when this faiss (or ``version``) builds an HNSW graph whose bytes do not
    depend on the number of threads: a version in :data:`DETERMINISTIC_BUILD_VERSIONS`
    whose library has the deterministic build (``hnsw_add_vertices_deterministic``) and,
    where faiss makes it optional (``faiss.cvar.hnsw_deterministic_build``), has it on."""
    lo, hi = DETERMINISTIC_BUILD_VERSIONS
    if not lo <= _version_tuple(faiss.__version__ if version is None else version) < hi:
        return False
    if not hasattr(faiss, "hnsw_add_vertices_deterministic"):
        return False
    return bool(getattr(getattr(faiss, "cvar", None), "hnsw_deterministic_build", True))


def default_build_threads() -> int:
    """Threads of a build when the caller names none: faiss's OpenMP thread count where
    the build is deterministic at any thread count (:func:`deterministic_threaded_build`),
    else 1, so snapshot bytes never depend on the machine."""
    return int(faiss.omp_get_max_threads()) if deterministic_threaded_build() else 1


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run with ``n`` faiss (OpenMP) threads, restoring the previous count after.

    Whether the thread count of a build changes its graph: see
    :func:`deterministic_threaded_build`."""
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
