"""Benchmark results: a DataFrame with fixed column names, the environment it was measured
in, CSV and ann-benchmarks exports, Pareto frontiers, and commits into a Lab.

Column names (:data:`COLUMNS`) are a contract: plots and notebook explorers read them.
``recall`` is recall@k by id intersection; ``recall_distance`` is ann-benchmarks'
distance-threshold recall (true k-th distance + 1e-3). ``qps`` is batch throughput
(best of N after a warm-up) with ``threads`` threads; ``p50_ms``/``p95_ms``/``p99_ms``
are one-query-at-a-time latencies; ``index_bytes`` is the serialised size (on disk);
``memory_bytes`` the resident memory freed when the index was dropped (approximate).
"""

from __future__ import annotations

import html
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import metrics

__all__ = [
    "COLUMNS",
    "RECALL_BY",
    "BenchResults",
    "commit_results",
    "cpu_model",
    "environment",
    "frontier_at",
    "pareto_frontier",
    "qps_at_recall",
    "ratios_at_recall",
]

COLUMNS = [
    "library",
    "index",
    "metric",
    "M",
    "ef_construction",
    "ef_search",
    "k",
    "recall",
    "recall_distance",
    "qps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "build_s",
    "index_bytes",
    "memory_bytes",
    "threads",
    "run",
]
_INT_COLUMNS = ("M", "ef_construction", "ef_search", "k", "index_bytes", "memory_bytes", "threads")
_STR_COLUMNS = ("library", "index", "metric", "run")
_CSV_MAGIC = "# oluo_lab bench results v1"


# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    v = getattr(mod, "__version__", None)
    if v is None:
        from importlib import metadata

        try:
            v = metadata.version(module)
        except metadata.PackageNotFoundError:
            return None
    return str(v)


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the numbers come from: Python and library versions, CPU model and count,
    and the thread count (faiss's current OpenMP count when ``threads`` is None)."""
    from .runner import thread_count

    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "oluo_lab": _version("oluo_lab"),
        "numpy": _version("numpy"),
        "faiss": _version("faiss"),
        "hnswlib": _version("hnswlib"),
        "usearch": _version("usearch"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": thread_count() if threads is None else int(threads),
    }


# --------------------------------------------------------------------------- analysis


def pareto_frontier(frame: pd.DataFrame, recall: str = "recall", qps: str = "qps") -> pd.DataFrame:
    """Rows not dominated in (recall up, qps up), per (library, index), sorted by recall
    (:func:`oluo_lab.metrics.pareto_frontier` grouped by library and index)."""
    front = metrics.pareto_frontier(frame, recall, qps, by=["library", "index"])
    return front.reset_index(drop=True)


def _bracket(front: pd.DataFrame, target: float, recall: str) -> tuple[Any, Any]:
    """The frontier points (rows of one group's frontier, sorted by recall) just below the
    target and at or above it; ``None`` where there is none."""
    above = front[front[recall] >= target]
    below = front[front[recall] < target]
    return (
        below.iloc[-1] if len(below) else None,
        above.iloc[0] if len(above) else None,
    )


def _log_interpolate(lo: Any, hi: Any, target: float, recall: str) -> float:
    r0, r1 = float(lo[recall]), float(hi[recall])
    q0, q1 = float(lo["qps"]), float(hi["qps"])
    w = (target - r0) / (r1 - r0)
    return float(np.exp((1 - w) * np.log(q0) + w * np.log(q1)))


def qps_at_recall(
    frame: pd.DataFrame, target: float, recall: str = "recall", interpolate: bool = True
) -> pd.Series:
    """QPS of each (library, index) at ``recall >= target`` (NaN if no row reaches it).

    By default (the reading this project reports) the Pareto frontier's QPS *at* the
    target, interpolated linearly in log(QPS) between the two frontier points that bracket
    it, so two libraries are compared at the same recall rather than at whichever grid
    points they happened to hit; without a frontier point below the target the measured
    value is returned (no extrapolation). ``interpolate=False``: the best measured row with
    recall at or above the target (ann-benchmarks' table reading; it depends on where each
    library's ef_search grid lands).

    Rows of several builds of one (library, index) (a grid over M and efConstruction)
    form one frontier: each library is read at its best parameters, ann-benchmarks'
    headline reading.
    """
    out = {}
    front = pareto_frontier(frame, recall) if interpolate else None
    for key, group in frame.groupby(["library", "index"], sort=True):
        ok = group[group[recall] >= target]
        if not len(ok):
            out[key] = float("nan")
            continue
        best = float(ok["qps"].max())
        if front is not None:
            g = front[(front["library"] == key[0]) & (front["index"] == key[1])]
            lo, hi = _bracket(g, target, recall)
            if lo is not None and hi is not None:
                best = max(best, _log_interpolate(lo, hi, target, recall))
        out[key] = best
    how = "interpolated" if interpolate else "best row"
    return pd.Series(out, name=f"qps@{recall}>={target} ({how})", dtype=float)


def _point(row: Any, recall: str) -> str:
    parts = [
        f"{name}={int(row[col])}"
        for col, name in (("M", "M"), ("ef_construction", "efC"), ("ef_search", "ef"))
        if col in row.index
    ]  # short names: these label table cells
    return " ".join(parts) + f" ({float(row[recall]):.3f})"


def frontier_at(frame: pd.DataFrame, target: float, recall: str = "recall") -> pd.DataFrame:
    """Where each (library, index)'s Pareto frontier crosses ``target``: the interpolated
    QPS there (as :func:`qps_at_recall` with ``interpolate=True``) and the two frontier
    points around it, named by their M / ef_construction / ef_search and recall, so a grid
    reading says which build parameters each library's best comes from."""
    qps = qps_at_recall(frame, target, recall, interpolate=True)
    front = pareto_frontier(frame, recall)
    rows = []
    for key, value in qps.items():
        g = front[(front["library"] == key[0]) & (front["index"] == key[1])]
        lo, hi = _bracket(g, target, recall)
        rows.append(
            {
                "library": key[0],
                "index": key[1],
                "recall_target": target,
                "qps": value,
                "below": "-" if lo is None else _point(lo, recall),
                "at_or_above": "-" if hi is None else _point(hi, recall),
            }
        )
    return pd.DataFrame(rows)


#: How :func:`ratios_at_recall` names a recall column in its ``recall_by`` column.
RECALL_BY = {
    "recall": "neighbour ids",
    "recall_distance": "distance threshold (ann-benchmarks)",
}


def ratios_at_recall(
    frame: pd.DataFrame,
    targets: float | Sequence[float] = (0.90, 0.95, 0.99),
    library: str = "oluo_lab",
    recall: str = "recall",
    interpolate: bool = True,
) -> pd.DataFrame:
    """For each recall target (one or several): ``library``'s QPS, the best peer's, and
    their ratio. Columns: ``recall_target``; ``recall_by``, how recall was counted
    (:data:`RECALL_BY`: found neighbour ids, or ann-benchmarks' distance threshold);
    ``qps_read_as``, how a QPS at the target was read (``"interpolated on the Pareto
    front"``: the frontiers at exactly the target, see ``qps_at_recall``; or ``"best
    row at or above the target"``); ``<library>_qps``; ``best_peer``;
    ``best_peer_qps``; ``ratio`` (``<library>_qps / best_peer_qps``)."""
    rows = []
    for t in [targets] if isinstance(targets, int | float) else targets:
        s = qps_at_recall(frame, t, recall, interpolate)
        mine = s[[k for k in s.index if k[0] == library]]
        peers = s[[k for k in s.index if k[0] != library]].dropna()
        best_peer = peers.idxmax() if len(peers) else None
        m = float(mine.max()) if len(mine.dropna()) else float("nan")
        p = float(peers.max()) if len(peers) else float("nan")
        rows.append(
            {
                "recall_target": t,
                "recall_by": RECALL_BY.get(recall, recall),
                "qps_read_as": (
                    "interpolated on the Pareto front"
                    if interpolate
                    else "best row at or above the target"
                ),
                f"{library}_qps": m,
                "best_peer": "" if best_peer is None else f"{best_peer[0]} {best_peer[1]}",
                "best_peer_qps": p,
                "ratio": m / p if p == p and p > 0 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- results


def _clean_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"results frame lacks columns {missing}")
    frame = frame.copy()
    for c in _INT_COLUMNS:
        frame[c] = frame[c].astype("int64")
    for c in _STR_COLUMNS:
        frame[c] = frame[c].astype(str)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS + extra].reset_index(drop=True)


@dataclass(eq=False)
class BenchResults:
    """A sweep's rows (:attr:`frame`, columns :data:`COLUMNS`), the dataset description and
    the :func:`environment` they were measured in.

    ``answers`` optionally maps a row number to that row's ``(neighbors, distances,
    best_search_s)`` for :meth:`export_ann_benchmarks`.
    """

    frame: pd.DataFrame
    dataset: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    answers: dict[int, tuple[np.ndarray, np.ndarray, float]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        self.frame = _clean_frame(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def libraries(self) -> list[str]:
        return sorted(set(self.frame["library"]))

    def environment(self) -> dict[str, Any]:
        """The environment recorded with these results."""
        return dict(self.env)

    def pareto(self, recall: str = "recall") -> pd.DataFrame:
        """The Pareto frontier of (recall, qps) per library and index."""
        return pareto_frontier(self.frame, recall)

    def ratios(
        self,
        targets: float | Sequence[float] = (0.90, 0.95, 0.99),
        recall: str = "recall",
        interpolate: bool = True,
    ) -> pd.DataFrame:
        """oluo_lab's QPS over the best peer's at a recall target (or each of several):
        by default on the Pareto frontiers interpolated in log QPS at exactly the target;
        ``interpolate=False`` takes the best measured row at or above it. Columns as in
        :func:`ratios_at_recall`."""
        return ratios_at_recall(self.frame, targets, "oluo_lab", recall, interpolate)

    def subset(self, **equal: Any) -> BenchResults:
        """The rows whose columns equal the given values (e.g. ``M=16, ef_construction=128``:
        one build setting of a grid), with the same dataset and environment and the kept
        answers of those rows."""
        missing = [c for c in equal if c not in self.frame.columns]
        if missing:
            raise ValueError(f"no columns {missing} in the results")
        mask = np.ones(len(self.frame), bool)
        for col, value in equal.items():
            mask &= (self.frame[col] == value).to_numpy()
        rows = np.nonzero(mask)[0]
        answers = {i: self.answers[int(r)] for i, r in enumerate(rows) if int(r) in self.answers}
        frame = self.frame.iloc[rows].reset_index(drop=True)
        return BenchResults(frame, dict(self.dataset), dict(self.env), answers)

    def concat(self, other: BenchResults) -> BenchResults:
        """Rows of both (this one's dataset and environment are kept)."""
        n = len(self.frame)
        answers = dict(self.answers)
        answers.update({n + i: a for i, a in other.answers.items()})
        frame = pd.concat([self.frame, other.frame], ignore_index=True)
        return BenchResults(frame, dict(self.dataset), dict(self.env), answers)

    # ------------------------------------------------------------------ reprs
    def __repr__(self) -> str:
        libs = ", ".join(self.libraries)
        name = self.dataset.get("name", "?")
        return (
            f"BenchResults(rows={len(self.frame)}, dataset={name!r}, libraries=[{libs}], "
            f"threads={self.env.get('threads', '?')})"
        )

    def _repr_html_(self) -> str:
        """A plain semantic table (timings vary run to run: mark such outputs as ignored)."""
        shown = [
            "library",
            "index",
            "M",
            "ef_construction",
            "ef_search",
            "recall",
            "recall_distance",
            "qps",
            "p50_ms",
            "p99_ms",
            "build_s",
        ]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in shown)
        body = []
        for row in self.frame[shown].itertuples(index=False):
            cells = []
            for v in row:
                text = f"{v:.4g}" if isinstance(v, float) else str(v)
                cells.append(f"<td>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (
            f"<table><caption>{html.escape(repr(self))}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )

    # ------------------------------------------------------------------ CSV
    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows as CSV, preceded by ``#`` lines holding the dataset and environment."""
        path = Path(path)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(_CSV_MAGIC + "\n")
            f.write("# dataset: " + json.dumps(self.dataset, sort_keys=True) + "\n")
            f.write("# environment: " + json.dumps(self.env, sort_keys=True) + "\n")
            self.frame.to_csv(f, index=False, float_format="%.17g", lineterminator="\n")
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> BenchResults:
        """Read what :meth:`to_csv` wrote (or any CSV with the :data:`COLUMNS` header)."""
        path = Path(path)
        dataset: dict[str, Any] = {}
        env: dict[str, Any] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                if line.startswith("# dataset: "):
                    dataset = json.loads(line[len("# dataset: ") :])
                elif line.startswith("# environment: "):
                    env = json.loads(line[len("# environment: ") :])
        frame = pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""])
        return cls(frame, dataset, env)

    # ------------------------------------------------------------------ ann-benchmarks
    def export_ann_benchmarks(
        self, directory: str | os.PathLike[str], without_answers: str = "error"
    ) -> list[Path]:
        """Write the rows as ann-benchmarks result files that its own tools (``plot.py``,
        ``data_export.py``, ``create_website.py``, ``plotting/utils.compute_all_metrics``)
        read right; returns the files written.

        With h5py: ``results/<dataset>/<k>/oluo-bench-<library>-<index>-batch/<params>.hdf5``,
        one file per row, in ann-benchmarks' units: ``best_search_time`` is seconds per
        query (``1 / qps``; ``qps`` is the best of ``run_count`` timed batches, the row's
        ``runs``, 1 where a row does not record it), ``index_size`` is kB
        (``index_bytes / 1024``: the serialised size, where ann-benchmarks measures the
        resident memory a build adds), ``candidates`` the mean number of ids returned per
        query, ``build_time`` seconds; ``times`` /
        ``neighbors`` / ``distances`` hold the kept answers, distances as ann-benchmarks
        computes them (angular ``1 - cos``, euclidean plain L2, not oluo_lab's squared
        l2). Every column also travels as an ``oluo_<column>`` attribute, with the
        dataset and environment, for :meth:`from_ann_benchmarks`. Rows measured under
        another metric than the dataset's go to ``<dataset>-<metric>``. Use dataset
        names without ``_`` (``create_website.py`` splits on it), and put the dataset
        file ann-benchmarks compares against at ``data/<dataset>.hdf5``.

        Recall: ann-benchmarks' plots compute their recall ("k-nn") from the stored
        distances and the dataset file's with the distance-threshold rule (true k-th
        distance + 1e-3), which is this harness's ``recall_distance`` column, not
        ``recall`` (id intersection, lower where neighbours tie within 1e-3) that
        oluo_lab's tables also show. Both columns stay in the file under their own names.

        Rows without kept answers (``sweep(keep_answers=False)``, :meth:`from_csv`)
        cannot be plotted: one such file in ``results/`` stops ann-benchmarks' tools for
        the whole dataset. By default (``without_answers="error"``) they raise
        :class:`~oluo_lab.bench.MissingAnswersError` before anything is written;
        ``without_answers="aside"`` writes them as attribute-only files (no
        ``candidates``, ``oluo_answers_kept`` false) under ``without-answers/`` instead,
        which ann-benchmarks' tools do not read.
        Without h5py: ``results.csv`` (:meth:`to_csv`) with the same fields.
        """
        directory = Path(directory)
        try:
            import h5py  # noqa: F401
        except ImportError:
            directory.mkdir(parents=True, exist_ok=True)
            return [self.to_csv(directory / "results.csv")]
        from . import _ann_benchmarks

        return _ann_benchmarks.write(self, directory, without_answers)

    @classmethod
    def from_ann_benchmarks(
        cls, directory: str | os.PathLike[str], dataset: str | None = None
    ) -> BenchResults:
        """Read back what :meth:`export_ann_benchmarks` wrote (either layout): rows in
        their original order, the dataset description (so a re-export lands in
        ``results/<dataset>/`` again), the environment, and the answers of plottable
        runs (distances back in oluo_lab's conventions). Files of other algorithms in the
        same tree are skipped; ``dataset`` restricts reading to ``results/<dataset>``
        (needed when the directory holds several exports).
        """
        directory = Path(directory)
        if (directory / "results.csv").is_file():
            return cls.from_csv(directory / "results.csv")
        from . import _ann_benchmarks

        frame, info, env, answers = _ann_benchmarks.read(directory, dataset)
        return cls(frame, info, env, answers)

    # ------------------------------------------------------------------ summaries
    def summary(self, library: str | None = None) -> list[dict[str, Any]]:
        """The rows as plain dicts (finite floats, ints, strs), optionally one library's."""
        frame = self.frame if library is None else self.frame[self.frame["library"] == library]
        out = []
        for rec in frame.to_dict("records"):
            clean = {}
            for k, v in rec.items():
                if isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, float) and not np.isfinite(v):
                    v = None
                clean[str(k)] = v
            out.append(clean)
        return out


