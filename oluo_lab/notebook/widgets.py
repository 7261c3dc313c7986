"""ipywidgets explorers for a live kernel, each with a static HTML fallback.

Every explorer keeps its ipywidgets container in ``.widget``, shows it through
``_repr_mimebundle_`` (with a ``text/html`` fallback for viewers without a kernel, such
as GitHub) and remembers the HTML it last rendered in ``.last_html``, so it can be
tested without a browser: set a control's ``.value`` and compare.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._html import (
    COLORS,
    Raw,
    details,
    escape,
    fmt_bytes,
    fmt_num,
    kv_table,
    table,
)
from ..bench.results import COLUMNS
from .plots import as_frame, pareto_frontier, plot_recall_qps, storage_frame

__all__ = ["BenchExplorer", "SearchExplorer", "SnapshotBrowser", "bench_html"]

_NO_KERNEL = "<p><em>Static view: the interactive controls need a live Jupyter kernel.</em></p>"


class _Explorer:
    widget: Any
    last_html: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/html"] = self._repr_html_()
        return bundle

    def _repr_html_(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


# ---------------------------------------------------------------------- SnapshotBrowser


def _growth_svg(df: pd.DataFrame, selected: int | None, width: int = 360, height: int = 120) -> Raw:
    """Vertical stacked bars (shared grey, new blue) per commit (``#n``), oldest left; the
    selected commit is outlined. Numbers are in each bar's ``<title>``."""
    n = len(df)
    if n == 0:
        return Raw("")
    top = max(int(df["bytes"].max()), 1)
    slot = width / n
    bar_w = max(1.0, slot * 0.7)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" '
        f'viewBox="0 0 {width} {height + 14}" role="img" '
        f'aria-label="bytes per commit, shared and new">'
    ]
    for i, rec in enumerate(df.to_dict(orient="records")):
        seq = rec["#"]
        x = i * slot + (slot - bar_w) / 2
        shared_h = height * int(rec["shared_bytes"]) / top
        new_h = height * int(rec["new_bytes"]) / top
        y_new = height - shared_h - new_h
        title = (
            f"#{seq} (generation {rec['generation']}): shared "
            f"{fmt_bytes(int(rec['shared_bytes']))}, new {fmt_bytes(int(rec['new_bytes']))}"
        )
        stroke = ' stroke="#000000" stroke-width="1.5"' if seq == selected else ""
        out.append(f"<g><title>{escape(title)}</title>")
        out.append(
            f'<rect x="{x:.2f}" y="{height - shared_h:.2f}" width="{bar_w:.2f}" '
            f'height="{shared_h:.2f}" fill="{COLORS["shared"]}"{stroke}/>'
        )
        out.append(
            f'<rect x="{x:.2f}" y="{y_new:.2f}" width="{bar_w:.2f}" height="{new_h:.2f}" '
            f'fill="{COLORS["new"]}"{stroke}/>'
        )
        out.append(
            f'<text x="{x + bar_w / 2:.2f}" y="{height + 12}" font-size="10" '
            f'text-anchor="middle">#{seq}</text></g>'
        )
    out.append("</svg>")
    return Raw("".join(out))


