"""In-memory book store (a dict of CID -> bytes), verified on every read like any other."""

from __future__ import annotations

import time
from collections.abc import Iterable

from oluo_lab.cas.base import BookStore, Buffer, StoreStats
from oluo_lab.cas.cid import CID
from oluo_lab.cas.errors import BookNotFound


class MemoryStore(BookStore):
    """Books kept uncompressed in a dict; stats report stored == logical bytes."""

    def __init__(self) -> None:
        self._books: dict[CID, bytes] = {}
        self._written: dict[CID, float] = {}

    def _store(self, cid: CID, data: Buffer) -> None:
        if cid not in self._books:
            self._books[cid] = bytes(data)
            self._written[cid] = time.time()

    def _stat(self, cid: CID) -> tuple[int, float]:
        try:
            return len(self._books[cid]), self._written.get(cid, 0.0)
        except KeyError:
            raise BookNotFound(cid) from None

    def _load(self, cid: CID) -> bytes:
        try:
            return self._books[cid]
        except KeyError:
            raise BookNotFound(cid) from None

    def _has(self, cid: CID) -> bool:
        return cid in self._books

    def _delete(self, cid: CID) -> None:
        if self._books.pop(cid, None) is None:
            raise BookNotFound(cid)
        self._written.pop(cid, None)

    def _iter_unsorted(self) -> Iterable[CID]:
        return list(self._books)

    def __len__(self) -> int:
        return len(self._books)

    def stats(self) -> StoreStats:
        logical = sum(c.size for c in self._books)
        stored = sum(len(b) for b in self._books.values())
        return StoreStats(books=len(self._books), logical_bytes=logical, stored_bytes=stored)

    def __repr__(self) -> str:
        return f"MemoryStore(books={len(self._books)})"

    def _repr_html_(self) -> str:
        from oluo_lab._html import fmt_bytes, kv_table

        st = self.stats()
        return kv_table(
            "MemoryStore",
            [
                ("books", st.books),
                ("logical bytes", fmt_bytes(st.logical_bytes)),
            ],
        )
