"""Benchmark datasets: the ones of :mod:`oluo_lab.datasets`, ann-benchmarks HDF5 files,
and exact ground truth cached in a content-addressed store by dataset CID.

The GloVe sample, the full GloVe set and user arrays come from :mod:`oluo_lab.datasets`
(re-exported here, not duplicated). :func:`load_hdf5` reads the ann-benchmarks layout
(``train`` / ``test`` / ``neighbors`` / ``distances`` and the ``distance`` attribute).

:func:`ground_truth` computes exact top-k with faiss flat indexes and stores the arrays
as one blob in a :class:`GroundTruthCache`: the blob is found again through the
:func:`dataset_cid` of the vectors and metric, so a second call does no search.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import blake3
import cbor2
import numpy as np

from ..cas import CID, BookStore, ContentError, MemoryStore, ingest, open_store, reassemble
from ..datasets import (
    Dataset,
    cache_dir,
    exact_ground_truth,
    from_arrays,
    glove_full,
    glove_sample,
)

__all__ = [
    "Dataset",
    "GroundTruthCache",
    "dataset_cid",
    "from_arrays",
    "glove_full",
    "glove_sample",
    "ground_truth",
    "load_hdf5",
    "with_metric",
]

#: ann-benchmarks ``distance`` attribute -> oluo_lab metric name.
HDF5_METRICS = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}
_RECORD_FORMAT = "oluo_lab.bench.dataset/1"
_GT_FORMAT = "oluo_lab.bench.ground_truth/1"


def load_hdf5(path: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """A :class:`Dataset` from an ann-benchmarks HDF5 file (needs the ``hdf5`` extra).

    ``train`` becomes the base, ``test`` the queries. ``neighbors`` / ``distances`` are
    the stored ground truth; distances are converted to oluo_lab's conventions: angular
    stays ``1 - cos``, euclidean is squared (oluo_lab's l2 is squared Euclidean, as its
    exact ground truth and :func:`~oluo_lab.metrics.distances_of` are), dot
    becomes ``-<q, x>`` when the file stores ``<q, x>`` (detected by ordering). The
    harness takes the roots again where ann-benchmarks' units matter: the distance-rule
    recall and :meth:`~oluo_lab.bench.BenchResults.export_ann_benchmarks`.
    """
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            "reading ann-benchmarks HDF5 files needs the 'hdf5' extra: pip install 'oluo-lab[hdf5]'"
        ) from exc
    path = Path(path)
    with h5py.File(path, "r") as f:
        missing = [k for k in ("train", "test", "neighbors", "distances") if k not in f]
        if missing:
            raise ValueError(f"{path.name}: not an ann-benchmarks dataset, missing {missing}")
        distance = f.attrs.get("distance", "angular")
        if isinstance(distance, bytes):
            distance = distance.decode()
        if distance not in HDF5_METRICS:
            raise ValueError(
                f"{path.name}: distance {distance!r} not supported; "
                f"expected one of {sorted(HDF5_METRICS)}"
            )
        base = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        queries = np.ascontiguousarray(f["test"][:], dtype=np.float32)
        neighbors = np.ascontiguousarray(f["neighbors"][:], dtype=np.int32)
        distances = np.ascontiguousarray(f["distances"][:], dtype=np.float32)
    metric = HDF5_METRICS[distance]
    if metric == "l2":
        distances = np.square(distances, dtype=np.float32)
    elif (
        metric == "ip"
        and distances.shape[1] > 1
        and distances[:, 0].mean() > distances[:, -1].mean()
    ):
        distances = -distances  # stored as similarities (descending)
    return Dataset(
        name=name or path.stem,
        metric=metric,
        base=base,
        queries=queries,
        base_words=None,
        query_words=None,
        neighbors=neighbors,
        distances=distances,
    )


def _array_record(x: np.ndarray) -> dict:
    x = np.ascontiguousarray(x, dtype=np.float32)
    digest = blake3.blake3(x.reshape(-1).view(np.uint8)).digest()
    return {"shape": list(x.shape), "dtype": "float32", "blake3": digest}


def dataset_cid(base: np.ndarray, queries: np.ndarray, metric: str) -> CID:
    """The CID naming a (base, queries, metric) triple.

    It is the book CID of a small canonical CBOR record holding the shape, dtype and
    blake3 digest of both float32 arrays and the metric: same vectors, same CID.
    """
    record = {
        "format": _RECORD_FORMAT,
        "metric": metric,
        "base": _array_record(base),
        "queries": _array_record(queries),
    }
    return CID.for_book(cbor2.dumps(record, canonical=True))


class GroundTruthCache:
    """Ground-truth blobs in a content-addressed store, found by dataset CID.

    ``GroundTruthCache(path)`` keeps a book store under ``path/cas``
    (:func:`~oluo_lab.cas.open_store`: a pack store unless an older cache holds a directory
    store) and one small ref file per dataset under ``path/refs``;
    ``GroundTruthCache()`` keeps both in memory. :attr:`computed` counts the
    ground truths that had to be computed (a cache hit does not increase it).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.store: BookStore
        if self.path is None:
            self.store = MemoryStore()
            self._refs: dict[str, str] = {}
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.store = open_store(self.path / "cas")
            (self.path / "refs").mkdir(parents=True, exist_ok=True)
        self.computed = 0

    @classmethod
    def default(cls) -> GroundTruthCache:
        """The on-disk cache under :func:`oluo_lab.datasets.cache_dir` ``/bench-ground-truth``."""
        return cls(cache_dir() / "bench-ground-truth")

    def __repr__(self) -> str:
        where = "memory" if self.path is None else repr(self.path.name)
        return f"GroundTruthCache({where}, computed={self.computed})"

    def _ref_name(self, cid: CID, k: int) -> str:
        return f"{cid.hex}-k{k}"

    def lookup(self, cid: CID, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached (neighbors, distances) of dataset ``cid`` at depth ``k``, or None."""
        name = self._ref_name(cid, k)
        if self.path is None:
            text = self._refs.get(name)
        else:
            ref = self.path / "refs" / name
            text = ref.read_text("ascii").strip() if ref.is_file() else None
        if not text:
            return None
        try:
            doc = cbor2.loads(reassemble(CID.parse(text), self.store))
            if doc.get("format") != _GT_FORMAT or doc.get("dataset") != cid.raw:
                return None
            with np.load(io.BytesIO(doc["arrays"]), allow_pickle=False) as npz:
                return npz["neighbors"], npz["distances"]
        except (ContentError, ValueError, KeyError, OSError, cbor2.CBORDecodeError):
            return None  # a damaged entry is recomputed, never trusted

    def put(self, cid: CID, k: int, neighbors: np.ndarray, distances: np.ndarray) -> CID:
        """Store the arrays as one blob and point the dataset's ref at it; returns the blob CID."""
        buf = io.BytesIO()
        np.savez(buf, neighbors=neighbors, distances=distances)
        doc = {"format": _GT_FORMAT, "dataset": cid.raw, "k": k, "arrays": buf.getvalue()}
        root = ingest(cbor2.dumps(doc, canonical=True), self.store)
        name = self._ref_name(cid, k)
        if self.path is None:
            self._refs[name] = root.hex
        else:
            ref = self.path / "refs" / name
            tmp = ref.with_suffix(".tmp")
            tmp.write_text(root.hex, "ascii")
            os.replace(tmp, ref)
        return root


def ground_truth(
    base: np.ndarray,
    queries: np.ndarray,
    metric: str = "cosine",
    k: int = 100,
    cache: GroundTruthCache | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (neighbors int32, distances float32) of ``queries`` in ``base``.

    Computed with faiss flat indexes (:func:`oluo_lab.datasets.exact_ground_truth`);
    with a ``cache`` the result is stored under the :func:`dataset_cid` and reused.
    """
    if cache is None:
        return exact_ground_truth(base, queries, metric, k, progress)
    cid = dataset_cid(base, queries, metric)
    hit = cache.lookup(cid, k)
    if hit is not None:
        return hit
    neighbors, distances = exact_ground_truth(base, queries, metric, k, progress)
    cache.computed += 1
    cache.put(cid, k, neighbors, distances)
    return neighbors, distances


def with_metric(
    dataset: Dataset, metric: str, k: int = 100, cache: GroundTruthCache | None = None
) -> Dataset:
    """The same vectors under another metric, with that metric's exact ground truth."""
    if metric == dataset.metric:
        return dataset
    k = min(k, dataset.n)
    neighbors, distances = ground_truth(dataset.base, dataset.queries, metric, k, cache)
    return Dataset(
        name=f"{dataset.name}-{metric}",
        metric=metric,
        base=dataset.base,
        queries=dataset.queries,
        base_words=dataset.base_words,
        query_words=dataset.query_words,
        neighbors=neighbors,
        distances=distances,
    )