class SnapshotBrowser(_Explorer):
    """Pick a commit of ``lab``'s current branch -> its manifest, stats, diff to its
    parent and the storage growth chart. ``semantic=True`` adds the answer-level diff
    (loads both engines: slower). Controls: ``.selector`` (a Dropdown of commit numbers,
    ``#n``)."""

    def __init__(self, lab: Any, semantic: bool = False, k: int = 10) -> None:
        import ipywidgets as widgets

        self.lab = lab
        self.semantic = semantic
        self.k = k
        self._snaps = {s.seq: s for s in lab.history()}
        self._storage = storage_frame(lab.log(lab.current_branch)) if self._snaps else None
        gens = sorted(self._snaps)
        options = [(self._label(g), g) for g in gens]
        self.selector = widgets.Dropdown(
            options=options, value=gens[-1] if gens else None, description="commit"
        )
        self.view = widgets.HTML()
        self.widget = widgets.VBox([self.selector, self.view])
        self.selector.observe(lambda change: self.render(change["new"]), names="value")
        self.last_html = ""
        self.render(self.selector.value)

    def _label(self, g: int) -> str:
        note = self._snaps[g].note
        return f"#{g}" + (f" — {note}" if note else "")

    def page(self, generation: int | None) -> str:
        """The HTML shown for commit ``#generation`` (deterministic)."""
        if generation is None:
            return f"<p>Lab {escape(repr(self.lab.name))} is empty.</p>"
        snap = self._snaps[generation]
        row = self._storage[self._storage["#"] == generation].iloc[0]
        parts = [Raw(snap._repr_html_())]
        parts.append(
            kv_table(
                "storage",
                [
                    ("bytes reachable", fmt_bytes(int(row["bytes"]))),
                    ("shared with parent", fmt_bytes(int(row["shared_bytes"]))),
                    ("new in this commit", fmt_bytes(int(row["new_bytes"]))),
                ],
            )
        )
        parent_gen = next(
            (g for g, s in self._snaps.items() if snap.parent is not None and s.cid == snap.parent),
            None,
        )
        if parent_gen is None:
            parts.append(Raw("<p>No parent commit to diff against.</p>"))
        else:
            diff = self.lab.diff(parent_gen, generation, k=self.k, semantic=self.semantic)
            parts.append(Raw(f"<h4>diff to parent (#{parent_gen})</h4>"))
            parts.append(Raw(diff._repr_html_()))
        parts.append(Raw("<h4>storage growth (grey shared, blue new)</h4>"))
        parts.append(_growth_svg(self._storage, generation))
        return "".join(parts)

    def render(self, generation: int | None) -> str:
        html = self.page(generation)
        self.view.value = html
        self.last_html = html
        return html

    def __repr__(self) -> str:
        return f"SnapshotBrowser({self.lab!r}, commit=#{self.selector.value})"

    def _repr_html_(self) -> str:
        return self.page(self.selector.value) + _NO_KERNEL


# ---------------------------------------------------------------------- SearchExplorer


class SearchExplorer(_Explorer):
    """Type a query -> live results table. A query is a word or id turned into a vector by,
    in order: ``lookup`` (mapping or callable text -> vector), the ``dataset``'s base and
    query words, then the engine's own entries (the stored vector of that id).

    Controls: ``.query`` (Text; searches on Enter), ``.k`` and ``.ef_search`` (IntSliders).
    ``.results`` holds the last SearchResults (None after an unknown query).
    """

    def __init__(
        self,
        engine: Any,
        dataset: Any = None,
        lookup: Mapping[str, Any] | Callable[[str], Any] | None = None,
        *,
        k: int = 10,
        ef_search: int | None = None,
        query: str = "",
    ) -> None:
        import ipywidgets as widgets

        self.engine = engine
        self.dataset = dataset
        self.lookup = lookup
        self._words: dict[str, np.ndarray] | None = None
        self._own: dict[Any, int] | None = None
        self._own_vecs: np.ndarray | None = None
        ef0 = int(ef_search if ef_search is not None else engine.config.ef_search)
        self.query = widgets.Text(value=query, description="query", continuous_update=False)
        self.k = widgets.IntSlider(value=k, min=1, max=max(100, k), description="k")
        self.ef_search = widgets.IntSlider(
            value=ef0, min=1, max=max(512, ef0), description="ef_search"
        )
        self.view = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.query, self.k, self.ef_search]), self.view])
        for control in (self.query, self.k, self.ef_search):
            control.observe(lambda _change: self.render(), names="value")
        self.results: Any = None
        self.last_html = ""
        self.render()

    def vector(self, text: str) -> np.ndarray | None:
        """The query vector for ``text``, or None when nothing knows it."""
        if self.lookup is not None:
            vec = self.lookup(text) if callable(self.lookup) else self.lookup.get(text)
            if vec is not None:
                return np.asarray(vec)
        if self.dataset is not None:
            if self._words is None:
                self._words = {}
                for words, arr in (
                    (self.dataset.query_words, self.dataset.queries),
                    (self.dataset.base_words, self.dataset.base),
                ):
                    if words is not None:
                        self._words.update({str(w): arr[i] for i, w in enumerate(words)})
            if text in self._words:
                return self._words[text]
        if self._own is None:
            _, ids, vecs = self.engine.live_vectors()
            self._own = {t: i for i, t in enumerate(ids.tolist())}
            self._own_vecs = vecs
        for candidate in (text, int(text) if text.lstrip("-").isdigit() else None):
            if candidate is not None and candidate in self._own:
                return self._own_vecs[self._own[candidate]]
        return None

    def page(self) -> str:
        text = self.query.value.strip()
        if not text:
            self.results = None
            return "<p>Type a query (a word or an id) and press Enter.</p>"
        vec = self.vector(text)
        if vec is None:
            self.results = None
            return f"<p>Unknown query {escape(repr(text))}: no vector for it.</p>"
        ef_search = self.ef_search.value
        self.results = self.engine.search(vec, k=self.k.value, ef_search=ef_search)
        head = kv_table(None, [("query", text), ("k", self.k.value), ("ef_search", ef_search)])
        return head + self.results._repr_html_()

    def render(self) -> str:
        html = self.page()
        self.view.value = html
        self.last_html = html
        return html

    def __repr__(self) -> str:
        return f"SearchExplorer({self.engine!r}, query={self.query.value!r})"

    def _repr_html_(self) -> str:
        return self.page() + _NO_KERNEL


