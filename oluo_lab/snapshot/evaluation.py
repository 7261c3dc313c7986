"""Evaluation recorded at commit: recall@k on stored held-out queries.

Snapshot layer. ``Lab.commit(engine, evaluate=...)`` takes held-out queries (an
:class:`EvalSpec`, a :class:`~oluo_lab.datasets.Dataset` or an array) and records, in the
manifest, recall@k of the committed engine at one or more ``ef_search`` values against
its exact answers. Everything recorded there is deterministic (HNSW answers each query
on its own, so recall does not depend on threads or timing): the same build evaluated on
the same queries gives the same manifest, hence the same commit id. Measured timings
(QPS, latency percentiles) are not: they go in the commit's refs-log record.

Stored in the CAS (docs/FORMAT.md §3.7): the query set once, referenced by CID; the exact
ground truth (brute-force faiss search, the engine's exact path, same metric), keyed by
(digest of the live vectors, queries CID, metric, k) and reused by any later evaluation
with the same key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3
import cbor2
import numpy as np

from ..cas import CID, BookStore, ingest, reassemble
from ..metrics import recall_ids
from .errors import ManifestSerde

if TYPE_CHECKING:
    from ..engine import OluoEngine

__all__ = [
    "DEFAULT_EF_SEARCH",
    "EvalSpec",
    "Evaluation",
    "as_spec",
    "encode_queries",
    "evaluate_engine",
    "load_queries",
    "recall_of",
]

#: ef_search values evaluated when a spec names none (plus the engine's own ef_search)
DEFAULT_EF_SEARCH = (16, 32, 64, 128, 256)
QUERIES_FORMAT = "oluo-queries"
TRUTH_FORMAT = "oluo-truth"


@dataclass(frozen=True)
class EvalSpec:
    """Held-out queries and what to measure on them at commit.

    ``queries``: (n, d) vectors (float for cosine/l2/ip, packed-bit uint8 for hamming);
    ``k``: neighbours per query; ``ef_search``: the values to measure recall at (default
    :data:`DEFAULT_EF_SEARCH`; the engine's own ef_search is always added);
    ``timings``: measure QPS and latency percentiles too (kept in the refs log, never
    in the manifest); ``latency_queries``: how many queries are timed one by one.
    """

    queries: Any
    k: int = 10
    ef_search: Sequence[int] | None = None
    timings: bool = True
    latency_queries: int = 100


def as_spec(evaluate: Any) -> EvalSpec | None:
    """An :class:`EvalSpec` from what ``commit(evaluate=...)`` accepts: None, a spec, a
    Dataset (its queries), or an array of queries. ``TypeError``/``ValueError`` otherwise."""
    if evaluate is None:
        return None
    if isinstance(evaluate, EvalSpec):
        spec = evaluate
    elif hasattr(evaluate, "queries") and hasattr(evaluate, "base"):
        spec = EvalSpec(evaluate.queries)
    elif isinstance(evaluate, np.ndarray | list | tuple):
        spec = EvalSpec(evaluate)
    else:
        raise TypeError(
            "evaluate= takes held-out queries: an EvalSpec, a Dataset or an array, "
            f"not {type(evaluate).__name__}"
        )
    if not isinstance(spec.k, int) or isinstance(spec.k, bool) or spec.k < 1:
        raise ValueError(f"evaluation k must be a positive int, got {spec.k!r}")
    efs = spec.ef_search
    if efs is not None:
        for ef in efs:
            if not isinstance(ef, int | np.integer) or isinstance(ef, bool) or int(ef) < 1:
                raise ValueError(f"evaluation ef_search values must be positive ints, got {ef!r}")
    return spec


def recall_of(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall of ``found`` against ``truth`` ((n, k) arrays of row or key numbers, -1
    padding): true neighbours found over valid true neighbours (1.0 when there are none);
    :func:`oluo_lab.metrics.recall_ids` with ``denominator="truth"``."""
    return float(recall_ids(found, truth, denominator="truth"))


def _encode_array(fmt: str, array: np.ndarray, **fields: Any) -> bytes:
    doc = {
        "format": fmt,
        "version": 1,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "data": np.ascontiguousarray(array).tobytes(),
        **fields,
    }
    return cbor2.dumps(doc, canonical=True)


def _decode_array(raw: bytes, fmt: str, cid: CID) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        doc = cbor2.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != fmt or doc.get("version") != 1:
            raise ValueError(f"not an {fmt} version 1 document")
        array = np.frombuffer(doc["data"], dtype=np.dtype(doc["dtype"])).reshape(doc["shape"])
    except Exception as exc:  # cbor2 and numpy raise several unrelated types on garbage
        raise ManifestSerde(f"{fmt} blob {cid}: {exc}") from exc
    return array, doc


def encode_queries(queries: np.ndarray) -> bytes:
    """The stored form of a query set (docs/FORMAT.md §3.7)."""
    return _encode_array(QUERIES_FORMAT, np.ascontiguousarray(queries))


def load_queries(store: BookStore, cid: CID) -> np.ndarray:
    """The query set stored under ``cid`` (hash-verified)."""
    return _decode_array(reassemble(cid, store), QUERIES_FORMAT, cid)[0]


def _queries_of(engine: OluoEngine, spec: EvalSpec) -> np.ndarray:
    """The spec's queries in the engine's storage dtype, checked against the engine
    (dimension, dtype) before anything changes."""
    q = np.asarray(spec.queries)
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"evaluation queries must be a non-empty (n, d) array, got {q.shape}")
    if engine.metric != "hamming" and q.dtype.kind == "f":
        q = np.ascontiguousarray(q, dtype=np.float32)
    engine.search(q[:1], k=1, exact=True)  # raises the engine's typed error on a mismatch
    return np.ascontiguousarray(q)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's outcome: the manifest's ``evaluation`` map (deterministic), the
    timings for the refs log (measured), and the blobs to store (queries, truth)."""

    record: dict[str, Any]
    timings: dict[str, Any]
    blobs: tuple[bytes, ...]

    @property
    def recall(self) -> dict[int, float]:
        return {int(ef): float(r) for ef, r in self.record["recall"]}


def check_spec(engine: OluoEngine, spec: EvalSpec) -> np.ndarray:
    """Validate ``spec`` against ``engine`` (before a commit changes anything); returns
    the queries in storage dtype."""
    return _queries_of(engine, spec)


def _rows_of(keys: np.ndarray, live_keys: np.ndarray) -> np.ndarray:
    """Engine keys -> positions in the key-ordered live vectors (-1 stays -1)."""
    pos = np.searchsorted(live_keys, np.maximum(keys, 0))
    pos = np.minimum(pos, max(len(live_keys) - 1, 0))
    ok = (keys >= 0) & (len(live_keys) > 0)
    if len(live_keys):
        ok &= live_keys[pos] == keys
    return np.where(ok, pos, -1).astype(np.int64)


def _percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q)) if samples else float("nan")


def evaluate_engine(
    engine: OluoEngine,
    spec: EvalSpec,
    queries: np.ndarray,
    known_truth: Callable[[Mapping[str, Any]], bytes | None],
) -> Evaluation:
    """Measure ``engine`` on ``queries`` (from :func:`check_spec`).

    ``known_truth(key)`` returns the stored truth blob for a key (``vectors``,
    ``queries``, ``metric``, ``k``) when an earlier evaluation computed it, else None;
    the ground truth is then reused instead of recomputed."""
    k = int(spec.k)
    efs = sorted(
        {int(e) for e in (spec.ef_search or DEFAULT_EF_SEARCH)} | {engine.config.ef_search}
    )
    queries_blob = encode_queries(queries)
    queries_cid = _cid_of(queries_blob)
    live_keys, _, vectors = engine.live_vectors()
    vectors_digest = blake3.blake3(np.ascontiguousarray(vectors).tobytes()).digest()
    key = {
        "vectors": vectors_digest,
        "queries": bytes(queries_cid),
        "metric": engine.metric,
        "k": k,
    }
    truth_blob = known_truth(key)
    if truth_blob is None:
        exact = engine.search(queries, k=k, exact=True)
        truth = _rows_of(np.asarray(exact.keys), live_keys)
        truth_blob = _encode_array(TRUTH_FORMAT, truth, **key)
    truth_cid = _cid_of(truth_blob)
    truth, _ = _decode_array(truth_blob, TRUTH_FORMAT, truth_cid)
    recall: list[list[Any]] = []
    points: list[dict[str, Any]] = []
    timed = queries[: max(0, int(spec.latency_queries))]
    for ef in efs:
        res = engine.search(queries, k=k, ef=ef)
        recall.append([ef, recall_of(_rows_of(np.asarray(res.keys), live_keys), truth)])
        if spec.timings:  # timed on a second, warm pass
            t0 = time.perf_counter()
            engine.search(queries, k=k, ef=ef)
            batch_s = time.perf_counter() - t0
            lat = []
            for i in range(len(timed)):
                t1 = time.perf_counter()
                engine.search(timed[i : i + 1], k=k, ef=ef)
                lat.append(time.perf_counter() - t1)
            points.append(
                {
                    "ef_search": ef,
                    "qps": len(queries) / batch_s if batch_s > 0 else float("inf"),
                    "p50_ms": _percentile_ms(lat, 50),
                    "p95_ms": _percentile_ms(lat, 95),
                    "p99_ms": _percentile_ms(lat, 99),
                }
            )
    record = {
        "queries": bytes(queries_cid),
        "n_queries": int(len(queries)),
        "k": k,
        "metric": engine.metric,
        "vectors": vectors_digest,
        "truth": bytes(truth_cid),
        "recall": recall,
    }
    timings: dict[str, Any] = {}
    if spec.timings:
        import faiss

        timings = {"threads": int(faiss.omp_get_max_threads()), "points": points}
    return Evaluation(record, timings, (queries_blob, truth_blob))


def _cid_of(blob: bytes) -> CID:
    """The DAG CID ``ingest`` gives ``blob`` (computed in memory, nothing stored)."""
    from ..cas import MemoryStore

    return ingest(blob, MemoryStore())


def store_blobs(store: BookStore, evaluation: Evaluation) -> None:
    """Put the evaluation's queries and truth in ``store`` (idempotent)."""
    for blob in evaluation.blobs:
        ingest(blob, store)


def truth_key_of(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The ground-truth key of a recorded evaluation (None when it has none)."""
    try:
        return (record["vectors"], record["queries"], record["metric"], record["k"])
    except (KeyError, TypeError):
        return None
