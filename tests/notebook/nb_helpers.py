"""Small deterministic fixtures for the notebook-layer tests (engine, lab, dataset, bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DIM = 16
N = 400


def vectors(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def words(n: int = N) -> list[str]:
    return [f"w{i}" for i in range(n)]


def make_engine(n: int = 300):
    from oluo_lab.engine import OluoEngine

    x = vectors()
    eng = OluoEngine(DIM, M=8, ef_construction=40, ef_search=32)
    eng.add(x[:n], ids=words()[:n], metadata=[{"i": i, "tag": f"t{i % 3}"} for i in range(n)])
    return eng


def make_lab(root: Path):
    """A 3-generation lab under ``root/lab``: 300 words, +100 words, -10 words."""
    from oluo_lab.snapshot import Lab

    x = vectors()
    eng = make_engine(300)
    lab = Lab(root / "lab")
    lab.commit(eng, note="first 300", progress=False, lr=0.5)
    eng.add(x[300:], ids=words()[300:], metadata=[{"i": i} for i in range(300, N)])
    lab.commit(eng, note="+100", progress=False)
    eng.delete(words()[:10])
    lab.commit(eng, note="-10", progress=False)
    lab.tag("base", 1)
    return lab, eng


def make_dataset():
    from oluo_lab.datasets import Dataset, exact_ground_truth

    x = vectors()
    q = vectors(25, seed=1)
    nb, dist = exact_ground_truth(x, q, "cosine", 20)
    return Dataset("tiny", "cosine", x, q, np.array(words(), dtype=object), None, nb, dist)


def bench_frame() -> pd.DataFrame:
    """Synthetic benchmark rows with the oluo_lab.bench columns (two libraries, two M)."""
    rows = []
    for lib, speed in (("oluo", 1.0), ("peer", 1.3)):
        for m in (8, 16):
            for ef in (10, 20, 40, 80, 160):
                recall = min(1.0, 0.55 + 0.1 * np.log2(ef / 10) + (0.04 if m == 16 else 0))
                qps = 2e5 / (ef * (1 + m / 16)) * speed
                rows.append(
                    dict(
                        library=lib,
                        index="hnsw",
                        metric="cosine",
                        M=m,
                        ef_construction=100,
                        ef_search=ef,
                        k=10,
                        recall=recall - (0.06 if lib == "peer" else 0),
                        recall_distance=recall,
                        qps=qps,
                        p50_ms=1000 / qps,
                        p95_ms=1500 / qps,
                        p99_ms=2000 / qps,
                        build_s=0.5 * m,
                        index_bytes=1000 * m,
                        threads=1,
                        run=0,
                    )
                )
    return pd.DataFrame(rows)
