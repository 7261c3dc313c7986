"""``Lab.sweep``: one commit per grid point, each on a branch named from its params.

Snapshot layer. The parent process expands the grid, names each point's branch, stores
the evaluation queries once, and skips points already committed with the same params
and queries (so a re-executed notebook builds only what is missing). Each remaining
point is a task :func:`run_point` that an executor may run anywhere the lab is
reachable (a shared directory, or an object store): its arguments are plain data (the
lab's path or URL and store options, the point, the queries CID, the faiss thread
count), never an engine; it opens the lab, calls ``build(**point)`` and commits the
engine with its params and evaluation, with the task's faiss threads. With a
``dask.distributed`` client as the executor the tasks run on its workers (each worker
process starts with one OpenMP thread; the task sets its own count) and are submitted
with ``pure=False``, so Dask never reuses an earlier result of an identical task. Commits of different points go to different branches, so
they never conflict, and the same point gives the same commit id whichever process ran
it (the commit id depends only on the build, its params and the evaluation).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import progress_bar
from ..cas import CID, ingest
from ..engine._faiss_native import faiss_threads
from .branches import check_branch_name
from .evaluation import DEFAULT_EF_SEARCH, EvalSpec, as_spec, encode_queries, load_queries
from .manifest import canonical_value

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["SweepTask", "branch_for", "expand_grid", "run_point", "run_sweep"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]")


def expand_grid(grid: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points of ``grid``: every combination of a mapping's values (first key varies
    slowest), or a list of points as given. Values are canonicalised like params."""
    if isinstance(grid, Mapping):
        names = list(grid)
        values = []
        for name in names:
            v = grid[name]
            values.append(list(v) if isinstance(v, list | tuple | range) else [v])
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    elif isinstance(grid, list):
        points = [dict(p) for p in grid]
    else:
        raise TypeError(
            f"grid is a mapping of values or a list of points, not {type(grid).__name__}"
        )
    if not points:
        raise ValueError("the grid has no points")
    return [canonical_value(p, "grid point") for p in points]


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return _UNSAFE.sub("_", str(value))


def branch_for(prefix: str, point: Mapping[str, Any]) -> str:
    """``<prefix>/<k>=<v>,...`` in the point's key order (characters outside the
    branch-name rule become ``_``)."""
    body = ",".join(f"{_UNSAFE.sub('_', str(k))}={_text(v)}" for k, v in point.items())
    return f"{prefix}/{body}" if prefix else body


@dataclass(frozen=True)
class SweepTask:
    """One point's task: plain, picklable data (``options``: the object store's, when
    the lab is on one; ``threads``: faiss threads for the build and the evaluation,
    None to leave the process's setting)."""

    lab: str
    options: dict[str, Any]
    threads: int | None
    branch: str
    point: dict[str, Any]
    params: dict[str, Any]
    note: str
    queries: str | None  # CID hex of the stored evaluation queries
    k: int
    ef_search: tuple[int, ...] | None
    timings: bool
    compact_threshold: int


def run_point(build: Callable[..., Any], task: SweepTask) -> str:
    """Build the point's engine and commit it to its branch; returns the commit's CID hex.
    Runs in any process (the lab is opened from ``task.lab``)."""
    from .lab import Lab

    lab = Lab.open(task.lab, compact_threshold=task.compact_threshold, **task.options)
    threads = contextlib.nullcontext() if task.threads is None else faiss_threads(task.threads)
    with threads:
        engine = build(**task.point)
        evaluate = None
        if task.queries is not None:
            queries = load_queries(lab.store, CID.parse(task.queries))
            evaluate = EvalSpec(queries, task.k, task.ef_search, task.timings)
        snap = lab.commit(
            engine,
            task.note,
            branch=task.branch,
            params=task.params,
            evaluate=evaluate,
            progress=False,
        )
    return snap.cid.hex


def _same_evaluation(recorded: Mapping[str, Any] | None, task: SweepTask) -> bool:
    """Does a head's recorded evaluation answer the task's (same queries and k, and every
    ef_search the task asks for)?"""
    if task.queries is None or not recorded:
        return task.queries is None and not recorded
    efs = {int(ef) for ef, _ in recorded.get("recall", [])}
    return (
        CID.from_bytes(recorded["queries"]).hex == task.queries
        and recorded.get("k") == task.k
        and set(task.ef_search or DEFAULT_EF_SEARCH) <= efs
    )


