"""SearchResults: the action ``handle(Search)`` returns and what ``eng.search`` returns."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SearchResults"]


@dataclass(frozen=True, eq=False)
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
    """

    query_id: int | None
    ids: np.ndarray
    keys: np.ndarray
    scores: np.ndarray
    entries: np.ndarray

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
        n, k = self.keys.shape
        rows = []
        for qi in range(min(n, 5)):
            for ri in range(k):
                if self.keys[qi, ri] < 0:
                    continue
                rows.append(
                    f"<tr><td>{qi}</td><td>{ri}</td><td>{html.escape(repr(self.ids[qi, ri]))}</td>"
                    f"<td>{self.scores[qi, ri]:.6g}</td></tr>"
                )
        return (
            f"<table><caption>{html.escape(repr(self))}</caption>"
            "<tr><th>query</th><th>rank</th><th>id</th><th>score</th></tr>"
            + "".join(rows)
            + "</table>"
        )
