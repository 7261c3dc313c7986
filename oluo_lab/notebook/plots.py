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

from .._html import COLORS, byte_unit
from ..metrics import as_frame, pareto_frontier
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


def _axes(ax: Any, figsize: tuple[float, float] = (7.2, 4.6)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _groups(frame: pd.DataFrame, by: str | Sequence[str] | None):
    if by is None:
        yield "", frame
        return
    cols = [by] if isinstance(by, str) else list(by)
    as_frame(frame, cols)
    for key, group in frame.groupby(cols, sort=True, dropna=False):
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        yield label, group


#: Columns that tell one build of an index from another: a plotted line joins the
#: measurements of one build (one value of each) in ``ef_search`` order.
BUILD_COLUMNS = ("M", "ef_construction")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _builds(frame: pd.DataFrame, by: str | Sequence[str] | None):
    """Per ``by`` group: ``(group label, group rows, builds)``, where ``builds`` lists
    ``(build label, build number, rows)`` for every build (a distinct value of the
    :data:`BUILD_COLUMNS` that vary in ``frame``), rows in ``ef_search`` order. The build
    number (its marker) is the same for the same build values in every group; labels
    name only the columns that vary. Two indexes of one group (faiss's ``HNSWFlat`` and
    its brute-force ``Flat`` are both library ``faiss``) are two builds, named by index."""
    varying = [c for c in BUILD_COLUMNS if c in frame.columns and frame[c].nunique() > 1]
    if _index_varies_within(frame, by):
        varying.insert(0, "index")
    keys = sorted(set(frame[varying].itertuples(index=False, name=None))) if varying else [()]
    number = {key: i for i, key in enumerate(keys)}
    for label, group in _groups(frame, by):
        parts = group.groupby(varying, sort=True) if varying else [((), group)]
        builds = []
        for key, rows in parts:
            key = key if isinstance(key, tuple) else (key,)
            if "ef_search" in rows.columns:
                rows = rows.sort_values("ef_search", kind="mergesort")
            name = ", ".join(
                str(v) if c == "index" else f"{c}={v}" for c, v in zip(varying, key, strict=True)
            )
            builds.append((name, number.get(key, 0), rows))
        yield label, group, builds


def _index_varies_within(frame: pd.DataFrame, by: str | Sequence[str] | None) -> bool:
    """Whether some ``by`` group holds rows of more than one ``index``."""
    cols = [] if by is None else [by] if isinstance(by, str) else list(by)
    if "index" not in frame.columns or "index" in cols:
        return False
    if not cols:
        return frame["index"].nunique() > 1
    return bool((frame.groupby(cols, dropna=False)["index"].nunique() > 1).any())


def _the(frame: pd.DataFrame, column: str) -> Any:
    """The one value of ``column`` in ``frame``; None when absent or not unique."""
    if column not in frame.columns:
        return None
    values = pd.unique(frame[column].dropna())
    if len(values) != 1:
        return None
    return values[0].item() if isinstance(values[0], np.generic) else values[0]


def _x_label(frame: pd.DataFrame, x: str) -> str:
    k = _the(frame, "k")
    at = f"@{k}" if k is not None else ""
    if x == "recall":
        return f"recall{at} (neighbour ids found; higher is better)"
    if x == "recall_distance":
        return f"recall{at} (ann-benchmarks distance rule; higher is better)"
    return x


def _threads_text(frame: pd.DataFrame) -> str:
    threads = _the(frame, "threads")
    if threads is None:
        return ""
    return f"{threads} thread" + ("s" if threads != 1 else "")


def _title(results: Any, frame: pd.DataFrame, what: str) -> str:
    """``"<dataset>: <what>"`` and a second line with the data and fixed parameters
    (from a BenchResults' ``dataset`` where given, else the frame's constant columns)."""
    info = getattr(results, "dataset", None) or {}
    name = info.get("name")
    first = f"{name}: {what}" if name else what
    details = []
    if info.get("n"):
        details.append(f"{int(info['n']):,} vectors")
    if info.get("n_queries"):
        details.append(f"{int(info['n_queries']):,} queries")
    for col in ("metric",):
        v = _the(frame, col)
        if v is not None:
            details.append(str(v))
    k = _the(frame, "k")
    if k is not None:
        details.append(f"k={k}")
    for col in BUILD_COLUMNS:
        v = _the(frame, col)
        if v is not None:
            details.append(f"{col}={v}")
    return first + ("\n" + ", ".join(details) if details else "")


def _tick_text(value: float, _pos: Any = None) -> str:
    """A log-axis tick as plain text: ``0.04``, ``2``, ``20,000`` (no ``4x10^-2``)."""
    if value <= 0:
        return ""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers: every decade, and between decades 2 and 5
    (also 3 when the axis spans at most 1.5 decades, every step up to 0.6)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(_tick_text))
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))

    def minor(value: float, pos: Any = None) -> str:
        if value <= 0:
            return ""
        lo, hi = sorted(axis.get_view_interval())
        span = np.log10(hi / lo) if lo > 0 else np.inf
        shown = (2.0, 5.0) if span > 1.5 else (2.0, 3.0, 5.0) if span > 0.6 else None
        mantissa = round(value / 10 ** np.floor(np.log10(value)), 6)
        return _tick_text(value) if shown is None or mantissa in shown else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _label_points(ax: Any, lines: list[tuple[pd.DataFrame, str]], x: str, y: str, col: str) -> None:
    """Write each point's ``col`` value (its ef_search) beside it, in its line's colour,
    once per place: a point within 8 pixels of an already labelled point with the same
    value (the same setting measured on two libraries) gets no second label. Call
    after the axes' scales are set."""
    ax.autoscale_view()
    placed: list[tuple[Any, float, float]] = []
    for rows, colour in lines:
        pts = ax.transData.transform(np.column_stack([rows[x], rows[y]]).astype(float))
        for value, (px, py), xv, yv in zip(rows[col], pts, rows[x], rows[y], strict=True):
            if any(v == value and np.hypot(px - qx, py - qy) < 8 for v, qx, qy in placed):
                continue
            placed.append((value, px, py))
            ax.annotate(
                str(value),
                (float(xv), float(yv)),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
                color=colour,
            )


