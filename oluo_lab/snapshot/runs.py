"""The tables of a lab: ``log``, ``runs``, ``compare``, ``evaluations`` and ``branches``.

Snapshot layer: reads a :class:`~oluo_lab.snapshot.catalog.LabView` and manifests, builds
pandas DataFrames (one row per commit, newest first), writes nothing. Times, numbers and
timings come from the commit log; everything else from the manifests. Absent values are
None (NaN in numeric columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..cas import CID, BookStore
from .catalog import LabView
from .history import generation_books, generation_holes
from .manifest import SnapshotManifest

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "branches_frame",
    "compare_frame",
    "evaluations_frame",
    "log_frame",
    "runs_frame",
]

#: the engine configuration columns, recorded from the engine itself
CONFIG_COLUMNS = ("metric", "dim", "M", "ef_construction", "ef_search")
#: what one build of an index differs by (the evaluated ef_search is per row)
BUILD_COLUMNS = ("metric", "dim", "M", "ef_construction")
LOG_COLUMNS = [
    "#",
    "commit",
    "branch",
    "tags",
    "parent",
    "time",
    "generation",
    "entries",
    "holes",
    "bytes",
    "new_bytes",
    "state",
    "note",
]
RUNS_HEAD = ["#", "commit", "branch", "tags", "parent", "time", "note", "generation", "entries"]
TIMING_COLUMNS = ("qps", "p50_ms", "p95_ms", "p99_ms")


def state_of(view: LabView, store: BookStore, cid: CID, m: SnapshotManifest) -> str:
    """``"pruned"`` when gc retired the commit's payloads (or they are gone), else ``"live"``."""
    if cid in view.retired:
        return "pruned"
    if not store.has(m.index_cid) and not store.has(m.metadata_cid):
        return "pruned"
    return "live"


class Books:
    """Books and holes of each commit (cached per CID and retired state: commits are
    immutable)."""

    def __init__(self, store: BookStore) -> None:
        self.store = store
        self._cache: dict[tuple[CID, bool], frozenset[CID]] = {}
        self._holes: dict[tuple[CID, bool], int | None] = {}

    def holes(self, view: LabView, cid: CID) -> int | None:
        """Index positions of the commit that hold no entry (None once pruned)."""
        retired = cid in view.retired
        key = (cid, retired)
        if key not in self._holes:
            m = view.manifest(cid)
            self._holes[key] = None if retired else generation_holes(self.store, m)
        return self._holes[key]

    def of(self, view: LabView, cid: CID) -> frozenset[CID]:
        retired = cid in view.retired
        key = (cid, retired)
        if key not in self._cache:
            m = view.manifest(cid)
            books = generation_books(self.store, cid, m, {cid} if retired else ())
            self._cache[key] = frozenset(books)
        return self._cache[key]


def _base_row(view: LabView, store: BookStore, books: Books, cid: CID) -> dict[str, Any]:
    m = view.manifest(cid)
    rec = view.numbered.get(cid)
    mine = books.of(view, cid)
    parent_books = books.of(view, m.parent) if m.parent is not None else frozenset()
    branch = rec.branch if rec is not None else (", ".join(view.branches_at(cid)) or None)
    return {
        "#": None if rec is None else rec.seq,
        "commit": cid.short,
        "branch": branch,
        "tags": ", ".join(view.tags_at(cid)) or None,
        "parent": None if m.parent is None else m.parent.short,
        "time": None if rec is None else rec.time,
        "generation": m.compact_generation,
        "entries": m.entries,
        "holes": books.holes(view, cid),
        "bytes": sum(c.size for c in mine),
        "new_bytes": sum(c.size for c in mine - parent_books),
        "state": state_of(view, store, cid, m),
        "note": m.note,
    }


def commits_of(view: LabView, branch: str | None) -> list[CID]:
    """Every reachable commit (``branch`` None), or the history of ``branch``."""
    if branch is None:
        return view.reachable()
    head = view.branches.get(branch)
    if head is None:
        raise KeyError(f"no branch named {branch!r}; branches: {', '.join(view.branches)}")
    return list(view.ancestry(head.cid))


