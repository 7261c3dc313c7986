from __future__ import annotations

import numpy as np
import pytest

from oluo_lab.cas import open_store
from oluo_lab.engine import OluoEngine

DIM = 16


def make_engine(
    n: int = 300, seed: int = 0, threshold: int = 10_000
) -> tuple[OluoEngine, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    eng = OluoEngine(DIM, compact_threshold=threshold, M=8, ef_construction=40, ef_search=64)
    eng.add(
        x,
        ids=[f"w{i}" for i in range(n)],
        metadata=[{"i": i, "tag": f"t{i % 7}"} for i in range(n)],
    )
    return eng, x


@pytest.fixture
def engine_and_vectors() -> tuple[OluoEngine, np.ndarray]:
    return make_engine()


@pytest.fixture(params=["packs", "dir"])
def lab_dir(tmp_path, request):
    """A data directory and its store, of each kind (pack store, directory store)."""
    d = tmp_path / "lab"
    d.mkdir()
    return d, open_store(d / "cas", kind=request.param)
