"""Parameter sweeps: every library over a grid of metric x M x ef_construction x ef_search.

Each (library, metric, M, ef_construction) is built once, then measured at every
ef_search; builds and measurements of different libraries are interleaved so drift
on a shared machine hits all of them alike. The result is a :class:`BenchResults`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..datasets import Dataset
from ..engine import IndexConfig
from .datasets import GroundTruthCache, with_metric
from .results import BenchResults, environment
from .runner import latencies_ms, make_adapter, release, score, time_batch, timed_build

__all__ = ["DEFAULT_LIBRARIES", "sweep"]

DEFAULT_LIBRARIES = ("oluo_lab", "faiss", "hnswlib", "usearch")

AdapterSpec = str | Callable[[int], Any]


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="bench", unit="point")


def _points(built, ds, metric, k, ef_search, repeat, latency_queries):
    """Measure every built adapter at one ef_search, interleaved: after one warm-up batch
    each, ``repeat`` rounds time one batch of every adapter in turn (best round wins),
    so drift on a shared machine hits all libraries alike. Then latencies, one
    adapter after another."""
    for adapter in built:
        time_batch(adapter, ds.queries, k, ef_search)  # warm-up
    best = [float("inf")] * len(built)
    best_cpu = [float("inf")] * len(built)
    found: list = [None] * len(built)
    for _ in range(repeat):
        for i, adapter in enumerate(built):
            c0 = time.process_time()
            t, ids = time_batch(adapter, ds.queries, k, ef_search)
            best_cpu[i] = min(best_cpu[i], time.process_time() - c0)
            if t < best[i]:
                best[i], found[i] = t, ids
    out = []
    for i, adapter in enumerate(built):
        r_ids, r_dist, dist = score(
            found[i], ds.base, ds.queries, ds.neighbors, ds.distances, metric, k
        )
        lat = latencies_ms(adapter, ds.queries, k, ef_search, latency_queries)
        p50, p95, p99 = (float(v) for v in np.percentile(lat, [50, 95, 99]))
        row = {
            "library": adapter.library,
            "index": adapter.index,
            "metric": metric,
            "ef_search": int(ef_search),
            "k": int(k),
            "recall": float(r_ids),
            "recall_distance": float(r_dist),
            "qps": ds.n_queries / best[i],
            # load-robust companion: queries per CPU second of this process x threads
            # (what the threads would reach with a core each; time other jobs take is
            # not counted). Not ann-benchmarks' QPS, which is ``qps``.
            "qps_cpu": ds.n_queries * adapter.threads / best_cpu[i] if best_cpu[i] > 0 else 0.0,
            "runs": int(repeat),  # qps is the best of this many timed batches
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
        }
        out.append((row, (np.asarray(found[i], np.int64), dist.astype(np.float32), best[i])))
    return out


def sweep(
    dataset: Dataset,
    libraries: Iterable[AdapterSpec] = DEFAULT_LIBRARIES,
    M: Sequence[int] = (IndexConfig.M,),
    ef_construction: Sequence[int] = (IndexConfig.ef_construction,),
    ef_search: Sequence[int] = (16, 32, 64, 128),
    metric: Sequence[str] | str | None = None,
    k: int = 10,
    threads: int = 1,
    repeat: int = 3,
    latency_queries: int = 500,
    run: str = "run",
    cache: GroundTruthCache | None = None,
    keep_answers: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchResults:
    """Build and measure every library over the grid; one row per (build, ef_search).

    ``libraries`` are adapter names (see :data:`oluo_lab.bench.runner.ADAPTERS`) or
    factories ``f(threads) -> adapter``. ``metric`` defaults to the dataset's; other
    metrics get their exact ground truth through ``cache``. ``threads`` is used by every
    library for building and for batch search; the engine builds with it where faiss's
    build gives the same graph with any thread count, else with 1 thread (each row's
    ``build_threads`` says). ``run`` labels the rows (e.g. one label per machine or
    commit).
    Besides the standard columns every row has ``qps_cpu``: queries per CPU second of this
    process times ``threads`` (best of the same runs), a load-robust companion of ``qps``,
    and ``runs``: the number of timed batches ``qps`` is the best of (``repeat``).
    ``keep_answers`` keeps each row's returned ids and distances, which
    :meth:`BenchResults.export_ann_benchmarks` needs to write plottable runs.
    """
    if k > dataset.k:
        raise ValueError(f"k={k} exceeds the dataset's ground truth depth {dataset.k}")
    metrics = (
        [dataset.metric]
        if metric is None
        else [metric]
        if isinstance(metric, str)
        else list(metric)
    )
    specs = list(libraries)
    if not specs:
        raise ValueError("no libraries to measure")
    efs = [int(e) for e in ef_search]
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    rows: list[dict[str, Any]] = []
    answers: dict[int, tuple] = {}
    total = len(metrics) * len(M) * len(ef_construction) * len(specs) * len(efs)
    say = log or (lambda _msg: None)
    with _progress(progress, total) as bar:
        for met in metrics:
            ds = with_metric(dataset, met, k=max(k, min(100, dataset.k)), cache=cache)
            for m in M:
                for efc in ef_construction:
                    params = {"metric": met, "M": int(m), "ef_construction": int(efc)}
                    built = []
                    for spec in specs:
                        adapter = (
                            make_adapter(spec, threads) if isinstance(spec, str) else spec(threads)
                        )
                        build_s = timed_build(adapter, ds.base, params)
                        say(f"built {adapter.library} {adapter.index} {params} in {build_s:.1f}s")
                        built.append((adapter, build_s, adapter.index_bytes()))
                    first = len(rows)
                    for ef_value in efs:
                        points = _points(
                            [a for a, _, _ in built], ds, met, k, ef_value, repeat, latency_queries
                        )
                        for (adapter, build_s, size), (row, ans) in zip(built, points, strict=True):
                            row.update(
                                M=int(m),
                                ef_construction=int(efc),
                                build_s=build_s,
                                index_bytes=size,
                                memory_bytes=0,
                                threads=threads,
                                build_threads=getattr(adapter, "build_threads_used", None)
                                or threads,
                                run=run,
                            )
                            if keep_answers:
                                answers[len(rows)] = ans
                            rows.append(row)
                            say(
                                f"{row['library']:9s} {row['index']:18s} M={m} "
                                f"ef_construction={efc} ef_search={ef_value:4d} "
                                f"recall={row['recall']:.4f} qps={row['qps']:9.1f} "
                                f"p50={row['p50_ms']:.3f}ms"
                            )
                            bar.update(1)
                    for adapter, _, _ in built:
                        freed = release(adapter)
                        for r in rows[first:]:
                            if r["library"] == adapter.library and r["index"] == adapter.index:
                                r["memory_bytes"] = freed
    dataset_info = {
        "name": dataset.name,
        "n": dataset.n,
        "dim": dataset.dim,
        "n_queries": dataset.n_queries,
        "metric": dataset.metric,
    }
    frame = pd.DataFrame(rows)
    return BenchResults(frame, dataset_info, environment(threads), answers)