def plot_recall_qps(
    results: Any,
    ax: Any = None,
    pareto: bool = True,
    by: str | Sequence[str] | None = "library",
    x: str = "recall",
    y: str = "qps",
    title: str | None = None,
) -> tuple[Any, Any]:
    """Recall against queries per second: one line per build, joining its measurements in
    ``ef_search`` order, each point labelled with its ef_search.

    Colour tells the ``by`` group (library), the marker the build (``M`` and
    ``ef_construction``, when they vary); lines are labelled ``"<group> M=<M>"``. With
    ``pareto`` each group's Pareto frontier (:func:`pareto_frontier`: the measurements no
    other of the group beats on both axes) is drawn as a wide pale band labelled
    ``"<group> Pareto front"``. QPS on a log axis with plain tick labels; the title
    names the dataset (for a BenchResults), metric, k and the fixed build parameters.

    ``plot_recall_qps(lab, refs)``: the evaluations recorded with commits of a Lab
    (``refs``: a list of refs, default every commit with one), one group per commit
    (``lab.evaluations(refs)``: recall from the manifest, QPS measured at commit).
    """
    if hasattr(results, "evaluations") and hasattr(results, "commit"):  # a Lab
        refs, ax = (None, ax) if ax is None or hasattr(ax, "plot") else (ax, None)
        results, by = results.evaluations(refs), "run" if by == "library" else by
    frame = as_frame(results, [x, y])
    fig, ax = _axes(ax)
    label_rows: list[tuple[pd.DataFrame, str]] = []
    for g, (group, group_rows, builds) in enumerate(_builds(frame, by)):
        colour = f"C{g % 10}"
        if pareto and len(group_rows):
            front = pareto_frontier(group_rows, x, y)
            ax.plot(
                front[x].to_numpy(),
                front[y].to_numpy(),
                "-",
                linewidth=7,
                alpha=0.18,
                color=colour,
                solid_capstyle="round",
                label=f"{group} Pareto front".strip(),
            )
        for build, b, rows in builds:
            ax.plot(
                rows[x].to_numpy(),
                rows[y].to_numpy(),
                "-",
                marker=_MARKERS[b % len(_MARKERS)],
                markersize=5,
                linewidth=1.2,
                color=colour,
                label=f"{group} {build}".strip() or "measurements",
            )
            label_rows.append((rows, colour))
    ax.set_xlabel(_x_label(frame, x))
    if y == "qps":
        threads = _threads_text(frame)
        ax.set_ylabel("queries per second" + (f" (batch, {threads})" if threads else ""))
    else:
        ax.set_ylabel(y)
    if (frame[y] > 0).any():
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    if "ef_search" in frame.columns:
        _label_points(ax, label_rows, x, y, "ef_search")
    what = f"{_short(x)} vs " + ("queries per second" if y == "qps" else y)
    ax.set_title(title if title is not None else _title(results, frame, what))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    legend_title = "numbers at points: ef_search" if "ef_search" in frame.columns else None
    ax.legend(fontsize="small", loc="lower left", title=legend_title, title_fontsize="small")
    return fig, ax


def _short(x: str) -> str:
    return "recall" if x in ("recall", "recall_distance") else x


