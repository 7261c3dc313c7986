"""matplotlib plots of benchmark results and Lab histories.

Every function takes ``ax=None`` (a new figure is made) and returns ``(fig, ax)`` so
callers can restyle. Benchmark functions accept a pandas DataFrame with the columns of
``oluo_lab.bench`` results (library, index, metric, M, ef_construction, ef_search, k,
recall, recall_distance, qps, p50_ms, p95_ms, p99_ms, build_s, index_bytes, threads,
run) or any object with such a DataFrame as ``.frame``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .metrics import IdToRow, engine_recall

__all__ = [
    "as_frame",
    "pareto_frontier",
    "plot_latency",
    "plot_recall_drift",
    "plot_recall_qps",
    "plot_storage",
    "recall_by_generation",
    "storage_frame",
]


def as_frame(results: Any, required: Sequence[str] = ()) -> pd.DataFrame:
    """The DataFrame of ``results`` (a DataFrame or an object with ``.frame``), checked to
    hold the ``required`` columns (ValueError naming the missing ones)."""
    frame = results.frame if hasattr(results, "frame") else results
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"expected a pandas DataFrame or an object with a .frame DataFrame, "
            f"not {type(results).__name__}"
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing}; have {list(frame.columns)}")
    return frame


def pareto_frontier(df: pd.DataFrame, x: str = "recall", y: str = "qps") -> pd.DataFrame:
    """Rows not dominated in (higher ``x``, higher ``y``), sorted by ``x`` ascending.

    A row is dominated when another has ``x`` and ``y`` both at least as high and one
    strictly higher. Rows with a NaN in ``x`` or ``y`` are ignored.
    """
    frame = as_frame(df, [x, y]).dropna(subset=[x, y])
    order = frame.sort_values([x, y], ascending=[False, False], kind="mergesort")
    keep = []
    best = -np.inf
    for idx, yv in zip(order.index, order[y].to_numpy(dtype=float), strict=True):
        if yv > best:
            keep.append(idx)
            best = yv
    return frame.loc[keep].sort_values(x, kind="mergesort")


def _axes(ax: Any):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        return fig, ax
    return ax.figure, ax


def _groups(frame: pd.DataFrame, by: str | Sequence[str] | None):
    if by is None:
        yield "all", frame
        return
    cols = [by] if isinstance(by, str) else list(by)
    as_frame(frame, cols)
    for key, group in frame.groupby(cols, sort=True, dropna=False):
        label = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        yield label, group


def plot_recall_qps(
    results: Any,
    ax: Any = None,
    pareto: bool = True,
    by: str | Sequence[str] | None = "library",
    x: str = "recall",
    y: str = "qps",
) -> tuple[Any, Any]:
    """Recall vs queries per second, one colour per ``by`` group; with ``pareto`` each
    group's frontier (:func:`pareto_frontier`) is drawn as a line labelled
    ``"<group> (Pareto)"``. QPS on a log axis.

    ``plot_recall_qps(lab, refs)``: the evaluations recorded with commits of a Lab
    (``refs``: a list of refs, default every commit with one), one group per commit
    (``lab.evaluations(refs)``: recall from the manifest, QPS measured at commit)."""
    if hasattr(results, "evaluations") and hasattr(results, "commit"):  # a Lab
        refs, ax = (None, ax) if ax is None or hasattr(ax, "plot") else (ax, None)
        results, by = results.evaluations(refs), "run" if by == "library" else by
    frame = as_frame(results, [x, y])
    fig, ax = _axes(ax)
    for label, group in _groups(frame, by):
        pts = ax.scatter(group[x], group[y], s=16, alpha=0.5, label=str(label))
        if pareto and len(group):
            front = pareto_frontier(group, x, y)
            ax.plot(
                front[x].to_numpy(),
                front[y].to_numpy(),
                "-o",
                markersize=4,
                color=pts.get_facecolor()[0][:3],
                label=f"{label} (Pareto)",
            )
    ax.set_xlabel(f"{x} (higher is better)")
    ax.set_ylabel(f"{y} (log scale, higher is better)")
    if (frame[y] > 0).any():
        ax.set_yscale("log")
    ax.set_title("recall vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig, ax


def plot_latency(
    results: Any,
    ax: Any = None,
    by: str | Sequence[str] | None = "library",
    x: str = "recall",
    percentiles: Sequence[str] = ("p50_ms", "p95_ms", "p99_ms"),
) -> tuple[Any, Any]:
    """Latency percentiles against ``x`` (default recall): per group one colour, p50
    solid, p95 dashed, p99 dotted; rows sorted by ``x``. Latency on a log axis."""
    frame = as_frame(results, [x, *percentiles])
    fig, ax = _axes(ax)
    styles = ["-", "--", ":", "-."]
    for label, group in _groups(frame, by):
        group = group.sort_values(x, kind="mergesort")
        colour = None
        for i, col in enumerate(percentiles):
            (line,) = ax.plot(
                group[x].to_numpy(),
                group[col].to_numpy(),
                styles[i % len(styles)],
                marker=".",
                color=colour,
                label=f"{label} {col.removesuffix('_ms')}",
            )
            colour = line.get_color()
    ax.set_xlabel(x)
    ax.set_ylabel("latency per query (ms, log scale)")
    if (frame[list(percentiles)] > 0).any().any():
        ax.set_yscale("log")
    ax.set_title("latency percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return fig, ax


def storage_frame(lab_or_log: Any) -> pd.DataFrame:
    """Per commit, oldest first: ``#`` (when the log has it), generation, entries, bytes,
    shared_bytes (also in the parent), new_bytes. From a Lab (its current branch) or a
    ``lab.log()`` DataFrame."""
    if hasattr(lab_or_log, "log"):
        log = lab_or_log.log(getattr(lab_or_log, "current_branch", None))
    else:
        log = lab_or_log
    log = as_frame(log, ["generation", "bytes", "new_bytes"])
    order = "#" if "#" in log.columns else "generation"
    out = log.sort_values(order, kind="mergesort").reset_index(drop=True)
    out = out.assign(shared_bytes=out["bytes"] - out["new_bytes"])
    cols = ["#", "generation", "entries", "bytes", "shared_bytes", "new_bytes"]
    return out[[c for c in cols if c in out.columns]]


def plot_storage(lab: Any, ax: Any = None, unit: str = "MiB") -> tuple[Any, Any]:
    """Stacked bars per commit: bytes shared with the parent (grey) under the new bytes
    the commit wrote (blue), from ``lab.log()`` (a Lab's current branch, or a log frame)."""
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    df = storage_frame(lab)
    fig, ax = _axes(ax)
    if "#" in df.columns:
        gens = np.array([f"#{n}" for n in df["#"]])
    else:
        gens = df["generation"].astype(str).to_numpy()
    shared = df["shared_bytes"].to_numpy() / scale
    new = df["new_bytes"].to_numpy() / scale
    ax.bar(gens, shared, color="#9e9e9e", label="shared with parent")
    ax.bar(gens, new, bottom=shared, color="#1f77b4", label="new")
    ax.set_xlabel("commit" if "#" in df.columns else "generation")
    ax.set_ylabel(f"logical bytes reachable ({unit})")
    ax.set_title("storage per commit")
    ax.legend(fontsize="small")
    return fig, ax


def recall_by_generation(
    lab: Any,
    dataset: Any,
    k: int = 10,
    id_to_row: IdToRow = None,
    ef: int | None = None,
    generations: Sequence[int] | None = None,
) -> pd.DataFrame:
    """recall@k of every generation (oldest first; or only ``generations``) against the
    dataset's exact ground truth. Engine ids map to dataset rows as in
    :func:`oluo_lab.notebook.metrics.ids_to_rows` (ints are rows, str ids are looked up in
    ``dataset.base_words``, or pass ``id_to_row``). Generations whose payloads gc retired
    are skipped. Columns: generation, entries, recall."""
    rows = []
    wanted = None if generations is None else set(generations)
    for snap in reversed(lab.history()):
        if wanted is not None and snap.generation not in wanted:
            continue
        if not (
            lab.store.has(snap.manifest.index_cid) and lab.store.has(snap.manifest.metadata_cid)
        ):
            continue
        engine = lab.checkout(snap, progress=False)
        rows.append(
            {
                "generation": snap.generation,
                "entries": snap.entries,
                "recall": engine_recall(engine, dataset, k, ef, id_to_row),
            }
        )
    return pd.DataFrame(rows, columns=["generation", "entries", "recall"])


def plot_recall_drift(
    lab: Any,
    dataset: Any,
    k: int = 10,
    ax: Any = None,
    id_to_row: IdToRow = None,
    ef: int | None = None,
) -> tuple[Any, Any]:
    """recall@k per generation against ``dataset``'s ground truth (see
    :func:`recall_by_generation`), a line over generation numbers on a 0..1 axis."""
    df = recall_by_generation(lab, dataset, k, id_to_row, ef)
    fig, ax = _axes(ax)
    ax.plot(df["generation"].to_numpy(), df["recall"].to_numpy(), "-o", label=f"recall@{k}")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"recall@{k} vs {getattr(dataset, 'name', 'dataset')} ground truth")
    ax.set_ylim(0, 1.02)
    if len(df):
        ax.set_xticks(df["generation"].to_numpy())
    ax.set_title("recall drift across generations")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig, ax
