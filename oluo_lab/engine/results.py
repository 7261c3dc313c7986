"""SearchResults: the action ``handle(Search)`` returns and what ``eng.search`` returns.

Layer: engine (NumPy only; pandas is imported by :meth:`SearchResults.to_frame`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np

from .errors import EngineErrorBase

__all__ = ["SearchResults"]

_set = object.__setattr__


class SearchResults:
    """Answers to one batch of queries, best first.

    * ``ids``: object array (n_queries, k) of caller ids, ``None`` where fewer than
      k entries matched;
    * ``keys``: int64 array (n_queries, k) of engine keys, ``-1`` padding;
    * ``scores``: float64 array (n_queries, k) of distances in ascending order,
      ``+inf`` padding. The score per metric: cosine ``1 - cos`` in [0, 2]; l2
      squared Euclidean distance; ip ``-<q, x>``; hamming differing bits / n_bits
      in [0, 1]. Ties are broken by key;
    * ``entries``: object array (n_queries, k) of
      :class:`~oluo_lab.engine.events.EntryMetadata` (``None`` padding).

    Immutable. The engine builds ``ids`` and ``entries`` from ``keys`` on first
    access rather than per search (a search that only reads keys and scores does not
    pay for two object-array gathers); they always describe the engine as it was at
    search time, because the engine resolves every outstanding result before it
    applies any event that can change its entries (see ``OluoEngine.handle``). Until
    then an unresolved result keeps a reference to its engine. Pickling resolves it.
    """

    __slots__ = ("query_id", "keys", "scores", "_ids", "_entries", "_resolve", "__weakref__")
    __match_args__ = ("query_id", "ids", "keys", "scores", "entries")

    query_id: int | None
    keys: np.ndarray
    scores: np.ndarray

    def __init__(
        self,
        query_id: int | None,
        ids: np.ndarray,
        keys: np.ndarray,
        scores: np.ndarray,
        entries: np.ndarray,
    ) -> None:
        _set(self, "query_id", query_id)
        _set(self, "keys", keys)
        _set(self, "scores", scores)
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
    ) -> SearchResults:
        """A result whose ids and entries are ``resolve[0](keys)`` and ``resolve[1](keys)``,
        each computed on its first access (reading ids never builds entries).

        The engine that builds it must call :meth:`_settle` before its entries change."""
        self = object.__new__(cls)
        _set(self, "query_id", query_id)
        _set(self, "keys", keys)
        _set(self, "scores", scores)
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
        return (SearchResults, (self.query_id, self.ids, self.keys, self.scores, self.entries))

    @property
    def k(self) -> int:
        return int(self.keys.shape[1])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def metadata(self) -> list[list[dict[str, Any] | None]]:
        """The caller metadata of every hit, as nested lists (None padding)."""
        return [[None if e is None else dict(e.metadata) for e in row] for row in self.entries]

    def to_frame(self):
        """Long format: one row per hit with columns query, rank, id, key, score, then
        the caller's metadata keys (sorted; a name that clashes gets a ``metadata.`` prefix)."""
        import pandas as pd

        q, r = np.nonzero(self.keys >= 0)
        cols: dict[str, Any] = {
            "query": q.astype(np.int64),
            "rank": r.astype(np.int64),
            "id": self.ids[q, r],
            "key": self.keys[q, r],
            "score": self.scores[q, r],
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
        return f"SearchResults(query_id={self.query_id}, queries={n}, k={k}, hits={hits})"

    def _repr_html_(self) -> str:
        """Hits as a table (query, rank, id, score, metadata columns); the first
        ``HTML_ROWS`` rows are shown, the rest (up to ``HTML_MAX_ROWS``) in ``<details>``."""
        from .._html import Raw, details, fmt_num, table

        n, k = self.keys.shape
        q, r = np.nonzero(self.keys >= 0)
        total = len(q)
        q, r = q[:HTML_MAX_ROWS], r[:HTML_MAX_ROWS]
        ents = self.entries[q, r]
        names = sorted({name for e in ents for name in e.metadata})
        header = ["query", "rank", "id", "score", *names]
        rows = [
            [
                int(qi),
                int(ri),
                self.ids[qi, ri],
                fmt_num(float(self.scores[qi, ri]), 5),
                *(_cell(e.metadata.get(name, "")) for name in names),
            ]
            for qi, ri, e in zip(q.tolist(), r.tolist(), ents, strict=True)
        ]
        caption = f"SearchResults: {n} queries, k={k}, {total} hits"
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


#: Hit rows shown in the open table of the HTML repr, and at most in total.
HTML_ROWS = 20
HTML_MAX_ROWS = 500


def _cell(value: Any) -> str:
    from .._html import fmt_num

    return fmt_num(value) if isinstance(value, float) else str(value)