def plot_latency(
    results: Any,
    ax: Any = None,
    by: str | Sequence[str] | None = "library",
    x: str = "recall",
    percentiles: Sequence[str] = ("p50_ms", "p95_ms", "p99_ms"),
    title: str | None = None,
) -> tuple[Any, Any]:
    """Single-query latency percentiles against ``x`` (default recall): one line per
    build and percentile, joining the build's measurements in ``ef_search`` order
    (never points of different builds). Colour tells the ``by`` group, the marker the
    build (as in :func:`plot_recall_qps`), the line style the percentile (p50 solid, p95
    dashed, p99 dotted); lines are labelled ``"<group> M=<M> p99"``. The two legends
    (builds, percentiles) sit outside the axes, so they cover no point. Latency in ms on
    a log axis with plain tick labels."""
    from matplotlib.lines import Line2D

    frame = as_frame(results, [x, *percentiles])
    own = ax is None
    fig, ax = _axes(ax, figsize=(8.8, 4.6))
    if own:  # room on the right for the legends
        fig.subplots_adjust(left=0.09, right=0.8, top=0.86, bottom=0.12)
    styles = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
    spare = ["-.", (0, (5, 1, 1, 1)), (0, (1, 3))]

    def style(i: int, col: str) -> Any:
        return styles.get(col, spare[i % len(spare)])

    handles = []
    for g, (group, _, builds) in enumerate(_builds(frame, by)):
        colour = f"C{g % 10}"
        for build, b, rows in builds:
            marker = _MARKERS[b % len(_MARKERS)]
            name = f"{group} {build}".strip() or "measurements"
            for i, col in enumerate(percentiles):
                ax.plot(
                    rows[x].to_numpy(),
                    rows[col].to_numpy(),
                    linestyle=style(i, col),
                    marker=marker,
                    markersize=4,
                    linewidth=1.1,
                    color=colour,
                    label=f"{name} {col.removesuffix('_ms')}",
                )
            handles.append(Line2D([], [], color=colour, marker=marker, markersize=4, label=name))
    ax.set_xlabel(_x_label(frame, x))
    ax.set_ylabel("latency of one query (ms)")
    if (frame[list(percentiles)] > 0).any().any():
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    what = f"single-query latency vs {_short(x)}"
    ax.set_title(title if title is not None else _title(results, frame, what))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    kinds = [
        Line2D(
            [],
            [],
            color="#444444",
            linestyle=style(i, col),
            label=col.removesuffix("_ms"),
        )
        for i, col in enumerate(percentiles)
    ]
    # the builds' legend is added as an artist so that the percentiles' can follow it;
    # an added artist is clipped to the axes, and this one sits outside them
    ax.add_artist(_legend_right(ax, handles, "build", "upper left", 1.0)).set_clip_on(False)
    _legend_right(ax, kinds, "percentile", "lower left", 0.0)
    return fig, ax


def _legend_right(ax: Any, handles: list, title: str, loc: str, y: float) -> Any:
    """A legend just right of the axes, its ``loc`` corner at height ``y`` (axes units)."""
    return ax.legend(
        handles=handles,
        fontsize="small",
        loc=loc,
        bbox_to_anchor=(1.02, y),
        title=title,
        title_fontsize="small",
    )


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


def plot_storage(lab: Any, ax: Any = None, unit: str | None = None) -> tuple[Any, Any]:
    """Stacked bars per commit: bytes shared with the parent (grey) under the new bytes
    the commit wrote (blue), from ``lab.log()`` (a Lab's current branch, or a log frame).
    ``unit`` (B, KiB, MiB, GiB, TiB) defaults to the one ``fmt_bytes`` writes the largest
    commit in, as every display does."""
    df = storage_frame(lab)
    if unit is None:
        unit, scale = byte_unit(int(df["bytes"].max()) if len(df) else 0)
    else:
        scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}[unit]
    fig, ax = _axes(ax)
    if "#" in df.columns:
        gens = np.array([f"#{n}" for n in df["#"]])
    else:
        gens = df["generation"].astype(str).to_numpy()
    shared = df["shared_bytes"].to_numpy() / scale
    new = df["new_bytes"].to_numpy() / scale
    ax.bar(gens, shared, color=COLORS["shared"], label="shared with parent")
    ax.bar(gens, new, bottom=shared, color=COLORS["new"], label="new in this commit")
    ax.set_xlabel("commit" if "#" in df.columns else "generation")
    ax.set_ylabel(f"logical bytes reachable ({unit})")
    ax.set_title("storage per commit: what each adds to its parent")
    top = float((shared + new).max()) if len(df) else 0.0
    if top > 0:
        ax.set_ylim(0, top * 1.2)  # headroom: the legend sits above the bars
    ax.legend(fontsize="small", loc="upper left", ncol=2)
    return fig, ax


def recall_by_generation(
    lab: Any,
    dataset: Any,
    k: int = 10,
    id_to_row: IdToRow = None,
    ef_search: int | None = None,
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
                "recall": engine_recall(engine, dataset, k, ef_search, id_to_row),
            }
        )
    return pd.DataFrame(rows, columns=["generation", "entries", "recall"])


def plot_recall_drift(
    lab: Any,
    dataset: Any,
    k: int = 10,
    ax: Any = None,
    id_to_row: IdToRow = None,
    ef_search: int | None = None,
) -> tuple[Any, Any]:
    """recall@k per generation against ``dataset``'s ground truth (see
    :func:`recall_by_generation`), a line over generation numbers on a 0..1 axis."""
    df = recall_by_generation(lab, dataset, k, id_to_row, ef_search)
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