def commit_results(
    lab: Any,
    engine: Any,
    results: BenchResults,
    note: str = "",
    parameters: Mapping[str, Any] | None = None,
    libraries: Iterable[str] | None = None,
) -> Any:
    """Commit ``engine`` into ``lab`` with the benchmark as params and metrics.

    The params hold ``bench_parameters`` (the engine's M / ef_construction / ef_search /
    metric plus ``parameters``), ``bench_dataset`` and ``bench_environment``; the metrics
    ``bench_results`` (the rows of ``libraries``, all by default). The one manifest CID
    of the returned snapshot binds index, parameters, results and environment.
    """
    cfg = engine.config
    params: dict[str, Any] = {
        "metric": cfg.metric,
        "M": cfg.M,
        "ef_construction": cfg.ef_construction,
        "ef_search": cfg.ef_search,
        "dim": cfg.dim,
    }
    if parameters:
        params.update({str(k): v for k, v in parameters.items()})
    rows: list[dict[str, Any]] = []
    for lib in sorted(set(libraries) if libraries is not None else results.libraries):
        rows.extend(results.summary(lib))
    return lab.commit(
        engine,
        note=note,
        params={
            "bench_parameters": params,
            "bench_dataset": dict(results.dataset),
            "bench_environment": dict(results.env),
        },
        metrics={"bench_results": rows},
    )
