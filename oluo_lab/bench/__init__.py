"""oluo_lab.bench: a recall/latency harness comparable with ann-benchmarks.

Measures oluo_lab's engine and its peers (raw faiss, hnswlib, usearch; the ``peers``
extra) with the same code on the same data in the same process: recall@k by id
intersection and by ann-benchmarks' distance rule, batch QPS (best of N after a
warm-up), single-query latency percentiles, build time, index size, threads.

Sits on top of the other layers; nothing below imports it.
"""

from ..metrics import EPSILON, distances_of, recall_distance, recall_ids
from ._ann_benchmarks import MissingAnswersError
from .datasets import (
    GroundTruthCache,
    dataset_cid,
    from_arrays,
    glove_full,
    glove_sample,
    ground_truth,
    load_hdf5,
    with_metric,
)
from .results import (
    COLUMNS,
    BenchResults,
    commit_results,
    cpu_model,
    environment,
    frontier_at,
    pareto_frontier,
    qps_at_recall,
    ratios_at_recall,
)
from .runner import (
    ADAPTERS,
    Adapter,
    BruteForceAdapter,
    FaissHNSWAdapter,
    HnswlibAdapter,
    Measurement,
    OluoAdapter,
    UsearchAdapter,
    make_adapter,
    measure,
)
from .sweep import DEFAULT_LIBRARIES, sweep

__all__ = [
    "ADAPTERS",
    "COLUMNS",
    "DEFAULT_LIBRARIES",
    "EPSILON",
    "Adapter",
    "BenchResults",
    "BruteForceAdapter",
    "FaissHNSWAdapter",
    "GroundTruthCache",
    "HnswlibAdapter",
    "Measurement",
    "MissingAnswersError",
    "OluoAdapter",
    "UsearchAdapter",
    "commit_results",
    "cpu_model",
    "dataset_cid",
    "distances_of",
    "environment",
    "from_arrays",
    "frontier_at",
    "glove_full",
    "glove_sample",
    "ground_truth",
    "load_hdf5",
    "make_adapter",
    "measure",
    "pareto_frontier",
    "qps_at_recall",
    "ratios_at_recall",
    "recall_distance",
    "recall_ids",
    "sweep",
    "with_metric",
]
