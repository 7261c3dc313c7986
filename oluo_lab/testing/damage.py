"""Damage a store's files behind its back, the same way for every store kind.

Layer: testing, on top of ``oluo_lab.cas``. Corruption, crash and gc tests use these to
flip, cut, lose or replace one book's stored form, or to make books look old, without
knowing whether the store keeps one file per book (:class:`~oluo_lab.cas.DirStore`) or
many books per pack (:class:`~oluo_lab.cas.PackStore`).

* ``"flip"``: one bit of the stored record changes (``where`` picks the byte, 0..1);
* ``"truncate"``: the file ends inside the record (a pack loses its trailer as well);
* ``"delete"``: the book is lost (its file, or its pack store index entry);
* ``"swap"``: another stored book's record is written over this one's (a DirStore: the
  other book's whole file);
* ``"garbage"``: the record's bytes are replaced by random bytes of the same length.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

from oluo_lab.cas import CID, BookStore, DirStore, MemoryStore, PackStore
from oluo_lab.cas._packfile import PackRef, encode_index, file_id, index_key, pack_key

__all__ = ["DAMAGES", "age_books", "book_file", "damage_book", "drop_index_entry"]

DAMAGES = ("flip", "truncate", "delete", "swap", "garbage")


def book_file(store: DirStore, cid: CID) -> Path:
    """The file a DirStore keeps a book in."""
    return Path(store._locate(cid)[1])


def _patch(data: bytes, start: int, end: int, how: str, other: bytes, where: float) -> bytes:
    b = bytearray(data)
    if how == "flip":
        b[start + min(end - start - 1, int((end - start) * where))] ^= 0x01
    elif how == "truncate":
        return bytes(b[: end - 1])
    elif how == "swap":
        b[start:end] = (other + bytes(end - start))[: end - start]
    elif how == "garbage":
        b[start:end] = random.Random(start).randbytes(end - start)
    else:
        raise ValueError(f"unknown damage {how!r}")
    return bytes(b)


def damage_book(store: BookStore, cid: CID, how: str, where: float = 0.5) -> None:
    """Damage ``cid``'s stored form (see the module docstring for ``how``)."""
    if isinstance(store, DirStore):
        path = book_file(store, cid)
        if how == "delete":
            path.unlink()
            return
        if how == "swap":  # another book's whole file
            path.write_bytes(book_file(store, next(c for c in store if c != cid)).read_bytes())
            return
        data = path.read_bytes()
        path.write_bytes(_patch(data, 0, len(data), how, b"", where))
    elif isinstance(store, PackStore):
        if how == "delete":
            drop_index_entry(store, cid)
            return
        pid, e = store._view.loc[cid]
        b = store.backend
        other = b""
        if how == "swap":
            opid, oe = next(v for k, v in store._view.loc.items() if k != cid)
            other = b.read(pack_key(opid))[oe.offset : oe.end]
        data = b.read(pack_key(pid))
        b.put_replace(pack_key(pid), _patch(data, e.offset, e.end, how, other, where))
    elif isinstance(store, MemoryStore):
        if how == "delete":
            del store._books[cid]
            return
        other = (
            next((v for k, v in store._books.items() if k != cid), b"") if how == "swap" else b""
        )
        data = store._books[cid]
        store._books[cid] = _patch(data, 0, len(data), how, other, where)
    else:
        raise TypeError(f"cannot damage a {type(store).__name__}")


def drop_index_entry(store: PackStore, cid: CID) -> None:
    """Lose a book from a pack store's index behind its back: the index file naming it is
    replaced by one without it (the pack keeps the record, as after a bad index write)."""
    store._refresh(force=True)
    b = store.backend
    for ident in store._view.live:
        doc = store._view.docs[ident]
        if not any(e.cid == cid for p in doc.packs for e in p.entries):
            continue
        packs = [
            PackRef(p.id, p.size, tuple(e for e in p.entries if e.cid != cid)) for p in doc.packs
        ]
        packs = [p for p in packs if p.entries]
        if packs or doc.supersedes:
            data = encode_index(packs, doc.supersedes)
            b.put_create(index_key(file_id(data)), data)
        b.delete(index_key(ident))
    store._refresh(force=True)


def age_books(store: BookStore, cids: Iterable[CID], seconds: float) -> None:
    """Make the books look written ``seconds`` ago (their files' mtime: a book file, or
    the pack holding it, so its pack neighbours age too). Local stores only."""
    old = time.time() - seconds
    for cid in cids:
        if isinstance(store, DirStore):
            os.utime(book_file(store, cid), (old, old))
        elif isinstance(store, PackStore):
            pid, _ = store._view.loc[cid]
            os.utime(store.backend.path(pack_key(pid)), (old, old))  # type: ignore[attr-defined]
        else:
            raise TypeError(f"cannot age books of a {type(store).__name__}")