def _frame(rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    """A table with one dtype per column from its values: ints (with gaps) ``Int64``,
    other numbers ``float64`` (NaN for gaps), anything else objects (None for gaps)."""
    import pandas as pd

    columns = list(columns)
    data = {}
    for col in columns:
        values = [_none_for_nan(row.get(col)) for row in rows]
        present = [v for v in values if v is not None]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
        if present and numbers and all(isinstance(v, int) for v in present):
            data[col] = pd.array(values, dtype="Int64")
        elif present and numbers:
            data[col] = pd.array([float("nan") if v is None else v for v in values], "float64")
        else:
            data[col] = pd.Series(values, dtype=object)  # a Series keeps None (not NaN)
    return pd.DataFrame(
        {c: v if isinstance(v, pd.Series) else pd.Series(v) for c, v in data.items()},
        columns=columns,
    )


def _none_for_nan(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def log_frame(view: LabView, store: BookStore, books: Books, branch: str | None) -> pd.DataFrame:
    """``Lab.log``: one row per commit, newest first."""
    rows = [_base_row(view, store, books, c) for c in commits_of(view, branch)]
    return _frame(rows, LOG_COLUMNS)


def _flat(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{prefix.key: value}``; nested maps flattened with dots."""
    out: dict[str, Any] = {}
    for key in sorted(values):
        value = values[key]
        if isinstance(value, Mapping):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def recall_at(m: SnapshotManifest, ef: int | None = None) -> tuple[str, float] | None:
    """``("recall@k", value)`` of the recorded evaluation at ``ef`` (default: the engine's
    own ef_search); None when not recorded."""
    ev = m.evaluation
    if not ev:
        return None
    ef = m.index_config.get("ef_search") if ef is None else ef
    for e, r in ev.get("recall", []):
        if e == ef:
            return f"recall@{ev.get('k')}", float(r)
    return None


def _timing_at(timings: Mapping[str, Any], ef: Any) -> dict[str, Any]:
    for point in timings.get("points", []) if isinstance(timings, Mapping) else []:
        if isinstance(point, Mapping) and point.get("ef_search") == ef:
            return {c: point.get(c) for c in TIMING_COLUMNS}
    return {}


def runs_frame(
    view: LabView,
    store: BookStore,
    books: Books,
    branch: str | None,
    query: str | None,
    timings: bool,
) -> pd.DataFrame:
    """``Lab.runs``: the log with the engine configuration, ``params.*``, ``metrics.*``
    (``annotations.*`` for version 1 manifests) and the recorded recall@k at the
    engine's ef_search; measured timings at that ef_search with ``timings``."""
    rows = []
    user_cols: dict[str, None] = {}
    eval_cols: dict[str, None] = {}
    for cid in commits_of(view, branch):
        m = view.manifest(cid)
        base = _base_row(view, store, books, cid)
        row = {k: base[k] for k in RUNS_HEAD}
        for col in CONFIG_COLUMNS:
            row[col] = m.index_config.get(col)
        user = {}
        for name, values in m.user_values.items():
            user.update(_flat(name, values))
        user_cols.update(dict.fromkeys(user))
        row.update(user)
        hit = recall_at(m)
        if hit is not None:
            row[hit[0]] = hit[1]
            eval_cols[hit[0]] = None
        if timings:
            rec = view.numbered.get(cid)
            row.update(_timing_at(rec.timings if rec else {}, m.index_config.get("ef_search")))
        row.update({k: base[k] for k in ("bytes", "new_bytes", "state")})
        rows.append(row)
    columns = [
        *RUNS_HEAD,
        *CONFIG_COLUMNS,
        *eval_cols,
        *sorted(user_cols, key=_user_order),
        *(TIMING_COLUMNS if timings else ()),
        "bytes",
        "new_bytes",
        "state",
    ]
    df = _frame(rows, columns)
    if query:
        try:
            df = df.query(query)
        except (NameError, SyntaxError, TypeError, ValueError, KeyError) as exc:
            # pandas' own errors (UndefinedVariableError is a NameError) name no columns
            raise ValueError(
                f"bad runs query {query!r}: {exc} (columns: {', '.join(columns)}; quote "
                "dotted names in backticks: `params.M`)"
            ) from exc
    return df


def _user_order(col: str) -> tuple[int, str]:
    order = {"params": 0, "metrics": 1, "annotations": 2}
    return order.get(col.split(".", 1)[0], 3), col


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_frame(view: LabView, cids: list[CID], labels: list[str]) -> pd.DataFrame:
    """``Lab.compare``: one column per commit (its config, params, metrics, recorded
    recall at each ef_search), then ``Δ <label>`` columns: each commit's numeric values
    minus the first's."""
    import pandas as pd

    columns: dict[str, dict[str, Any]] = {}
    fields: dict[str, None] = {}
    for cid, label in zip(cids, labels, strict=True):
        m = view.manifest(cid)
        col: dict[str, Any] = {"commit": cid.short, "generation": m.compact_generation}
        for name in CONFIG_COLUMNS:
            col[name] = m.index_config.get(name)
        col["entries"] = m.entries
        for name, values in m.user_values.items():
            col.update(_flat(name, values))
        ev = m.evaluation or {}
        for ef, recall in ev.get("recall", []):
            col[f"recall@{ev.get('k')} ef_search={ef}"] = float(recall)
        col["note"] = m.note
        columns[label] = col
        fields.update(dict.fromkeys(col))
    order = sorted(fields, key=lambda f: _field_order(f, fields))
    data: dict[str, list[Any]] = {}
    first = labels[0]
    for label in labels:
        data[label] = [columns[label].get(f) for f in order]
    for label in labels[1:]:
        deltas = []
        for f in order:
            a, b = columns[first].get(f), columns[label].get(f)
            deltas.append(b - a if _numeric(a) and _numeric(b) and f != "generation" else None)
        data[f"Δ {label}"] = deltas
    return pd.DataFrame(data, index=pd.Index(order, name="field"), dtype=object)


def _field_order(field: str, fields: Mapping[str, None]) -> tuple[int, int]:
    keys = list(fields)
    top = {"commit": 0, "note": 1, "generation": 2, "entries": 9}
    if field in top:
        return top[field], 0
    if field in CONFIG_COLUMNS:
        return 3, CONFIG_COLUMNS.index(field)
    if field.startswith("recall@"):
        return 10, keys.index(field)
    for rank, prefix in enumerate(("params.", "metrics.", "annotations."), start=4):
        if field.startswith(prefix):
            return rank, keys.index(field)
    return 11, keys.index(field)


def evaluations_frame(view: LabView, cids: list[CID], labels: Callable[[CID], str]) -> pd.DataFrame:
    """``Lab.evaluations``: one row per (commit, ef_search) of every recorded
    evaluation: recall (deterministic, from the manifest) and the timings measured at
    commit (from the commit log; NaN when not measured)."""
    rows = []
    for cid in cids:
        m = view.manifest(cid)
        ev = m.evaluation
        if not ev:
            continue
        rec = view.numbered.get(cid)
        timings = rec.timings if rec is not None else {}
        for ef, recall in ev.get("recall", []):
            row = {
                "run": labels(cid),
                "#": None if rec is None else rec.seq,
                "commit": cid.short,
                "branch": None if rec is None else rec.branch,
            }
            for col in BUILD_COLUMNS:
                row[col] = m.index_config.get(col)
            row.update({"k": ev.get("k"), "ef_search": ef, "recall": float(recall)})
            row.update({c: None for c in TIMING_COLUMNS})
            row.update(_timing_at(timings, ef))
            row["threads"] = timings.get("threads") if isinstance(timings, Mapping) else None
            rows.append(row)
    columns = [
        "run",
        "#",
        "commit",
        "branch",
        *BUILD_COLUMNS,
        "k",
        "ef_search",
        "recall",
        *TIMING_COLUMNS,
        "threads",
    ]
    df = _frame(rows, columns)
    for col in (*TIMING_COLUMNS, "recall"):
        df[col] = df[col].astype(float)
    return df


def branches_frame(view: LabView, current: str) -> pd.DataFrame:
    """``Lab.branches``: one row per branch (``main`` first), its head and whether it is
    the Lab's current branch (what ``HEAD`` names)."""
    rows = []
    for name, head in view.branches.items():
        m = view.manifest(head.cid)
        rec = view.numbered.get(head.cid)
        rows.append(
            {
                "branch": name,
                "current": name == current,
                "#": None if rec is None else rec.seq,
                "commit": head.cid.short,
                "generation": m.compact_generation,
                "entries": m.entries,
                "commits": sum(1 for _ in view.ancestry(head.cid)),
                "note": m.note,
            }
        )
    columns = ["branch", "current", "#", "commit", "generation", "entries", "commits", "note"]
    return _frame(rows, columns)
