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


#: held-out queries of the sweep tests (a fixed set: same CID in every lab)
SWEEP_QUERIES = np.random.default_rng(77).standard_normal((25, DIM)).astype(np.float32)


def build_for_sweep(M: int, ef_construction: int, **_: object) -> OluoEngine:
    """A sweep's build function (module level, so process executors can pickle it)."""
    x = np.random.default_rng(3).standard_normal((400, DIM)).astype(np.float32)
    eng = OluoEngine(
        DIM, metric="l2", compact_threshold=10_000, M=M, ef_construction=ef_construction
    )
    eng.add(x, ids=[f"s{i}" for i in range(len(x))])
    return eng


#: where the Lab tests run: a local directory, and a bucket on the moto S3 server
LAB_KINDS = ("local", "s3")


def new_lab(kind: str, tmp_path, request, name: str = "lab", **options):
    """A new lab of ``kind``: ``tmp_path/name``, or a fresh prefix on the session's moto
    server (the ``s3`` fixture, started on first use)."""
    from oluo_lab.snapshot import Lab

    if kind == "local":
        return Lab(tmp_path / name, **options)
    s3 = request.getfixturevalue("s3")
    return Lab(s3.url(name), **s3.options, **options)


@pytest.fixture(params=LAB_KINDS)
def make_lab(request, tmp_path):
    """``make_lab(name="lab")``: a new lab, locally and on S3 (``make_lab.kind``)."""

    def make(name: str = "lab", **options):
        return new_lab(request.param, tmp_path, request, name, **options)

    make.kind = request.param
    return make


def build_with_two_threads(M: int, ef_construction: int, **params: object) -> OluoEngine:
    """``build_for_sweep``, refusing to run unless the task set faiss to 2 threads (a Dask
    worker process starts with 1)."""
    import faiss

    if faiss.omp_get_max_threads() != 2:
        raise RuntimeError(f"faiss runs {faiss.omp_get_max_threads()} threads here, not 2")
    return build_for_sweep(M, ef_construction, **params)
