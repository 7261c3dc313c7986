"""Same operations -> byte-identical snapshots, in two fresh processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import hashlib, numpy as np
from oluo_lab.engine import OluoEngine, Ingest, IndexLightweight, EvictExpired, Scope
h = hashlib.sha256()
for metric, dim in (("cosine", 32), ("l2", 32), ("hamming", 128)):
    rng = np.random.default_rng(5)
    if metric == "hamming":
        v = rng.integers(0, 256, (3000, dim // 8), dtype=np.uint8)
    else:
        v = rng.standard_normal((3000, dim)).astype(np.float32)
    eng = OluoEngine(dim, metric, compact_threshold=700)
    eng.add(v[:1500], metadata=[{"i": i, "w": str(i)} for i in range(1500)])
    eng.handle(Ingest(v[1500:1600], [f"t{i}" for i in range(100)], decision=IndexLightweight(5),
                      now_ms=10, scope=Scope.PERSONAL))
    eng.delete(list(range(0, 1500, 7)))
    eng.handle(EvictExpired(5010))
    eng.add(v[1600:2400], ids=list(range(5000, 5800)))
    eng.add(v[0:3], ids=[0, 7, 14])
    last = eng.compact()
    snaps = eng.take_snapshots() + [last]
    for s in snaps:
        h.update(s.index_bytes); h.update(s.metadata_bytes)
        h.update(repr((s.key_counter, s.generation)).encode())
print(h.hexdigest(), len(snaps))
"""


def _run() -> str:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    return out.stdout.strip()


def test_two_fresh_processes_produce_identical_bytes():
    a, b = _run(), _run()
    assert a == b
    assert a.split()[1] != "0"
    assert len(hashlib.sha256(a.encode()).hexdigest()) == 64


THREADS_SCRIPT = r"""
import hashlib, sys, numpy as np
from oluo_lab.engine import OluoEngine
threads = None if sys.argv[1] == "default" else int(sys.argv[1])
h = hashlib.sha256()
for metric, dim in (("cosine", 24), ("l2", 24), ("hamming", 128)):
    rng = np.random.default_rng(9)
    if metric == "hamming":
        v = rng.integers(0, 256, (9000, dim // 8), dtype=np.uint8)
    else:
        v = rng.standard_normal((9000, dim)).astype(np.float32)
    eng = OluoEngine(dim, metric, compact_threshold=100_000, M=12, ef_construction=48,
                     build_threads=threads)
    eng.add(v[:7000])
    snaps = [eng.compact()]                      # full build (renumbered for floats)
    eng.add(v[7000:8500], ids=list(range(7000, 8500)))
    snaps.append(eng.compact())                  # copy-on-write append
    eng.delete(list(range(0, 8500, 9)))
    eng.add(v[8500:], ids=list(range(8500, 9000)))
    snaps.append(eng.compact())                  # rebuild after deletes
    for s in snaps:
        h.update(s.index_bytes); h.update(s.metadata_bytes)
print(h.hexdigest(), eng._index.effective_build_threads())
"""


def test_build_threads_do_not_change_the_bytes_in_separate_processes():
    """1, 2 and 3 build threads, and the default (faiss's thread count, 2 here), each in a
    fresh process: the same snapshot bytes. Batches of 9000 rows make faiss's insertion
    loops run in parallel (it parallelises batches of more than 100 points)."""
    from oluo_lab.engine._faiss_native import deterministic_threaded_build

    if not deterministic_threaded_build():
        import faiss

        pytest.skip(f"faiss {faiss.__version__} builds thread-dependent graphs")
    root = Path(__file__).resolve().parents[2]
    out = {}
    for threads in ("1", "2", "3", "default"):
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "2"}
        run = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, threads],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        out[threads] = run.stdout.split()
    assert [out[t][1] for t in ("1", "2", "3", "default")] == ["1", "2", "3", "2"]
    assert len({digest for digest, _ in out.values()}) == 1
