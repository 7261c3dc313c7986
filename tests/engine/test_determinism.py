"""Same operations -> byte-identical snapshots, in two fresh processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

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
