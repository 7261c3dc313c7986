"""SearchResults: the action ``handle(Search)`` returns and what ``eng.search`` returns.

Layer: engine (NumPy only; pandas is imported by :meth:`SearchResults.to_frame`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np

from .errors import EngineErrorBase

__all__ = ["SCORE_NAMES", "SearchResults"]

_set = object.__setattr__


class SearchResults:
    """Answers to one batch of queries, best first.

    * ``ids``: object array (n_queries, k) of caller ids, ``None`` where fewer than
      k entries matched;
    * ``keys``: int64 array (n_queries, k) of engine keys, ``-1`` padding;
    * ``scores``: float64 array (n_queries, k) of distances in ascending order (lower
      is closer, for every metric), ``+inf`` padding. The score per metric
      (:data:`SCORE_NAMES`): cosine ``1 - cos`` in [0, 2] (cosine distance); l2 the
      squared Euclidean distance; ip ``-<q, x>`` (the negated inner product, so that
      lower is closer here too); hamming differing bits / n_bits in [0, 1]. Ties are
      broken by key;
    * ``entries``: object array (n_queries, k) of
      :class:`~oluo_lab.engine.events.EntryMetadata` (``None`` padding);
    * ``metric``: the engine's metric, which names the score (:attr:`score_name`) in
      :meth:`to_frame` and the HTML table.

    Immutable. The engine builds ``ids`` and ``entries`` from ``keys`` on first
    access rather than per search (a search that only reads keys and scores does not
    pay for two object-array gathers); they always describe the engine as it was at
    search time, because the engine resolves every outstanding result before it
    applies any event that can change its entries (see ``OluoEngine.handle``). Until
    then an unresolved result keeps a reference to its engine. Pickling resolves it.
    """

    __slots__ = (
        "query_id",
        "keys",
        "scores",
        "metric",
        "_ids",
        "_entries",
        "_resolve",
        "__weakref__",
    )
    __match_args__ = ("query_id", "ids", "keys", "scores", "entries")

    query_id: int | None
    keys: np.ndarray
    scores: np.ndarray
    metric: str | None

    def __init__(
        self,
        query_id: int | None,
        ids: np.ndarray,
        keys: np.ndarray,
        scores: np.ndarray,
        entries: np.ndarray,
        metric: str | None = None,
    ) -> None:
        _set(self, "query_id", query_id)
        _set(self, "keys", keys)
        _set(self, "scores", scores)
        _set(self, "metric", metric)
        _set(self, "_ids", ids)
        _set(self, "_entries", entries)
        _set(self, "_resolve", None)

    @classmethod
    def _lazy(
        cls,
        query_id: int | None,
        keys: np.ndarray,
        scores: np.ndarray,
        resolve: tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]],
        metric: str | None = None,
    ) -> SearchResults:
        """A result whose ids and entries are ``resolve[0](keys)`` and ``resolve[1](keys)``,
        each computed on its first access (reading ids never builds entries).

        The engine that builds it must call :meth:`_settle` before its entries change."""
        self = object.__new__(cls)
        _set(self, "query_id", query_id)
        _set(self, "keys", keys)
        _set(self, "scores", scores)
        _set(self, "metric", metric)
        _set(self, "_ids", None)
        _set(self, "_entries", None)
        _set(self, "_resolve", resolve)
        return self

    def _settle(self) -> EngineErrorBase | None:
        """Materialise ids and entries now (idempotent).

        When the entries cannot be built (a restored entry whose stored caller map is
        damaged), the result keeps the engine's error, which reading :attr:`entries`
        then raises, and returns it; the ids are resolved all the same."""
        resolve = self._resolve
        if resolve is None:
            return None
        if self._ids is None:
            _set(self, "_ids", resolve[0](self.keys))
        failed = None
        if self._entries is None:
            try:
                _set(self, "_entries", resolve[1](self.keys))
            except EngineErrorBase as exc:
                failed = exc
                _set(self, "_entries", _Unreadable(exc))
        _set(self, "_resolve", None)
        return failed

    @property
    def ids(self) -> np.ndarray:
        ids = self._ids
        if ids is None:
            ids = self._resolve[0](self.keys)
            _set(self, "_ids", ids)
        return ids

    @property
    def entries(self) -> np.ndarray:
        if self._entries is None:
            self._settle()
        entries = self._entries
        if type(entries) is _Unreadable:
            raise entries.error.with_traceback(None)
        return entries

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple:
        return (
            SearchResults,
            (self.query_id, self.ids, self.keys, self.scores, self.entries, self.metric),
        )

    @property
    def k(self) -> int:
        return int(self.keys.shape[1])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def metadata(self) -> list[list[dict[str, Any] | None]]:
        """The caller metadata of every hit, as nested lists (None padding)."""
        return [[None if e is None else dict(e.metadata) for e in row] for row in self.entries]

    @property
    def score_name(self) -> str:
        """What :attr:`scores` measure, as the column name :meth:`to_frame` gives them:
        ``cosine_distance``, ``squared_l2_distance``, ``negative_inner_product`` or
        ``hamming_distance`` (``score`` when the metric is unknown). Lower is closer
        for all four."""
        return SCORE_NAMES.get(self.metric, "score")

    def to_frame(self):
        """Long format: one row per hit with columns query, rank, id, key, the score
        (named :attr:`score_name`, e.g. ``cosine_distance``), then the caller's metadata
        keys (sorted; a name that clashes gets a ``metadata.`` prefix). Values are whole:
        pandas shortens long ones only when it displays the frame."""
        import pandas as pd

        q, r = np.nonzero(self.keys >= 0)
        cols: dict[str, Any] = {
            "query": q.astype(np.int64),
            "rank": r.astype(np.int64),
            "id": self.ids[q, r],
            "key": self.keys[q, r],
            self.score_name: self.scores[q, r],
        }
        ents = self.entries[q, r]
        names: set[str] = set()
        for e in ents:
            names.update(e.metadata)
        for name in sorted(names):
            col = name if name not in cols else f"metadata.{name}"
            cols[col] = [e.metadata.get(name) for e in ents]
        return pd.DataFrame(cols)

    def __repr__(self) -> str:
        n, k = self.keys.shape
        hits = int((self.keys >= 0).sum())
        metric = "" if self.metric is None else f", score={self.score_name}"
        return f"SearchResults(query_id={self.query_id}, queries={n}, k={k}, hits={hits}{metric})"

    def _repr_html_(self) -> str:
        """Hits as a table (query, rank, id, the score named by metric, metadata columns);
        the first ``HTML_ROWS`` rows are shown, the rest (up to ``HTML_MAX_ROWS``) in
        ``<details>``. Text longer than pandas' ``display.max_colwidth`` is shortened as
        pandas shortens it when it shows :meth:`to_frame` (whole text on hover)."""
        import pandas as pd

        from .._html import Raw, details, fmt_num, shortened_cell, table

        width = pd.get_option("display.max_colwidth")
        n, k = self.keys.shape
        q, r = np.nonzero(self.keys >= 0)
        total = len(q)
        q, r = q[:HTML_MAX_ROWS], r[:HTML_MAX_ROWS]
        ents = self.entries[q, r]
        names = sorted({name for e in ents for name in e.metadata})
        score = self.score_name.replace("_", " ")
        header = ["query", "rank", "id", score, *(shortened_cell(name, width) for name in names)]
        rows = [
            [
                int(qi),
                int(ri),
                shortened_cell(self.ids[qi, ri], width),
                fmt_num(float(self.scores[qi, ri]), 5),
                *(shortened_cell(e.metadata.get(name, ""), width) for name in names),
            ]
            for qi, ri, e in zip(q.tolist(), r.tolist(), ents, strict=True)
        ]
        caption = f"SearchResults: {n} quer{'y' if n == 1 else 'ies'}, k={k}, {total} hits"
        if self.metric is not None:
            caption += f"; {score}: lower is closer"
        out = table(caption, header, rows[:HTML_ROWS])
        if len(rows) > HTML_ROWS:
            rest = table(None, header, rows[HTML_ROWS:])
            more = f"{len(rows) - HTML_ROWS} more hits"
            if total > len(rows):
                rest += Raw(f"<p>{total - len(rows)} further hits not shown: use .to_frame()</p>")
                more = f"{total - HTML_ROWS} more hits"
            out += details(more, rest)
        return Raw(out)


class _Unreadable:
    """What a result's entries are when they could not be built (see ``_settle``)."""

    __slots__ = ("error",)

    def __init__(self, error: EngineErrorBase) -> None:
        self.error = error


#: The name of the score of each metric (all are distances: lower is closer).
SCORE_NAMES = {
    "cosine": "cosine_distance",
    "l2": "squared_l2_distance",
    "ip": "negative_inner_product",
    "hamming": "hamming_distance",
}

#: Hit rows shown in the open table of the HTML repr, and at most in total.
HTML_ROWS = 20
HTML_MAX_ROWS = 500
