"""Opening a store by location, and converting a directory store to packs.

Layer: cas. :func:`open_store` is what a Lab calls: it opens whatever store a directory
already holds (its ``oluo-cas-format`` marker says which: ``oluo-cas 1`` a
:class:`~oluo_lab.cas.DirStore`, ``oluo-cas 2`` a :class:`~oluo_lab.cas.PackStore`), a pack
store at an object-store URL, or creates a new store of ``DEFAULT_KIND``.

:func:`convert_to_packs` turns a directory store into a pack store in place, crash-safe
and idempotent (docs/FORMAT.md §4.1): packs and their index are made durable first; then
the marker is switched (the commit point: from here on the directory opens as a pack
store); then, last, the old book files are deleted, each only once the index names its
book. A crash before the switch leaves a directory store (plus unreferenced packs a rerun
reuses, since the same books give the same packs); a crash after it leaves a pack store
with leftover book files that a rerun deletes.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oluo_lab import _io
from oluo_lab._faults import fault_point
from oluo_lab.cas import directory, packs
from oluo_lab.cas._backends import LocalBackend
from oluo_lab.cas.base import BookStore
from oluo_lab.cas.cid import CID
from oluo_lab.cas.directory import DirStore
from oluo_lab.cas.errors import ContentError, MalformedCID, StoreIOError
from oluo_lab.cas.packs import PackStore

__all__ = ["DEFAULT_KIND", "ConvertReport", "convert_to_packs", "open_store", "store_kind"]

#: The kind of store :func:`open_store` creates where there is none yet.
DEFAULT_KIND = "packs"
_KINDS = {directory.FORMAT_TEXT: "dir", packs.FORMAT_TEXT: "packs"}


def store_kind(path: str | os.PathLike[str]) -> str | None:
    """``"dir"``, ``"packs"``, or None where no store exists yet; ContentError for a
    marker this build does not know."""
    marker = Path(path) / directory.FORMAT_FILE
    try:
        text = _io.read_file(marker).decode("utf-8", "replace")
    except FileNotFoundError:
        return "dir" if (Path(path) / "books").is_dir() else None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise StoreIOError("read", directory.FORMAT_FILE, exc) from exc
    kind = _KINDS.get(text)
    if kind is None:
        raise ContentError(f"{marker.name} says {text!r}: not a store this build reads")
    return kind


def open_store(
    path_or_url: str | os.PathLike[str], *, kind: str | None = None, **options: Any
) -> BookStore:
    """The store at ``path_or_url``: an existing directory store or pack store as it is, a
    pack store for an object-store URL, or a new store of ``kind`` (default
    ``DEFAULT_KIND``) where there is none. ``options`` go to the store's constructor."""
    text = os.fspath(path_or_url)
    if "://" in text and not text.startswith("file://"):
        return PackStore(text, **options)
    path = urllib.parse.unquote(urllib.parse.urlsplit(text).path) if "://" in text else text
    found = store_kind(path)
    want = found or kind or DEFAULT_KIND
    if kind is not None and found is not None and kind != found:
        raise ContentError(f"{text} holds a {found!r} store, not {kind!r}")
    if want not in ("dir", "packs"):
        raise ValueError(f"kind must be 'dir' or 'packs', got {kind!r}")
    return DirStore(path, **options) if want == "dir" else PackStore(path, **options)


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert_to_packs` did: books packed (new to the packs), book files
    deleted, and whether the marker was switched in this run."""

    books_packed: int
    book_files_deleted: int
    switched: bool

    def __repr__(self) -> str:
        return (
            f"ConvertReport(books_packed={self.books_packed}, "
            f"book_files_deleted={self.book_files_deleted}, switched={self.switched})"
        )


def _book_files(books_dir: Path) -> Iterator[tuple[CID, Path]]:
    """Every book file of a directory store (temp files and foreign names skipped)."""
    if not books_dir.is_dir():
        return
    for sub in sorted(books_dir.iterdir()):
        if not sub.is_dir():
            continue
        for p in sorted(sub.iterdir()):
            try:
                cid = CID.parse(p.name)
            except MalformedCID:
                continue
            if cid.hex == p.name:
                yield cid, p


def convert_to_packs(
    path: str | os.PathLike[str],
    *,
    level: int = packs.DEFAULT_LEVEL,
    target_pack_size: int = packs.DEFAULT_TARGET_PACK_SIZE,
    bar: Any = None,
) -> ConvertReport:
    """Convert the directory store at ``path`` to a pack store in place (see the module
    docstring for the order). Book records are copied verbatim (each checked against its
    CID first; a damaged book stops the conversion before anything is deleted). Running
    it again on a converted store finishes an interrupted run or does nothing. The caller
    keeps other writers out (a Lab's data-directory lock)."""
    root = Path(path)
    kind = store_kind(root)
    if kind is None:
        raise ContentError(f"{root.name}: no store to convert")
    packed = 0
    switched = False
    if kind == "dir":
        new = PackStore(root, level=level, target_pack_size=target_pack_size, _unmarked=True)
        files = sorted(_book_files(root / "books"), key=lambda cp: (_mtime(cp[1]), cp[0]))
        with new.batch():
            for cid, p in files:
                if not new.has(cid):
                    new.add_records([(cid, _read(p))])
                    packed += 1
                if bar is not None:
                    bar.update(1)
        backend = new.backend
        assert isinstance(backend, LocalBackend)
        backend.put_replace(packs.FORMAT_FILE, packs.FORMAT_TEXT.encode())
        fault_point("convert.marker_written")
        switched = True
    store = PackStore(root, level=level, target_pack_size=target_pack_size)
    leftovers = list(_book_files(root / "books"))
    missing = [(cid, p) for cid, p in leftovers if not store.has(cid)]
    if missing:  # book files the packs lack (written after an interrupted conversion)
        store.add_records((cid, _read(p)) for cid, p in missing)
        packed += len(missing)
    deleted = _remove_books(root, leftovers)
    return ConvertReport(packed, deleted, switched)


def _read(p: Path) -> bytes:
    try:
        return _io.read_file(p)
    except OSError as exc:
        raise StoreIOError("read", f"books/{p.parent.name}/{p.name}", exc) from exc


def _remove_books(root: Path, leftovers: list[tuple[CID, Path]]) -> int:
    """Delete the old book files (each indexed in the packs by now), then their temp
    files and directories; durable on return."""
    books = root / "books"
    if not books.is_dir():
        return 0
    for _, p in leftovers:
        with _op("unlink", f"books/{p.parent.name}/{p.name}"):
            _io.unlink(os.fspath(p))
        fault_point("convert.book_deleted")
    for sub in sorted(books.iterdir()):
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            if p.name.startswith(directory.TMP_PREFIX):
                with _op("unlink", f"books/{sub.name}/{p.name}"):
                    _io.unlink(os.fspath(p))
        if not any(sub.iterdir()):
            with _op("rmdir", f"books/{sub.name}"):
                _io.remove_dir(os.fspath(sub))
    if not any(books.iterdir()):
        with _op("rmdir", "books"):
            _io.remove_dir(os.fspath(books))
    with _op("fsync", "."):
        _io.fsync_dir(os.fspath(root))
    return len(leftovers)


@contextlib.contextmanager
def _op(op: str, name: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StoreIOError(op, name, exc) from exc


def _mtime(p: Path) -> float:
    return p.stat().st_mtime