# ---------------------------------------------------------------------- BenchExplorer

FILTER_COLUMNS = ("library", "index", "metric", "M", "ef_construction", "k", "threads", "run")
_FRONTIER_COLUMNS = (
    "library",
    "index",
    "M",
    "ef_construction",
    "ef_search",
    "recall",
    "qps",
    "p50_ms",
    "p99_ms",
)


#: The columns of the "all rows" table of :func:`bench_html`: few enough to fit a page.
_ROW_COLUMNS = tuple(
    c for c in COLUMNS if c not in ("metric", "k", "memory_bytes", "threads", "run")
)


def _svg_scatter(
    frame: pd.DataFrame, by: str, x: str, y: str, width: int = 360, height: int = 220
) -> Raw:
    """A small inline SVG of y (log) against x, one colour per group, frontier lines."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    data = frame.dropna(subset=[x, y])
    data = data[data[y] > 0]
    if data.empty:
        return Raw("")
    x0, x1 = float(data[x].min()), float(data[x].max())
    ly = np.log10(data[y].to_numpy(dtype=float))
    y0, y1 = float(ly.min()), float(ly.max())
    pad = 24

    def px(v: float) -> float:
        return pad + (width - 2 * pad) * ((v - x0) / (x1 - x0) if x1 > x0 else 0.5)

    def py(v: float) -> float:
        lv = np.log10(v)
        return height - pad - (height - 2 * pad) * ((lv - y0) / (y1 - y0) if y1 > y0 else 0.5)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(y)} against {escape(x)}">',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
        'fill="none" stroke="#cccccc"/>',
        f'<text x="{width / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">'
        f"{escape(x)} {fmt_num(x0)}..{fmt_num(x1)}</text>",
        f'<text x="4" y="{pad - 8}" font-size="10">{escape(y)} (log) '
        f"{fmt_num(10**y0)}..{fmt_num(10**y1)}</text>",
    ]
    groups = data.groupby(by, sort=True) if by in data.columns else [("all", data)]
    for i, (label, group) in enumerate(groups):
        colour = palette[i % len(palette)]
        front = pareto_frontier(group, x, y)
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(front[x], front[y], strict=True))
        out.append(f"<g><title>{escape(label)}</title>")
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for a, b in zip(group[x], group[y], strict=True):
            out.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{colour}"/>')
        out.append(
            f'<text x="{width - pad + 2}" y="{pad + 12 * (i + 1)}" font-size="9" '
            f'fill="{colour}" text-anchor="end">{escape(label)}</text></g>'
        )
    out.append("</svg>")
    return Raw("".join(out))


def bench_html(
    results: Any, by: str = "library", x: str = "recall", y: str = "qps", rows_shown: int = 200
) -> str:
    """Deterministic HTML of benchmark results: per-group summary, Pareto frontier
    table, a small SVG chart, and all rows in ``<details>`` (first ``rows_shown``)."""
    frame = as_frame(results, [x, y])
    groups = frame.groupby(by, sort=True) if by in frame.columns else [("all", frame)]
    summary = []
    front_rows = []
    fcols = [c for c in _FRONTIER_COLUMNS if c in frame.columns]
    for label, group in groups:
        front = pareto_frontier(group, x, y)
        good = group[group[x] >= 0.9]
        summary.append(
            [
                label,
                len(group),
                fmt_num(float(group[x].max())),
                fmt_num(float(group[y].max())),
                fmt_num(float(good[y].max())) if len(good) else "—",
            ]
        )
        front_rows += [
            [fmt_num(v) if isinstance(v, float) else v for v in r]
            for r in front[fcols].itertuples(index=False)
        ]
    out = table(
        f"benchmark results: {len(frame)} rows",
        [by, "rows", f"best {x}", f"best {y}", f"best {y} at {x} >= 0.9"],
        summary,
    )
    out += table("Pareto frontier (per group)", fcols, front_rows)
    out += _svg_scatter(frame, by, x, y)
    shown = frame.head(rows_shown)
    cols = [c for c in _ROW_COLUMNS if c in frame.columns]
    all_rows = [
        [
            fmt_bytes(v) if c.endswith("_bytes") else fmt_num(v) if isinstance(v, float) else v
            for c, v in zip(cols, r, strict=True)
        ]
        for r in shown[cols].itertuples(index=False)
    ]
    more = "" if len(frame) <= rows_shown else f" (first {rows_shown})"
    summary = f"all {len(frame)} rows{more}, main columns (every column: .frame)"
    out += details(summary, table(None, cols, all_rows))
    return Raw(out)


class BenchExplorer(_Explorer):
    """Choose parameters/runs -> the recall vs QPS plot (with Pareto frontiers) updates.

    ``results``: a DataFrame with the benchmark columns or an object with ``.frame``.
    Controls: ``.filters`` (column -> SelectMultiple, for each of ``FILTER_COLUMNS`` with
    more than one value; all selected at first), ``.by`` (Dropdown: colour grouping) and
    ``.pareto`` (Checkbox). ``.selected`` is the filtered frame, ``.image`` the PNG.
    """

    def __init__(
        self, results: Any, x: str = "recall", y: str = "qps", by: str = "library"
    ) -> None:
        import ipywidgets as widgets

        self.frame = as_frame(results, [x, y]).reset_index(drop=True)
        self.x, self.y = x, y
        self.filters: dict[str, Any] = {}
        for col in FILTER_COLUMNS:
            if col not in self.frame.columns:
                continue
            values = sorted(self.frame[col].dropna().unique().tolist(), key=str)
            if len(values) > 1:
                self.filters[col] = widgets.SelectMultiple(
                    options=[(str(v), v) for v in values],
                    value=tuple(values),
                    description=col,
                    rows=min(6, len(values)),
                )
        by_options = [c for c in FILTER_COLUMNS if c in self.frame.columns] or ["library"]
        self.by = widgets.Dropdown(
            options=by_options,
            value=by if by in by_options else by_options[0],
            description="colour by",
        )
        self.pareto = widgets.Checkbox(value=True, description="Pareto frontier")
        self.image = widgets.Image(format="png")
        self.view = widgets.HTML()
        controls = [*self.filters.values(), self.by, self.pareto]
        self.widget = widgets.VBox([widgets.HBox(controls), self.image, self.view])
        for control in controls:
            control.observe(lambda _change: self.render(), names="value")
        self.selected = self.frame
        self.last_html = ""
        self.render()

    def _select(self) -> pd.DataFrame:
        mask = np.ones(len(self.frame), bool)
        for col, control in self.filters.items():
            mask &= self.frame[col].isin(list(control.value)).to_numpy()
        return self.frame[mask]

    def figure(self, frame: pd.DataFrame):
        """A matplotlib Figure (not registered with pyplot) of ``frame``."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot()
        if len(frame):
            plot_recall_qps(
                frame, ax=ax, pareto=self.pareto.value, by=self.by.value, x=self.x, y=self.y
            )
        else:
            ax.set_title("no rows selected")
        return fig

    def render(self) -> str:
        self.selected = self._select()
        fig = self.figure(self.selected)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
        self.image.value = buf.getvalue()
        html = (
            bench_html(self.selected, by=self.by.value, x=self.x, y=self.y)
            if len(self.selected)
            else "<p>No rows selected.</p>"
        )
        self.view.value = html
        self.last_html = html
        return html

    def __repr__(self) -> str:
        return f"BenchExplorer(rows={len(self.frame)}, selected={len(self.selected)})"

    def _repr_html_(self) -> str:
        return bench_html(self.frame, by=self.by.value, x=self.x, y=self.y) + _NO_KERNEL
