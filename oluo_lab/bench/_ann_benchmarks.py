"""Benchmark results in ann-benchmarks' result layout, written so its own tools
(``plot.py``, ``data_export.py``, ``create_website.py``, ``plotting/utils.py``) read
them right, and read back.

ann-benchmarks' runner writes one HDF5 file per run at
``results/<dataset>/<count>/<algorithm>[-batch]/<parameters>.hdf5`` with these attributes:
``build_time`` (s), ``index_size`` (kB: its ``get_memory_usage`` is RSS / 1024),
``algo``, ``dataset``, ``count``, ``distance``, ``name``, ``batch_mode``,
``best_search_time`` (seconds per query, best of ``run_count`` runs; its QPS is
``1 / best_search_time``), ``candidates`` (mean number of ids returned per query),
``run_count`` and ``expect_extra``; and these datasets: ``times`` (seconds per query),
``neighbors`` (int32, ``-1`` padding) and ``distances`` (float32, ``+inf`` padding) in
its own units: angular ``1 - cos``, euclidean plain (not squared) L2. Its plots
recompute recall from ``distances`` and the dataset file's ``distances``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import OluoError

if TYPE_CHECKING:
    from .results import BenchResults

__all__ = ["ASIDE_DIR", "RESULTS_DIR", "MissingAnswersError", "read", "write"]

#: where plottable runs go (the only tree ann-benchmarks' tools walk)
RESULTS_DIR = "results"
#: where ``without_answers="aside"`` puts rows without kept answers
ASIDE_DIR = "without-answers"
#: marks files written by this module (older exports stored squared l2 distances)
FORMAT = "oluo_lab.bench.ann-benchmarks/2"

_DISTANCE = {"cosine": "angular", "l2": "euclidean", "ip": "dot"}
_WITHOUT_ANSWERS = ("error", "aside")


class MissingAnswersError(OluoError, ValueError):
    """Rows lack the kept answers (returned ids and distances) that ann-benchmarks'
    plots need; :attr:`rows` names them."""

    def __init__(self, rows: list[str], total: int) -> None:
        self.rows = rows
        shown = "; ".join(rows[:5]) + ("; ..." if len(rows) > 5 else "")
        super().__init__(
            f"{len(rows)} of {total} rows have no kept answers (returned ids and "
            f"distances), without which ann-benchmarks' plots cannot read a run: {shown}. "
            "Measure with sweep(keep_answers=True) for plottable runs, pass "
            f"without_answers='aside' to write attribute-only files under {ASIDE_DIR}/ "
            "(which ann-benchmarks' tools do not read), or use to_csv() for the table."
        )


def _label(row: pd.Series) -> str:
    return (
        f"{row['library']} {row['index']} M={row['M']} "
        f"ef_construction={row['ef_construction']} ef_search={row['ef_search']}"
    )


def _dataset_dir(row: pd.Series, dataset: dict[str, Any]) -> str:
    """The dataset a row belongs to: rows measured under another metric than the
    dataset's (``sweep(metric=[...])``) are another ann-benchmarks dataset, named as
    :func:`oluo_lab.bench.with_metric` names it."""
    name = str(dataset.get("name", "dataset"))
    if dataset.get("metric", row["metric"]) != row["metric"]:
        name = f"{name}-{row['metric']}"
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"dataset name {name!r} cannot be a result directory name")
    return name


def _paths(results: BenchResults, directory: Path) -> list[tuple[Path, str, str, dict]]:
    out = []
    seen: dict[Path, str] = {}
    for i, row in results.frame.iterrows():
        name = _dataset_dir(row, results.dataset)
        algo = f"oluo-bench-{row['library']}-{row['index']}"
        args = {
            "M": int(row["M"]),
            "ef_construction": int(row["ef_construction"]),
            "ef_search": int(row["ef_search"]),
        }
        # ann-benchmarks' build_result_filepath: the parameters' JSON, non-word runs as "_"
        stem = re.sub(r"\W+", "_", json.dumps(args, sort_keys=True)).strip("_")
        top = RESULTS_DIR if int(i) in results.answers else ASIDE_DIR
        fn = directory / top / name / str(int(row["k"])) / f"{algo}-batch" / f"{stem}.hdf5"
        if fn in seen:
            raise ValueError(
                f"rows '{seen[fn]}' and '{_label(row)}' (run {row['run']!r}) would both be "
                f"written to {fn.relative_to(directory)}: export them separately"
            )
        seen[fn] = f"{_label(row)} (run {row['run']!r})"
        out.append((fn, name, algo, args))
    return out


def _plain(distances: np.ndarray, metric: str) -> np.ndarray:
    """oluo_lab's distances in ann-benchmarks' units (l2: the root of the squared)."""
    d = np.asarray(distances, dtype=np.float64)
    if metric == "l2":
        d = np.sqrt(np.maximum(d, 0.0))
    return d.astype(np.float32)


def write(results: BenchResults, directory: Path, without_answers: str = "error") -> list[Path]:
    """Write ``results`` under ``directory`` (see
    :meth:`~oluo_lab.bench.BenchResults.export_ann_benchmarks`); nothing is written when
    a check fails."""
    import h5py

    if without_answers not in _WITHOUT_ANSWERS:
        raise ValueError(
            f"without_answers={without_answers!r}; expected one of {list(_WITHOUT_ANSWERS)}"
        )
    frame = results.frame
    missing = [_label(row) for i, row in frame.iterrows() if int(i) not in results.answers]
    if missing and without_answers == "error":
        raise MissingAnswersError(missing, len(frame))
    nq = results.dataset.get("n_queries")
    for i, (nb, dist, _) in results.answers.items():
        k = int(frame.loc[i, "k"])
        if nb.ndim != 2 or nb.shape[1] != k or nb.shape != dist.shape or nq not in (None, len(nb)):
            raise ValueError(
                f"row {i} ({_label(frame.loc[i])}): answers {nb.shape} / {dist.shape} "
                f"do not match k={k} and {nq} queries"
            )
    paths = _paths(results, directory)
    columns = list(frame.columns)  # COLUMNS, then extras such as qps_cpu and runs
    dataset_json = json.dumps(results.dataset, sort_keys=True)
    env_json = json.dumps(results.env, sort_keys=True)
    written = []
    for (i, row), (fn, name, algo, args) in zip(frame.iterrows(), paths, strict=True):
        fn.parent.mkdir(parents=True, exist_ok=True)
        answers = results.answers.get(int(i))
        qps = float(row["qps"])
        per_query = 1.0 / qps if qps > 0 else float("inf")
        runs = row["runs"] if "runs" in frame.columns else None
        with h5py.File(fn, "w") as f:
            f.attrs["build_time"] = float(row["build_s"])
            f.attrs["index_size"] = int(row["index_bytes"]) / 1024.0
            f.attrs["algo"] = algo
            f.attrs["dataset"] = name
            f.attrs["count"] = int(row["k"])
            f.attrs["distance"] = _DISTANCE.get(row["metric"], row["metric"])
            f.attrs["name"] = f"{algo}({json.dumps(args, sort_keys=True)})"
            f.attrs["batch_mode"] = True
            f.attrs["best_search_time"] = per_query
            f.attrs["run_count"] = int(runs) if runs is not None and runs == runs else 1
            f.attrs["expect_extra"] = False
            f.attrs["oluo_format"] = FORMAT
            f.attrs["oluo_row"] = int(i)
            f.attrs["oluo_answers_kept"] = answers is not None
            f.attrs["oluo_dataset"] = dataset_json
            f.attrs["oluo_environment"] = env_json
            f.attrs["oluo_columns"] = json.dumps(columns)
            for c in columns:
                v = row[c]
                if isinstance(v, str):
                    f.attrs[f"oluo_{c}"] = v
                elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                    f.attrs[f"oluo_{c}"] = int(v)
                else:
                    f.attrs[f"oluo_{c}"] = float(v)
            if answers is not None:
                nb, dist, _ = answers
                nb = np.asarray(nb)
                f.attrs["candidates"] = float((nb >= 0).sum(axis=1).mean())
                f.create_dataset("times", data=np.full(nb.shape[0], per_query, np.float32))
                f.create_dataset("neighbors", data=nb.astype(np.int32))
                f.create_dataset("distances", data=_plain(dist, row["metric"]))
        written.append(fn)
    return written


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _files(directory: Path, dataset: str | None) -> Iterable[Path]:
    for top in (RESULTS_DIR, ASIDE_DIR):
        root = directory / top
        if dataset is not None:
            root = root / dataset
        yield from sorted(root.rglob("*.hdf5"))


def read(
    directory: Path, dataset: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any], dict[int, tuple]]:
    """(frame, dataset, environment, answers) of the files :func:`write` put under
    ``directory`` (only those of ``results/<dataset>`` when given). Files of other
    algorithms (ann-benchmarks' own runs next to these) are skipped."""
    import h5py

    found = []
    infos: dict[str, str] = {}
    for fn in _files(directory, dataset):
        with h5py.File(fn, "r") as f:
            names = f.attrs.get("oluo_columns")
            if names is None:
                continue
            columns = json.loads(_text(names))
            row = {c: _text(f.attrs[f"oluo_{c}"]) for c in columns}
            current = _text(f.attrs.get("oluo_format", "")) == FORMAT
            info = _text(f.attrs.get("oluo_dataset", ""))
            if not info:  # older exports recorded only the dataset's name
                info = json.dumps({"name": _text(f.attrs["dataset"])}, sort_keys=True)
            infos.setdefault(info, _text(f.attrs["dataset"]))
            env = json.loads(_text(f.attrs.get("oluo_environment", "{}")))
            answer = None
            if "neighbors" in f:
                nb = f["neighbors"][:].astype(np.int64)
                dist = f["distances"][:].astype(np.float32)
                if current and row["metric"] == "l2":  # back to oluo_lab's squared l2
                    dist = np.square(dist, dtype=np.float32)
                answer = (nb, dist, float(f.attrs["best_search_time"]) * nb.shape[0])
            order = int(f.attrs.get("oluo_row", len(found)))
            found.append((order, str(fn), columns, row, env, answer))
    if not found:
        where = directory if dataset is None else directory / RESULTS_DIR / dataset
        raise FileNotFoundError(f"no result files written by export_ann_benchmarks under {where}")
    if len(infos) > 1:
        raise ValueError(
            f"{directory} holds results of several exports (datasets "
            f"{sorted(set(infos.values()))}): choose one with dataset=..."
        )
    found.sort(key=lambda t: (t[0], t[1]))
    columns = list(dict.fromkeys(c for _, _, cols, _, _, _ in found for c in cols))
    frame = pd.DataFrame([row for _, _, _, row, _, _ in found], columns=columns)
    answers = {n: t[5] for n, t in enumerate(found) if t[5] is not None}
    return frame, json.loads(next(iter(infos))), found[0][4], answers
