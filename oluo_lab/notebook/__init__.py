"""The notebook layer: plots, ipywidgets explorers and recall metrics.

Sits on top of ``cas``, ``engine``, ``snapshot`` and ``datasets``; none of them import
it. matplotlib and ipywidgets are imported when a plot or widget is made.
"""

from .metrics import (
    answer_overlap,
    engine_recall,
    ids_to_rows,
    recall_at_k,
    resolve_engine,
)
from .plots import (
    as_frame,
    pareto_frontier,
    plot_latency,
    plot_recall_drift,
    plot_recall_qps,
    plot_storage,
    recall_by_generation,
    storage_frame,
)
from .widgets import BenchExplorer, SearchExplorer, SnapshotBrowser, bench_html

__all__ = [
    "BenchExplorer",
    "SearchExplorer",
    "SnapshotBrowser",
    "answer_overlap",
    "as_frame",
    "bench_html",
    "engine_recall",
    "ids_to_rows",
    "pareto_frontier",
    "plot_latency",
    "plot_recall_drift",
    "plot_recall_qps",
    "plot_storage",
    "recall_at_k",
    "recall_by_generation",
    "resolve_engine",
    "storage_frame",
]