def _submit(executor: Any, task: SweepTask, build: Callable[..., Any]) -> Any:
    """``executor.submit(run_point, build, task)``; a Dask client gets ``pure=False`` so
    that it never answers a task (its timings, say) from a result it computed before."""
    if type(executor).__module__.split(".")[0] == "distributed":
        return executor.submit(run_point, build, task, pure=False)
    return executor.submit(run_point, build, task)


def _done(lab: Lab, task: SweepTask) -> CID | None:
    """The head of the task's branch when it already holds this point (same params and
    evaluation), else None."""
    head = lab.refs.read_ref(task.branch)
    if head is None:
        return None
    m = lab.view().manifest(head.cid)
    if dict(m.params) == task.params and _same_evaluation(m.evaluation, task):
        return head.cid
    return None


def run_sweep(
    lab: Lab,
    build: Callable[..., Any],
    grid: Mapping[str, Any] | list[Mapping[str, Any]],
    evaluate: Any,
    executor: Any,
    params: Mapping[str, Any] | None,
    prefix: str,
    note: str,
    progress: bool,
    threads: int | None = None,
):
    """See :meth:`Lab.sweep`."""
    import pandas as pd

    points = expand_grid(grid)
    fixed = canonical_value(dict(params or {}), "params")
    spec = as_spec(evaluate)
    queries_hex = None
    if spec is not None:
        q = np.asarray(spec.queries)
        if q.dtype.kind == "f":
            q = np.ascontiguousarray(q, dtype=np.float32)
        with lab.refs.locked():
            queries_hex = ingest(encode_queries(q), lab.store).hex
    tasks = []
    for point in points:
        overlap = sorted(set(point) & set(fixed))
        if overlap:
            raise ValueError(f"params {overlap} are both fixed and swept")
        tasks.append(
            SweepTask(
                lab=lab.location,
                options=dict(lab.store_options),
                threads=threads,
                branch=branch_for(prefix, point),
                point=point,
                params={**fixed, **point},
                note=note,
                queries=queries_hex,
                k=10 if spec is None else int(spec.k),
                ef_search=None
                if spec is None or spec.ef_search is None
                else tuple(int(e) for e in spec.ef_search),
                timings=True if spec is None else bool(spec.timings),
                compact_threshold=lab.compact_threshold,
            )
        )
    names = [t.branch for t in tasks]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"grid points share branch names {dup}; give them distinct values")
    for name in names:
        check_branch_name(name)
    status: dict[str, str] = {}
    todo = []
    taken = []
    for task in tasks:
        if _done(lab, task) is not None:
            status[task.branch] = "skipped"
        elif lab.refs.read_ref(task.branch) is not None:
            taken.append(task.branch)
        else:
            todo.append(task)
    if taken:
        raise ValueError(
            f"branches {taken} already hold runs with other params or evaluation (queries, "
            "k, ef_search); sweep into new branches (prefix='...') or delete those "
            "(lab.delete_branch)"
        )
    with progress_bar(progress, total=len(tasks), desc="sweep", unit="run") as bar:
        bar.update(len(tasks) - len(todo))
        if executor is None:
            for task in todo:
                bar.set_description(f"sweep {task.branch}", refresh=False)
                run_point(build, task)
                status[task.branch] = "committed"
                bar.update(1)
        else:
            futures = [(task, _submit(executor, task, build)) for task in todo]
            for task, future in futures:
                future.result()
                status[task.branch] = "committed"
                bar.update(1)
    view = lab.view()
    cids = [view.branches[t.branch].cid for t in tasks]
    runs = lab.runs()
    by_commit = {c: i for i, c in enumerate(runs["commit"])}
    rows = runs.iloc[[by_commit[c.short] for c in cids]].reset_index(drop=True)
    rows.insert(3, "sweep", [status[t.branch] for t in tasks])
    rows["branch"] = names
    return pd.DataFrame(rows)
