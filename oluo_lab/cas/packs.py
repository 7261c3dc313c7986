"""Pack store: many books per file, in a local directory or an object store.

Layer: cas. Books keep their CIDs and their stored record (docs/FORMAT.md §1.3, byte for
byte); only the container changes (§1.4): records are appended to **pack files** of about
``target_pack_size`` bytes that describe themselves (a trailer lists their entries), and
**index files** map each CID to (pack, offset, length). Both kinds of file are immutable
and named by the blake3 of their bytes, so writing one is a create-only put.

Order (§4.1): packs durable, then the index file that names them; the snapshot layer
writes its manifest and head only after the batch returns. A crash therefore leaves only
unreferenced packs (or a complete index), never an index naming a missing pack.

Reads group the requested books by pack and read neighbouring records with one ranged
read (gaps under ``COALESCE_GAP``); every book is verified as in any store. ``stats`` comes
from the index. ``sweep`` is gc's mark-then-repack; ``check`` verifies packs against their
names and trailers against the index. Where the files live is ``_backends.py``'s job, the
bytes of packs and index files ``_packfile.py``'s, and the batch writer ``_packbatch.py``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from oluo_lab._faults import fault_point
from oluo_lab.cas._backends import Backend, LocalBackend, Missing, ObstoreBackend, import_obstore
from oluo_lab.cas._bookfile import HEADER_LEN, RAW_HEADER, BookCodec
from oluo_lab.cas._packbatch import GROUP_BYTES, PackBatch
from oluo_lab.cas._packfile import (
    _ENTRY_ROW,
    ENTRY_LEN,
    FOOTER_LEN,
    INDEX_DIR,
    INDEX_SUFFIX,
    PACK_DIR,
    PACK_HEADER,
    PACK_SUFFIX,
    TOMB_DIR,
    TOMB_SUFFIX,
    Entry,
    IndexDoc,
    PackRef,
    decode_index,
    decode_tombstones,
    decode_trailer,
    encode_index,
    encode_tombstones,
    file_id,
    index_key,
    pack_key,
    parse_footer,
    parse_key,
    tomb_key,
)
from oluo_lab.cas.base import (
    DEFAULT_GC_GRACE_S,
    BookStore,
    Buffer,
    StoreCheck,
    StoreProblem,
    StoreStats,
    SweepReport,
    concat_plan,
    prefetch_get_many,
    verify_book,
)
from oluo_lab.cas.cid import CID, book_rows
from oluo_lab.cas.errors import (
    BookNotFound,
    BookTooLarge,
    ContentError,
    CorruptBook,
    CorruptStoreFile,
    StoreIOError,
)
from oluo_lab.cas.params import CID_LEN, MAX_BOOK_SIZE

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_TARGET_PACK_SIZE",
    "FORMAT_FILE",
    "FORMAT_TEXT",
    "PackStore",
    "make_backend",
]

#: format (docs/FORMAT.md §1.4): name of the marker file at the store's root.
FORMAT_FILE = "oluo-cas-format"
#: format (docs/FORMAT.md §1.4): the marker's text in a pack store.
FORMAT_TEXT = "oluo-cas 2\n"
#: zstd level of new books. Measured on the 400k GloVe snapshot (bench/snapshot_io.py
#: --levels): the vectors compress to the same bytes at levels 1-3, the neighbour lists and
#: metadata within 0.3%, and level 1 takes about half of level 3's zstd time.
DEFAULT_LEVEL = 1
#: Pack size a batch aims for (a pack ends after the record that reaches it).
DEFAULT_TARGET_PACK_SIZE = 16 << 20
#: Records of one pack closer than this are read with one ranged read.
COALESCE_GAP = 1 << 20
#: Upper bound of one coalesced read: locally small enough that a run's records are still in
#: cache when they are decoded, on an object store large enough to amortise a request.
_RUN_MAX_LOCAL = 1 << 20
_RUN_MAX_REMOTE = 8 << 20
#: Entries per index file written by a sweep (index files stay well below 8 MiB).
_INDEX_ENTRIES_MAX = 100_000
#: Packs uploaded at once to an object store (each held in memory until it is stored).
_UPLOADS = 3
#: Reads of a book whose pack vanished (a concurrent gc) retried with a fresh index.
_READ_TRIES = 5
#: Client options obstore takes apart from the store's own configuration keys.
_CLIENT_OPTIONS = frozenset(
    {"allow_http", "allow_invalid_certificates", "timeout", "connect_timeout", "user_agent"}
)


#: ``memory://NAME/...`` stores of this process, by NAME (``memory:///`` is always new).
_MEMORY_STORES: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def make_backend(
    path_or_url: str | os.PathLike[str], fsync: bool = True, **options: Any
) -> tuple[Backend, str]:
    """(backend, display name) for a local path, a ``file://`` URL or an object-store URL.

    Object-store URLs go to ``obstore.store.from_url``; keyword ``options`` are its
    configuration (``endpoint``, ``access_key_id``, ``secret_access_key``, ``region``,
    ...; ``allow_http`` and the other client options are routed to ``client_options``),
    and obstore reads the standard environment variables (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``,
    ...) for whatever is not given. ``memory:///`` is a new, empty in-memory store;
    ``memory://NAME/prefix`` is one in-memory store per NAME for the whole process
    (so several objects of one process, threads included, share it: tests).
    """
    text = os.fspath(path_or_url)
    parts = urllib.parse.urlsplit(text) if "://" in text else None
    scheme = parts.scheme if parts is not None else ""
    if scheme in ("", "file"):
        if options:
            raise TypeError(f"a local pack store takes no options {sorted(options)}")
        path = urllib.parse.unquote(parts.path) if parts is not None else text
        return LocalBackend(path, fsync=fsync), Path(path).name
    obstore = import_obstore()
    if scheme == "memory":
        if options:
            raise TypeError(f"a memory store takes no options {sorted(options)}")
        assert parts is not None
        if not parts.netloc:
            return ObstoreBackend(obstore.store.MemoryStore(), parts.path), text
        with _MEMORY_LOCK:
            store = _MEMORY_STORES.setdefault(parts.netloc, obstore.store.MemoryStore())
        return ObstoreBackend(store, parts.path, f"memory://{parts.netloc}"), text
    client = dict(options.pop("client_options", None) or {})
    for key in list(options):
        if key in _CLIENT_OPTIONS:
            client[key] = options.pop(key)
    try:
        store = obstore.store.from_url(text, client_options=client or None, **options)
    except Exception as exc:
        raise StoreIOError("open", text, exc) from exc
    assert parts is not None
    endpoint = options.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL", "")
    return ObstoreBackend(store, identity=f"{scheme}://{parts.netloc} {endpoint}".strip()), text


@dataclass
class _View:
    """The store's index, as loaded: which index files, packs and entries are live.

    ``packs`` and ``loc`` (one entry object per book) are made on first use: reads look
    books up in ``located()``, arrays built straight from the index files' entry tables."""

    docs: dict[str, IndexDoc] = field(default_factory=dict)  # healthy index files
    mtimes: dict[str, float] = field(default_factory=dict)  # index id -> mtime
    damaged: dict[str, str] = field(default_factory=dict)  # index id -> reason
    live: list[str] = field(default_factory=list)  # index ids not superseded
    sizes: dict[str, int] = field(default_factory=dict)
    problems: list[StoreProblem] = field(default_factory=list)
    fallback: bool = False  # damaged index files: packs no index names were read directly
    # packs no index file names, found by reading their trailers (``fallback``)
    found: dict[str, list[Entry]] = field(default_factory=dict)
    # two-phase gc (object stores): tombstone files, and the books writers must not reuse
    # id -> (modification time, pack id -> tombstoned CIDs of that pack)
    tomb_files: dict[str, tuple[float, dict[str, tuple[CID, ...]]]] = field(default_factory=dict)
    tomb_damaged: dict[str, str] = field(default_factory=dict)
    tombs: dict[CID, float] = field(default_factory=dict)  # every copy tombstoned -> when
    table: _Table | None = None  # ``loc`` as sorted arrays, built on first use
    _keys: set[bytes] | None = None  # the CIDs of ``loc`` as bytes, built on first use
    _packs: dict[str, dict[CID, Entry]] | None = None
    _loc: dict[CID, tuple[str, Entry]] | None = None

    @property
    def names(self) -> set[str]:
        return set(self.docs) | set(self.damaged)

    @property
    def packs(self) -> dict[str, dict[CID, Entry]]:
        """pack id -> CID -> entry, each pack's entries by offset."""
        if self._packs is None:
            self._entries()
        assert self._packs is not None
        return self._packs

    @property
    def loc(self) -> dict[CID, tuple[str, Entry]]:
        """CID -> (pack id, entry): where each book is read from (the first pack by id
        that holds it)."""
        if self._loc is None:
            self._entries()
        assert self._loc is not None
        return self._loc

    def _entries(self) -> None:
        """``packs`` and ``loc`` from the live index files (the first one naming a book
        in a pack gives its entry there) and the packs found by their trailers."""
        packs: dict[str, dict[CID, Entry]] = {}
        for ident in self.live:
            for p in self.docs[ident].packs:
                entries = packs.setdefault(p.id, {})
                for e in p.entries:
                    entries.setdefault(e.cid, e)
        for pid, found in self.found.items():
            packs[pid] = {e.cid: e for e in found}
        loc: dict[CID, tuple[str, Entry]] = {}
        for pid in sorted(packs):
            entries = packs[pid]
            packs[pid] = dict(sorted(entries.items(), key=lambda kv: kv[1].offset))
            for cid, e in packs[pid].items():
                loc.setdefault(cid, (pid, e))
        self._packs, self._loc = packs, loc

    def stored_keys(self) -> set[bytes]:
        """The 40 bytes of every CID in ``loc`` (a writer's membership test; cheaper to make
        than ``loc``, which has an entry object per book)."""
        if self._keys is None:
            if self._loc is not None:
                self._keys = {cid.raw for cid in self._loc}
            else:
                self._keys = _row_keys(self.located().rows)
        return self._keys

    def extended(self, ident: str, packs: Sequence[PackRef]) -> _View:
        """A new view: this one plus the index file ``ident`` naming ``packs`` (just
        written). A new object, not this one changed: a reader still building a cache of
        this view (``table``, ``stored_keys``, ``loc``) keeps it to itself."""
        new = dataclasses.replace(
            self,
            docs={**self.docs, ident: IndexDoc(tuple(packs), ())},
            mtimes={**self.mtimes, ident: time.time()},
            live=[*self.live, ident],
            sizes={**self.sizes, **{p.id: p.size for p in packs}},
            tombs=dict(self.tombs),
            table=None,
            _keys=None,
            _packs=None,
            _loc=None,
        )
        keys = self._keys
        if keys is not None:  # kept up to date: cheaper than making it again
            new._keys = keys.union(*(_row_keys(p.rows()) for p in packs))
        if new.tombs:
            for p in packs:
                for e in p.entries:
                    new.tombs.pop(e.cid, None)  # a copy newer than its tombstone
        return new

    def located(self) -> _Table:
        """Where each book is, as sorted arrays (built once per view; a write that extends
        the view drops them)."""
        if self.table is None:
            if self._loc is None and not self.found:
                self.table = _Table.of_docs([self.docs[i] for i in self.live])
            else:
                self.table = _Table.of(self.loc)
        return self.table

    def where(self, cid: CID) -> tuple[str, Entry] | None:
        """``loc.get(cid)``, from the arrays while ``loc`` is not made."""
        if self._loc is not None:
            return self._loc.get(cid)
        table = self.located()
        k = table.find(np.frombuffer(cid.raw, np.uint8).reshape(1, CID_LEN))
        if k is None:
            return None
        i = int(k[0])
        return table.pids[table.pack[i]], Entry(cid, int(table.offset[i]), int(table.length[i]))


@dataclass(frozen=True)
class _Table:
    """Where each book is, as arrays sorted by the first 8 digest bytes of its CID (a
    digest is uniformly random: sorting and searching 64-bit keys is much faster than
    40-byte strings); CIDs that share those bytes are told apart by their whole rows."""

    key: np.ndarray  # uint64, sorted
    rows: np.ndarray  # the 40-byte CIDs, N x 40 uint8
    pack: np.ndarray  # index into ``pids``
    offset: np.ndarray
    length: np.ndarray
    pids: list[str]

    @classmethod
    def of(cls, loc: dict[CID, tuple[str, Entry]]) -> _Table:
        pids = sorted({pid for pid, _ in loc.values()})
        number = {pid: k for k, pid in enumerate(pids)}
        n = len(loc)
        rows = np.frombuffer(b"".join([c.raw for c in loc]), np.uint8).reshape(-1, CID_LEN)
        pack = np.fromiter((number[pid] for pid, _ in loc.values()), np.int64, n)
        offset = np.fromiter((e.offset for _, e in loc.values()), np.int64, n)
        length = np.fromiter((e.length for _, e in loc.values()), np.int64, n)
        key = _key(rows)
        order = np.argsort(key, kind="stable")
        return cls(key[order], rows[order], pack[order], offset[order], length[order], pids)

    @classmethod
    def of_docs(cls, docs: list[IndexDoc]) -> _Table:
        """As :meth:`of` of the ``loc`` these index files give (in the order given), from
        their entry tables: per CID the first pack by id, in it the first file's entry."""
        refs = [p for doc in docs for p in doc.packs]
        pids = sorted({p.id for p in refs})
        number = {pid: k for k, pid in enumerate(pids)}
        tables = [p.rows() for p in refs]
        table = np.concatenate(tables) if tables else np.empty((0, ENTRY_LEN), np.uint8)
        fields = table.view(_ENTRY_ROW).reshape(-1)
        rows = np.ascontiguousarray(table[:, :CID_LEN])
        pack = np.repeat(np.array([number[p.id] for p in refs], np.int64), [len(t) for t in tables])
        key = _key(rows)
        rank = np.arange(len(rows))  # files in order, each file's packs and entries in order
        order = np.lexsort((rank, pack, key))
        key, rows = key[order], rows[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        same = np.zeros(len(key), bool)
        same[1:] = (rows[1:] == rows[:-1]).all(axis=1)
        for j in np.flatnonzero(~first & ~same).tolist():  # another CID with the same key
            start = j
            while start and key[start - 1] == key[j]:
                start -= 1
            if not any((rows[k] == rows[j]).all() for k in range(start, j)):
                first[j] = True
        pick = order[first]
        return cls(
            key[first],
            rows[first],
            pack[pick],
            fields["offset"][pick].astype(np.int64),
            fields["length"][pick].astype(np.int64),
            pids,
        )

    def _positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of the N x 40 CID ``rows``: its position in the arrays, and whether
        it is there (a CID after another that shares its key is found by a short scan)."""
        want = _key(rows)
        pos = np.searchsorted(self.key, want)
        np.minimum(pos, len(self.key) - 1, out=pos)
        hit = (self.rows[pos] == rows).all(axis=1)
        for i in np.flatnonzero(~hit & (self.key[pos] == want)).tolist():
            k = int(pos[i]) + 1
            while k < len(self.key) and self.key[k] == want[i]:
                if (self.rows[k] == rows[i]).all():
                    pos[i], hit[i] = k, True
                    break
                k += 1
        return pos, hit

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """Whether each of the N x 40 CID ``rows`` is in the arrays (a bool per row)."""
        if not len(self.key):
            return np.zeros(len(rows), bool)
        return self._positions(rows)[1]

    def find(self, rows: np.ndarray) -> np.ndarray | None:
        """Each row's position in the arrays, or None when one is not there."""
        if not len(self.key):
            return None
        pos, hit = self._positions(rows)
        return pos if hit.all() else None


def _row_bytes(rows: np.ndarray) -> list[bytes]:
    """The CIDs of N x 40 rows (or the first 40 bytes of wider rows) as 40-byte strings."""
    flat = np.ascontiguousarray(rows[:, :CID_LEN]).tobytes()
    return [flat[i : i + CID_LEN] for i in range(0, len(flat), CID_LEN)]


def _row_keys(rows: np.ndarray) -> set[bytes]:
    """The N x 40 CID rows as a set of 40-byte strings."""
    return set(_row_bytes(rows))


def _key(rows: np.ndarray) -> np.ndarray:
    """The first 8 digest bytes (bytes 8..15) of each CID row, as uint64."""
    return np.ascontiguousarray(rows[:, 8:16]).view(">u8").reshape(-1).astype(np.uint64)


class PackStore(BookStore):
    """Books packed into ~16 MiB pack files plus index files, locally or on an object store.

    ``path_or_url``: a directory (created if missing), ``file://...``, or any URL obstore
    speaks (``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://``; extra ``s3``);
    ``options`` configure the object store (see :func:`make_backend`). ``level``: zstd
    level of new books (recorded per book, never part of a CID; default
    ``DEFAULT_LEVEL``). ``target_pack_size``: bytes after which a pack is closed (a
    parameter, not format; 4-128 MiB is sensible).
    ``max_unused`` / ``small_pack_size``: gc repacks a pack whose unused share exceeds
    the first and merges packs smaller than the second (default a quarter of the target).
    ``fsync=False`` skips every fsync of a local store (scratch stores only). ``workers``
    threads compress books and read packs. ``path_or_url`` may also be a backend
    (``_backends.Backend``): a Lab on an object store keeps its books under ``cas/``.

    A ``put`` outside ``batch()`` writes a pack and an index file of its own, durably.
    ``delete`` rewrites the index at once and must not race another writer of the same
    store. ``sweep`` (gc) does too on a local store, where a Lab holds its data-directory
    lock; with ``two_phase`` (the default on object stores, which have no lock) it first
    records tombstones and removes a book only after it has been tombstoned for the grace
    period, while writers treat tombstoned books as absent (docs/FORMAT.md §4.4).
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str] | Backend,
        level: int = DEFAULT_LEVEL,
        *,
        target_pack_size: int = DEFAULT_TARGET_PACK_SIZE,
        max_unused: float = 0.05,
        small_pack_size: int | None = None,
        fsync: bool = True,
        workers: int = 2,
        two_phase: bool | None = None,
        **options: Any,
    ) -> None:
        codec = BookCodec(level)  # checks the level
        if not isinstance(target_pack_size, int) or target_pack_size < 1:
            raise ValueError(f"target_pack_size must be a positive int, got {target_pack_size!r}")
        if not 0.0 <= max_unused < 1.0:
            raise ValueError(f"max_unused must be in [0, 1), got {max_unused!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        unmarked = options.pop("_unmarked", False)  # a conversion writes the marker last
        if isinstance(path_or_url, Backend):
            if options:
                raise TypeError(f"a store on a given backend takes no options {sorted(options)}")
            self._backend = path_or_url
            self._name = self.location = getattr(path_or_url, "name", type(path_or_url).__name__)
        else:
            self._backend, self._name = make_backend(path_or_url, fsync=fsync, **options)
            self.location = os.fspath(path_or_url)
        self.level = level
        self._codec = codec
        self.target_pack_size = target_pack_size
        self.max_unused = max_unused
        self.small_pack_size = (
            target_pack_size // 4 if small_pack_size is None else int(small_pack_size)
        )
        self._workers = workers
        # reads from an object store wait on the network more than on the CPU
        local = isinstance(self._backend, LocalBackend)
        self._readers = workers if local else max(workers, 4)
        self.two_phase = (not local) if two_phase is None else bool(two_phase)
        self._run_max = _RUN_MAX_LOCAL if local else _RUN_MAX_REMOTE
        self._lock = threading.RLock()
        self._batch: PackBatch | None = None
        self._view = _View()
        self._pack_mtimes: dict[str, float] | None = None
        if not unmarked:
            self._init_layout()
        if isinstance(self._backend, LocalBackend):
            self._backend.sweep_temp(DEFAULT_GC_GRACE_S)
        self._refresh(force=True)

    # --- layout ------------------------------------------------------------------------
    def _init_layout(self) -> None:
        b = self._backend
        try:
            text = b.read(FORMAT_FILE).decode("utf-8", "replace")
        except Missing:
            text = None
        if text is None:
            if isinstance(b, LocalBackend):
                if b.exists_dir("books"):
                    raise ContentError(
                        f"{self._name} holds book files but no {FORMAT_FILE}: not a pack store"
                    )
                b.ensure_dir("")
            b.put_replace(FORMAT_FILE, FORMAT_TEXT.encode())
            return
        if text != FORMAT_TEXT:
            hint = (
                " (a directory store: open it with DirStore or open_store, or convert it "
                "with `oluo-lab repack`)"
                if text == "oluo-cas 1\n"
                else ""
            )
            raise ContentError(
                f"{FORMAT_FILE} says {text!r}; a PackStore reads {FORMAT_TEXT!r}{hint}"
            )

    @property
    def backend(self) -> Backend:
        """Where the files live (the seam a commit protocol on object stores builds on)."""
        return self._backend

    # --- the index -----------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        """Load index files (and, two-phase, tombstone files) written or removed since the
        last look (by any writer)."""
        with self._lock:
            listing = {}
            for info in self._backend.list(INDEX_DIR):
                ident = parse_key(info.name, INDEX_SUFFIX)
                if ident is not None:
                    listing[ident] = info.mtime
            tombs = {}
            if self.two_phase:
                for info in self._backend.list(TOMB_DIR):
                    ident = parse_key(info.name, TOMB_SUFFIX)
                    if ident is not None:
                        tombs[ident] = info.mtime
            old = self._view
            known_tombs = set(old.tomb_files) | set(old.tomb_damaged)
            if not force and set(listing) == old.names and set(tombs) == known_tombs:
                return
            view = _View()
            self._load_tombstones(view, old, tombs)
            for ident, mtime in listing.items():
                view.mtimes[ident] = mtime
                if ident in old.docs:
                    view.docs[ident] = old.docs[ident]
                    continue
                key = index_key(ident)
                try:
                    data = self._backend.read(key)
                    if file_id(data) != ident:
                        raise CorruptStoreFile(key, "content does not match its name")
                    view.docs[ident] = decode_index(key, data)
                except Missing:  # removed since the listing (a concurrent gc)
                    view.mtimes.pop(ident)
                except CorruptStoreFile as exc:
                    view.damaged[ident] = exc.reason
            self._rebuild(view)
            self._view = view
            self._pack_mtimes = None

    def _load_tombstones(self, view: _View, old: _View, listing: dict[str, float]) -> None:
        """Decode the tombstone files in ``listing`` (id -> modification time)."""
        for ident, mtime in listing.items():
            if ident in old.tomb_files:
                view.tomb_files[ident] = (mtime, old.tomb_files[ident][1])
                continue
            key = tomb_key(ident)
            try:
                data = self._backend.read(key)
                if file_id(data) != ident:
                    raise CorruptStoreFile(key, "content does not match its name")
                view.tomb_files[ident] = (mtime, decode_tombstones(key, data))
            except Missing:  # removed since the listing (a gc resolved it)
                continue
            except CorruptStoreFile as exc:
                view.tomb_damaged[ident] = exc.reason

    def _effective_tombs(self, view: _View) -> None:
        """The books writers must not reuse: those whose every indexed copy a live
        tombstone file names (a copy in any other pack, written since by a writer that
        put it again, revives the book). Each maps to its latest tombstone's time."""
        when: dict[tuple[str, CID], float] = {}
        for mtime, packs in view.tomb_files.values():
            for pid, cids in packs.items():
                for cid in cids:
                    key = (pid, cid)
                    when[key] = min(mtime, when.get(key, math.inf))
        if not when:
            return
        named = {cid for _, cid in when}
        holders: dict[CID, list[str]] = {}
        for pid, entries in view.packs.items():
            for cid in entries:
                if cid in named:
                    holders.setdefault(cid, []).append(pid)
        for cid, pids in holders.items():
            times = [when.get((pid, cid)) for pid in pids]
            if all(t is not None for t in times):
                view.tombs[cid] = max(t for t in times if t is not None)

    def _rebuild(self, view: _View) -> None:
        superseded = {s for doc in view.docs.values() for s in doc.supersedes}
        view.live = sorted(i for i in view.docs if i not in superseded)
        for ident in view.live:
            for p in view.docs[ident].packs:
                known = view.sizes.setdefault(p.id, p.size)
                if known != p.size:
                    view.problems.append(
                        StoreProblem(
                            index_key(ident), f"names pack {p.id} with size {p.size}, not {known}"
                        )
                    )
        for ident, reason in sorted(view.damaged.items()):
            if ident not in superseded:
                view.problems.append(StoreProblem(index_key(ident), reason))
                view.fallback = True
        if view.fallback:  # the damaged files' packs are found by reading the orphans' trailers
            indexed = set(view.sizes)
            for pid, size, entries in self._unreferenced_trailers(indexed):
                if isinstance(entries, Exception):
                    view.problems.append(StoreProblem(pack_key(pid), str(entries)))
                    continue
                view.sizes[pid] = size
                view.found[pid] = entries
        for ident, reason in sorted(view.tomb_damaged.items()):
            view.problems.append(StoreProblem(tomb_key(ident), reason))
        self._effective_tombs(view)

    def _read_trailer(self, pid: str, size: int) -> list[Entry]:
        key = pack_key(pid)
        if size < len(PACK_HEADER) + FOOTER_LEN:
            raise CorruptStoreFile(key, f"a pack of {size} bytes has no trailer")
        tail = self._backend.read_ranges(key, [size - FOOTER_LEN], [FOOTER_LEN])[0]
        _, _, trailer_len = parse_footer(key, bytes(tail), size)
        trailer = self._backend.read_ranges(key, [size - trailer_len], [trailer_len])[0]
        return decode_trailer(key, bytes(trailer), size)

    def _unreferenced_trailers(
        self, referenced: set[str]
    ) -> Iterator[tuple[str, int, list[Entry] | Exception]]:
        """(pack id, size, entries, or the error reading them) of every pack not in
        ``referenced``, by id."""
        for info in self._backend.list(PACK_DIR):
            pid = parse_key(info.name, PACK_SUFFIX)
            if pid is None or pid in referenced:
                continue
            try:
                yield pid, info.size, self._read_trailer(pid, info.size)
            except (CorruptStoreFile, Missing) as exc:
                yield pid, info.size, exc

    def _pack_mtime(self, pid: str) -> float:
        if self._pack_mtimes is None or pid not in self._pack_mtimes:
            self._pack_mtimes = {
                p: info.mtime
                for info in self._backend.list(PACK_DIR)
                if (p := parse_key(info.name, PACK_SUFFIX)) is not None
            }
        return self._pack_mtimes.get(pid, 0.0)

    def _add_index(
        self, packs: Sequence[PackRef], supersedes: Iterable[str] = (), avoid: Iterable[str] = ()
    ) -> str:
        """Write an index file naming ``packs`` (already durable); returns its id.

        Names are content hashes, so the same content written again after a sweep would
        get the name of a file a live index supersedes, and be ignored: the ``salt`` then
        gives it a fresh name. ``avoid``: further names it must not take (the files a
        sweep's last index file will supersede)."""
        supersedes = tuple(supersedes)
        self._refresh()
        hidden = {s for doc in self._view.docs.values() for s in doc.supersedes}
        hidden.update(avoid)
        salt = 0
        while True:
            data = encode_index(packs, supersedes, salt)
            ident = file_id(data)
            if ident not in hidden:
                break
            salt += 1
        self._backend.put_create(index_key(ident), data)
        return ident

    # --- codecs --------------------------------------------------------------------------
    def _encode_group(self, group: list[tuple[CID, Buffer]]) -> list[tuple[CID, bytes, Buffer]]:
        return [(cid, *self._codec.encode(data)) for cid, data in group]

    def _decode(self, cid: CID, record: Buffer) -> Buffer:
        """The book bytes of a stored record (CorruptBook names the CID)."""
        if len(record) < HEADER_LEN:
            raise CorruptBook(cid, f"record of {len(record)} bytes is shorter than the header")
        mv = memoryview(record)
        return self._codec.decode(cid, bytes(mv[:HEADER_LEN]), mv[HEADER_LEN:])

    # --- writing -------------------------------------------------------------------------
    def _store(self, cid: CID, data: Buffer) -> None:
        batch = self._batch
        if (batch is not None and cid in batch) or self._reusable_now(cid):
            return
        if batch is None:
            with self.batch():
                self._store(cid, data)
            return
        batch.add(cid, self._owned(batch, cid, data))

    def _owned(self, batch: PackBatch, cid: CID, data: Buffer) -> Buffer:
        """``data`` as bytes the batch may keep (the caller may reuse a mutable buffer once
        put returns); a book put again after a tombstone is marked for a unique pack."""
        if not isinstance(data, bytes) and not (
            isinstance(data, memoryview) and isinstance(data.obj, bytes)
        ):
            data = bytes(data)
        if cid in self._view.tombs:
            batch.renewed.add(cid.raw)
        return data

    def put_many(self, chunks: Iterable[Buffer], *, raw: bool = False) -> list[CID]:
        """:meth:`put` each chunk (one batch, the books queued together); their CIDs.
        ``raw=True``: store them as raw records, no zstd attempt (see ``BookStore``)."""
        out: list[CID] = []
        with self.batch():
            batch = self._batch
            assert batch is not None
            todo: list[tuple[CID, Buffer]] = []
            queued = 0
            new: set[CID] = set()
            for data in chunks:
                if len(data) > MAX_BOOK_SIZE:
                    raise BookTooLarge(
                        f"book of {len(data)} bytes exceeds MAX_BOOK_SIZE {MAX_BOOK_SIZE}"
                    )
                cid = CID.for_book(data)
                out.append(cid)
                if cid in new or cid in batch or self._reusable_now(cid):
                    continue
                data = self._owned(batch, cid, data)
                new.add(cid)
                todo.append((cid, data))
                queued += len(data)
                if queued >= GROUP_BYTES:  # hand over often: the batch bounds its memory
                    batch.add_many(todo, raw=raw)
                    todo, queued = [], 0
            batch.add_many(todo, raw=raw)
        return out

    def put_pages(self, data: Buffer, page_size: int, *, raw: bool = False) -> np.ndarray:
        """:meth:`BookStore.put_pages`; with ``raw``, the whole pages go into packs as a
        table: hashed one by one, looked up and recorded with numpy, no CID object each."""
        mv = memoryview(data).cast("B")
        full = len(mv) // page_size if 0 < page_size <= MAX_BOOK_SIZE else 0
        if not raw or full < 2:
            return super().put_pages(data, page_size, raw=raw)
        with self.batch():
            batch = self._batch
            assert batch is not None
            # a tombstoned book is still located but must be put again (renewed)
            tombs = {c.raw for c in self._view.tombs}
            out = np.empty((-(-len(mv) // page_size), CID_LEN), np.uint8)
            stored = self._view.located()
            pages = np.frombuffer(mv[: full * page_size], np.uint8).reshape(full, page_size)
            step = max(1, GROUP_BYTES // page_size)
            seen: set[bytes] = set()
            for a in range(0, full, step):
                b = min(full, a + step)
                digests = [
                    blake3.blake3(mv[i * page_size : (i + 1) * page_size]).digest()
                    for i in range(a, b)
                ]
                rows = out[a:b]
                rows[:] = book_rows(b"".join(digests), page_size)
                keys = _row_bytes(rows)
                there = stored.contains(rows).tolist()
                pick = []
                for j, key in enumerate(keys):
                    if (there[j] and key not in tombs) or key in seen or batch.holds(key):
                        continue
                    seen.add(key)
                    pick.append(j)
                    if key in tombs:
                        batch.renewed.add(key)
                if not pick:
                    continue
                records = np.empty((len(pick), HEADER_LEN + page_size), np.uint8)
                records[:, :HEADER_LEN] = np.frombuffer(RAW_HEADER, np.uint8)
                records[:, HEADER_LEN:] = pages[np.add(pick, a)]
                batch.add_table([keys[j] for j in pick], rows[pick], records)
            if len(out) > full:
                [tail] = self.put_many([mv[full * page_size :]], raw=raw)
                out[full] = np.frombuffer(tail.raw, np.uint8)
        return out

    @contextlib.contextmanager
    def batch(self) -> Iterator[PackStore]:
        """Write many books into packs with one index file at the end (see ``PackBatch``).

        Books put inside the block are readable at once and durable, with the index file
        naming them, when it exits normally; if the block raises, none is stored (packs
        already written stay as unreferenced files until gc). Nested blocks join the outer.

        The batch belongs to this store object, not to a thread: while it is open, puts
        from any thread join it (the index encoder's worker threads rely on this), so
        independent writers in several threads each open their own store object.
        """
        if self._batch is not None:
            yield self
            return
        self._refresh()  # dedup against what the store holds now, not a stale view
        self._batch = self._new_batch()
        ok = False
        try:
            yield self
            ok = True
        finally:
            batch, self._batch = self._batch, None
            packs = batch.close(commit=ok)
            if packs:
                with self._lock:
                    ident = self._add_index(packs)
                    self._view = self._view.extended(ident, packs)

    def _new_batch(self) -> PackBatch:
        # local packs: one fsync at a time is all the disk wants; uploads overlap
        publishers = 1 if isinstance(self._backend, LocalBackend) else _UPLOADS
        return PackBatch(
            self._backend,
            self._encode_group,
            workers=self._workers,
            target_pack_size=self.target_pack_size,
            publishers=publishers,
        )

    def add_records(self, records: Iterable[tuple[CID, Buffer]]) -> None:
        """Store books given as their stored records (header + payload), copied verbatim
        after checking that each decodes to its CID; for conversion and repacking."""
        with self.batch():
            batch = self._batch
            assert batch is not None
            for cid, record in records:
                if cid in batch or self._reusable_now(cid):
                    continue
                verify_book(cid, self._decode(cid, record))
                if cid in self._view.tombs:
                    batch.renewed.add(cid.raw)
                batch.add_record(cid, bytes(record))

    # --- reading -------------------------------------------------------------------------
    def _locate(self, cid: CID) -> tuple[str, Entry]:
        loc = self._view.where(cid)
        if loc is None:
            self._refresh()
            loc = self._view.where(cid)
            if loc is None:
                raise BookNotFound(cid)
        return loc

    def locate(self, cid: CID) -> tuple[str, int, int]:
        """Where a book's record is: (pack file name relative to the store, byte offset,
        length). BookNotFound if the store does not hold it."""
        if not isinstance(cid, CID):
            raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
        pid, e = self._locate(cid)
        return pack_key(pid), e.offset, e.length

    def _read_record(self, pid: str, e: Entry) -> Buffer:
        rec = self._backend.read_ranges(pack_key(pid), [e.offset], [e.length])[0]
        if len(rec) != e.length:
            raise CorruptBook(e.cid, f"pack {pid} ends inside the record")
        return rec

    def _load(self, cid: CID) -> Buffer:
        batch = self._batch
        if batch is not None and cid in batch:
            return self._decode(cid, batch.record(cid))
        for _ in range(_READ_TRIES):
            pid, e = self._locate(cid)
            try:
                return self._decode(cid, self._read_record(pid, e))
            except Missing:  # a gc elsewhere repacked it: the index has moved on
                self._refresh(force=True)
        raise BookNotFound(cid, f"its pack {pid} is missing")

    def get_many(self, cids: Iterable[CID]) -> Iterator[bytes]:
        """Verified bytes of each CID in order, a few books ahead on worker threads."""
        return prefetch_get_many(self.get, cids, self._readers)

    def get_many_into(self, items: Iterable[tuple[CID, memoryview]]) -> None:
        """Fill the buffers: books grouped by pack, neighbouring records read together
        (one ranged read, or one ``preadv`` straight into the buffers for a local pack),
        on ``workers`` threads. The first failing book in ``items`` order is reported."""
        todo = list(items)
        for cid, out in todo:
            if not isinstance(cid, CID):
                raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
            if len(out) != cid.size:
                raise ValueError(f"buffer of {len(out)} B for a {cid.size} B book")
        errors: dict[int, BaseException] = {}
        # pack -> (offset, CID bytes) -> (entry, the (item index, buffer) pairs that want
        # it); never by offset alone: each book is verified against its own CID
        by_pack: dict[str, dict[tuple[int, bytes], tuple[Entry, list[tuple[int, memoryview]]]]] = {}
        batch = self._batch
        where = self._view.where
        for i, (cid, out) in enumerate(todo):
            try:
                if batch is not None and cid in batch:
                    out[:] = self.get(cid)
                    continue
                pid, e = where(cid) or self._locate(cid)
            except ContentError as exc:
                errors[i] = exc
                continue
            records = by_pack.get(pid)
            if records is None:
                records = by_pack[pid] = {}
            key = (e.offset, cid.raw)
            wanted = records.get(key)
            if wanted is None:
                records[key] = (e, [(i, out)])
            else:
                wanted[1].append((i, out))
        runs = [
            (pid, run)
            for pid, records in by_pack.items()
            for run in _runs(sorted(records.values(), key=lambda r: r[0].offset), self._run_max)
        ]
        if len(runs) <= 1 or self._readers == 1:
            for pid, run in runs:
                self._fill_run(pid, run, errors)
        else:
            with ThreadPoolExecutor(self._readers, thread_name_prefix="oluo-pack-read") as pool:
                for fut in [pool.submit(self._fill_run, pid, run, errors) for pid, run in runs]:
                    fut.result()
        if errors:
            raise errors[min(errors)]

    def get_concat_into(self, cids: Any, out: memoryview) -> None:
        """:meth:`BookStore.get_concat_into` with arrays: the books are looked up, grouped
        by pack and sorted by offset all at once, each run of neighbouring records is
        read with one read into a reused buffer (one ranged read on an object store) and
        its records are decoded and verified on ``workers`` threads, a raw one copied
        straight to its place in ``out``. Books in an open batch, books this view lacks
        and a pack that vanished fall back to the book-by-book path, which errs alike."""
        rows, starts, sizes = concat_plan(cids, out)
        table = self._view.located()  # one table: positions index this one only
        pos = table.find(rows) if self._batch is None else None
        if pos is None:
            super().get_concat_into(rows, out)
            return
        pack, offset = table.pack[pos], table.offset[pos]
        # records by pack and offset; one CID asked twice is one record, read for the
        # first asker (the stable sort keeps the askers in order)
        order = np.lexsort((pos, offset, pack))
        first = np.ones(len(order), bool)
        first[1:] = pos[order[1:]] != pos[order[:-1]]
        item = order[first]
        copies = order[~first], item[np.cumsum(first)[~first] - 1]
        pack, offset = pack[item], offset[item]
        end = offset + table.length[pos[item]]
        brk = np.ones(len(item), bool)
        gap = offset[1:] - end[:-1]
        brk[1:] = (pack[1:] != pack[:-1]) | (gap < 0) | (gap > COALESCE_GAP)
        bounds = []
        run_start = 0
        for k, (b, o, e) in enumerate(
            zip(brk.tolist(), offset.tolist(), end.tolist(), strict=True)
        ):
            if b or e - run_start > self._run_max:
                bounds.append(k)
                run_start = o
        bounds.append(len(item))
        recs = _Records(
            rows.tobytes(),
            item.tolist(),
            offset.tolist(),
            (end - offset).tolist(),
            starts[item].tolist(),
            sizes[item].tolist(),
            memoryview(out).cast("B"),
        )
        runs = [
            (table.pids[int(pack[a])], a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        errors: dict[int, BaseException] = {}
        try:
            if len(runs) <= 1 or self._readers == 1:
                for pid, a, b in runs:
                    self._fill_records(pid, recs, a, b, errors)
            else:
                with ThreadPoolExecutor(self._readers, thread_name_prefix="oluo-pack-read") as pool:
                    futs = [
                        pool.submit(self._fill_records, pid, recs, a, b, errors)
                        for pid, a, b in runs
                    ]
                    for fut in futs:
                        fut.result()
            mv = recs.out
            for i, src in zip(*(c.tolist() for c in copies), strict=True):
                if src in errors:
                    errors[i] = errors[src]
                else:
                    p, q, n = int(starts[i]), int(starts[src]), int(sizes[i])
                    mv[p : p + n] = mv[q : q + n]
        finally:
            recs.out.release()
        if errors:
            raise errors[min(errors)]

    def _fill_records(
        self, pid: str, recs: _Records, a: int, b: int, errors: dict[int, BaseException]
    ) -> None:
        """Read records ``a:b`` of ``recs`` (one run of pack ``pid``) and decode each into
        its place in ``recs.out``."""
        start = recs.offset[a]
        span = max(recs.offset[k] + recs.length[k] for k in range(a, b)) - start
        key = pack_key(pid)
        try:
            if self._backend.scatter:
                buf = _read_buffer(span)
                got = self._backend.read_scatter(key, start, [buf])
                data = memoryview(buf)
            else:
                [raw] = self._backend.read_ranges(key, [start], [span])
                data = memoryview(raw)
                got = len(data)
        except Missing:  # the view may be stale: look again, book by book
            for k in range(a, b):
                i = recs.item[k]
                try:
                    self.get_into(recs.cid(i), recs.dest(k))
                except ContentError as exc:
                    errors[i] = exc
            return
        out = recs.out
        cids = recs.cids
        for k in range(a, b):
            i = recs.item[k]
            o = recs.offset[k] - start
            n = recs.length[k]
            p = recs.start[k]
            size = recs.size[k]
            try:
                if o + n > got:
                    raise CorruptBook(recs.cid(i), f"pack {pid} ends inside the record")
                if n == HEADER_LEN + size and data[o : o + HEADER_LEN] == RAW_HEADER:
                    dest = out[p : p + size]
                    dest[:] = data[o + HEADER_LEN : o + n]
                    d = 40 * i + 8
                    if blake3.blake3(dest).digest() != cids[d : d + 32]:
                        verify_book(recs.cid(i), dest)
                else:
                    cid = recs.cid(i)
                    book = self._decode(cid, data[o : o + n])
                    verify_book(cid, book)
                    out[p : p + size] = book
            except ContentError as exc:
                errors[i] = exc

    def _fill_run(
        self,
        pid: str,
        run: list[tuple[Entry, list[tuple[int, memoryview]]]],
        errors: dict[int, BaseException],
    ) -> None:
        """Read one run of records of pack ``pid`` and decode each into its buffers."""
        try:
            records = self._read_run(pid, run)
        except Missing:
            for e, outs in run:  # the view may be stale: look again, book by book
                for i, out in outs:
                    try:
                        out[:] = self.get(e.cid)
                    except ContentError as exc:
                        errors[i] = exc
            return
        for (e, outs), rec in zip(run, records, strict=True):
            first_i, first = outs[0]
            try:
                if rec is None:  # read straight into the first buffer (a raw record)
                    verify_book(e.cid, first)
                else:
                    if len(rec) != e.length:
                        raise CorruptBook(e.cid, f"pack {pid} ends inside the record")
                    data = self._decode(e.cid, rec)
                    verify_book(e.cid, data)
                    first[:] = data
            except ContentError as exc:
                for i, _ in outs:
                    errors[i] = exc
                continue
            for _, out in outs[1:]:
                out[:] = first

    def _read_run(
        self, pid: str, run: list[tuple[Entry, list[tuple[int, memoryview]]]]
    ) -> list[Buffer | None]:
        """Records of one run: ``None`` for a raw record read straight into its first
        buffer (local packs), else the record's bytes (object stores: slices of one ranged
        read of the run's span; a record the object cuts short comes back short)."""
        key = pack_key(pid)
        b = self._backend
        if not b.scatter:  # one range, the run's span: thousands of small ranges cost more
            start = run[0][0].offset
            [span] = b.read_ranges(key, [start], [max(e.end for e, _ in run) - start])
            mv = memoryview(span)
            return [mv[e.offset - start : e.end - start] for e, _ in run]
        start = run[0][0].offset
        bufs: list[Any] = []
        recs: list[Buffer | None] = []
        pos = start
        raw_heads: list[tuple[int, bytearray]] = []
        for k, (e, outs) in enumerate(run):
            if e.offset > pos:
                bufs.append(bytearray(e.offset - pos))
            if e.raw:
                head = bytearray(HEADER_LEN)
                bufs += [head, outs[0][1]]
                raw_heads.append((k, head))
                recs.append(None)
            else:
                rec = bytearray(e.length)
                bufs.append(rec)
                recs.append(rec)
            pos = e.end
        got = b.read_scatter(key, start, bufs)
        if got != pos - start:
            end = start + got
            for k, (e, _) in enumerate(run):
                if e.end > end:
                    recs[k] = b""  # short: reported as truncated
        for k, head in raw_heads:
            if recs[k] is None and bytes(head) != RAW_HEADER:
                e, outs = run[k]
                recs[k] = bytes(head) + bytes(outs[0][1])  # decode reports the bad header
        return recs

    def _has(self, cid: CID) -> bool:
        batch = self._batch
        if batch is not None and cid in batch:
            return True
        self._refresh()  # another process may have added or removed it
        return self._view.where(cid) is not None

    def _reusable_now(self, cid: CID) -> bool:
        """In the current view, and not tombstoned (a writer may name it without a put)."""
        return cid.raw in self._view.stored_keys() and cid not in self._view.tombs

    def reusable(self, cid: CID) -> bool:
        """Whether a writer may name ``cid`` without putting it again: stored, and not
        tombstoned by a two-phase gc (a tombstoned book is still readable, but only until
        its grace period ends; writers put it again instead)."""
        batch = self._batch
        if batch is not None and cid in batch:
            return True
        self._refresh()
        return self._reusable_now(cid)

    def tombstoned(self) -> frozenset[CID]:
        """Books a two-phase gc tombstoned and no later write revived (empty locally)."""
        with self._lock:
            self._refresh()
            return frozenset(self._view.tombs)

    def revive(self, cids: Iterable[CID]) -> int:
        """Copy the records of those ``cids`` that are tombstoned into a new pack (and
        index), so a gc's second phase no longer removes them: a writer calls this just
        before a ref names books it did not put itself. Returns how many were copied;
        BookNotFound when one is gone already (the commit must then be refused)."""
        with self._lock:
            if self._batch is not None:
                raise RuntimeError("revive inside a batch() block")
            self._refresh(force=True)
            view = self._view
            wanted = sorted(c for c in set(cids) if c in view.tombs)
            if not wanted:
                return 0
            by_pack: dict[str, list[Entry]] = {}
            for cid in wanted:
                pid, e = view.loc[cid]
                by_pack.setdefault(pid, []).append(e)
            runs = {pid: sorted(es, key=lambda e: e.offset) for pid, es in by_pack.items()}
            try:
                packs = self._repack(sorted(runs), runs, renew=True)
            except Missing as exc:
                raise BookNotFound(wanted[0], f"its pack {exc.key} was deleted by a gc") from None
            self._add_index(packs)
            self._refresh(force=True)
            return len(wanted)

    def _stat(self, cid: CID) -> tuple[int, float]:
        batch = self._batch
        if batch is not None and cid in batch:
            return len(batch.record(cid)), time.time()
        pid, e = self._locate(cid)
        return e.length, self._pack_mtime(pid)

    def _iter_unsorted(self) -> Iterable[CID]:
        self._refresh()
        self._pack_mtimes = None  # a scan (gc's) sees the packs' current times
        return list(self._view.loc)

    def __len__(self) -> int:
        self._refresh()
        return len(self._view.loc)

    def stats(self) -> StoreStats:
        """From the index: books, their logical bytes and their records' bytes."""
        self._refresh()
        loc = self._view.loc
        return StoreStats(
            books=len(loc),
            logical_bytes=sum(c.size for c in loc),
            stored_bytes=sum(e.length for _, e in loc.values()),
        )

    # --- deleting: delete, sweep ---------------------------------------------------------
    def _delete(self, cid: CID) -> None:
        with self._lock:
            self._refresh(force=True)
            if cid not in self._view.loc:
                raise BookNotFound(cid)
            self._sweep({cid}, math.inf, False, False, None)

    def sweep(
        self,
        doomed: Iterable[CID],
        grace_s: float = DEFAULT_GC_GRACE_S,
        dry_run: bool = False,
        bar: Any = None,
        keep: Collection[CID] | None = None,
    ) -> SweepReport:
        """gc's mark-then-repack: take ``doomed`` books out of the index, and clean packs.

        1. Packs with no live book are dropped. Packs whose unused share exceeds
           ``max_unused``, and packs smaller than ``small_pack_size`` when there are two or
           more to merge, have their live records copied verbatim (checked, never
           recompressed) into new packs, which are made durable.
        2. One new index (split into several files when large) names every live record and
           supersedes every index file read; then the superseded files are deleted.
        3. Packs no index names (dropped, repacked, crash leftovers) are deleted last, and
           only those older than ``grace_s``; younger ones wait for a later sweep.

        ``keep`` (gc passes every reachable book): an unreferenced pack holding one of
        these books that the index lacks (only a lost index file explains that) has those
        records copied into a new pack instead of being deleted, and an unreferenced pack
        whose trailer cannot be read is then never deleted. A crash at any step leaves a
        consistent store (at worst duplicate records, or files a later sweep removes).
        Doomed CIDs the store does not hold are ignored.
        """
        with self._lock:
            if self._batch is not None:
                raise RuntimeError("sweep inside a batch() block")
            self._refresh(force=True)
            if self.two_phase:
                return self._sweep_two_phase(set(doomed), grace_s, dry_run, bar, keep)
            return self._sweep(set(doomed), grace_s, dry_run, True, bar, keep)

    def _sweep_two_phase(
        self,
        doomed: set[CID],
        grace_s: float,
        dry_run: bool,
        bar: Any,
        keep: Collection[CID] | None,
    ) -> SweepReport:
        """gc without a lock (docs/FORMAT.md §4.4): phase 1 tombstones the doomed books
        not tombstoned yet (each copy: pack and CID); phase 2 removes those whose every
        copy was tombstoned at least ``grace_s`` ago and that are still doomed (a copy
        in another pack means a writer put the book again: revived), then deletes the
        tombstone files nothing pending is left in."""
        view = self._view
        doomed = {c for c in doomed if c in view.loc}
        now = time.time()
        tombs = view.tombs
        expired = {c for c in doomed if c in tombs and now - tombs[c] >= grace_s}
        # a tombstone stays while its book is unreachable (``keep``: every reachable book)
        unreached = doomed if keep is None else {c for c in tombs if c not in keep}
        pending = {c for c in tombs if c in unreached} - expired
        new = doomed - set(tombs)
        resolved = sorted(view.tomb_damaged) + sorted(
            ident
            for ident, (_, packs) in view.tomb_files.items()
            if not any(c in pending for cids in packs.values() for c in cids)
        )
        if dry_run:
            report = self._sweep(expired, grace_s, True, True, bar, keep, pending | new)
            return dataclasses.replace(report, tombstoned=len(new), pending=len(pending))
        if new:
            by_pack: dict[str, list[CID]] = {}
            for pid, entries in view.packs.items():
                for cid in entries:
                    if cid in new:
                        by_pack.setdefault(pid, []).append(cid)
            data = encode_tombstones(by_pack)
            self._backend.put_create(tomb_key(file_id(data)), data)
        report = self._sweep(expired, grace_s, False, True, bar, keep, pending | new)
        for ident in resolved:
            self._backend.delete(tomb_key(ident))
        if resolved:
            self._refresh(force=True)
        return dataclasses.replace(report, tombstoned=len(new), pending=len(pending))

    def _sweep(
        self,
        doomed: set[CID],
        grace_s: float,
        dry_run: bool,
        repack: bool,
        bar: Any,
        keep: Collection[CID] | None = None,
        hold: Collection[CID] = (),
    ) -> SweepReport:
        """The sweep itself: ``hold`` (tombstoned books waiting for their grace period)
        keeps every pack holding one of them as it is (a copy would revive them)."""
        view = self._view
        doomed = {c for c in doomed if c in view.loc}
        listing = {
            pid: info
            for info in self._backend.list(PACK_DIR)
            if (pid := parse_key(info.name, PACK_SUFFIX)) is not None
        }
        now = time.time()
        sizes = dict(view.sizes)
        live: dict[str, list[Entry]] = {
            pid: [e for e in entries.values() if e.cid not in doomed and view.loc[e.cid][0] == pid]
            for pid, entries in view.packs.items()
        }
        unreadable: set[str] = set()
        if keep is not None:  # rescue needed books only an unreferenced pack still holds
            for pid, size, entries in self._unreferenced_trailers(set(view.packs)):
                if isinstance(entries, Exception):
                    unreadable.add(pid)
                    continue
                rescue = [e for e in entries if e.cid in keep and e.cid not in view.loc]
                if rescue:
                    live[pid], sizes[pid] = rescue, size
        kept: dict[str, list[Entry]] = {}
        rewrite: list[str] = []
        small: list[str] = []
        for pid in sorted(live):
            entries = live[pid]
            if not entries:
                continue
            size = sizes[pid]
            used = sum(e.length for e in entries) + len(entries) * ENTRY_LEN
            unused = size - len(PACK_HEADER) - FOOTER_LEN - used
            if pid in view.packs and hold and any(c in hold for c in view.packs[pid]):
                kept[pid] = entries
            elif pid not in view.packs or (repack and unused > self.max_unused * size):
                rewrite.append(pid)
            elif repack and size < self.small_pack_size:
                small.append(pid)
            else:
                kept[pid] = entries
        if len(small) + len(rewrite) >= 2:
            rewrite += small
        else:
            kept.update((pid, live[pid]) for pid in small)
        rewrite.sort()
        unreferenced = [pid for pid in sorted(listing) if pid not in kept]
        old = [
            pid
            for pid in unreferenced
            if now - listing[pid].mtime >= grace_s and pid not in unreadable
        ]
        # damaged index files are superseded only once every pack's trailer was read
        superseded = sorted(view.names if self._fallback_complete() else set(view.docs))
        nothing_to_do = (
            not doomed
            and not rewrite
            and not old
            and not view.fallback
            and superseded == view.live
            and all(len(live[p]) == len(view.packs[p]) for p in kept)
        )
        rewrite_bytes = sum(e.length for p in rewrite for e in live[p])
        report = SweepReport(
            dry_run=dry_run,
            books=len(doomed),
            logical_bytes=sum(c.size for c in doomed),
            stored_bytes=sum(view.loc[c][1].length for c in doomed),
            packs_written=-(-rewrite_bytes // self.target_pack_size),
            packs_deleted=len(old),
            packs_young=len(unreferenced) - len(old),
            freed_bytes=sum(listing[p].size for p in old),
        )
        if dry_run or nothing_to_do:
            return report
        new_packs = self._repack(rewrite, live) if rewrite else []
        refs = [PackRef(pid, sizes[pid], tuple(kept[pid])) for pid in sorted(kept)]
        written = self._write_index(refs + new_packs, superseded)
        for ident in superseded:
            if ident not in written:
                self._backend.delete(index_key(ident))
                fault_point("sweep.index_deleted")
        if isinstance(self._backend, LocalBackend):
            self._backend.sync_dir(INDEX_DIR)
        self._refresh(force=True)  # also sees any index another writer added meanwhile
        protected = set(self._view.packs)
        deleted = [pid for pid in old if pid not in protected]
        for pid in deleted:
            self._backend.delete(pack_key(pid))
            fault_point("sweep.pack_deleted")
            if bar is not None:
                bar.update(1)
        if deleted and isinstance(self._backend, LocalBackend):
            self._backend.sync_dir(PACK_DIR)
        self._pack_mtimes = None
        return dataclasses.replace(
            report,
            packs_written=len(new_packs),
            packs_deleted=len(deleted),
            packs_young=len(unreferenced) - len(deleted),
            freed_bytes=sum(listing[p].size for p in deleted),
        )

    def recover(self) -> int:
        """Index the records of every unreferenced pack the index lacks (after an index
        file was lost or deleted by hand); returns how many books came back. Books nothing
        reaches are removed again by the next gc."""
        with self._lock:
            self._refresh(force=True)
            view = self._view
            found: list[PackRef] = []
            for pid, size, entries in self._unreferenced_trailers(set(view.packs)):
                if isinstance(entries, Exception):
                    continue
                new = tuple(e for e in entries if e.cid not in view.loc)
                if new:
                    found.append(PackRef(pid, size, new))
            if found:
                self._add_index(found)
                self._refresh(force=True)
            return sum(len(p.entries) for p in found)

    def _fallback_complete(self) -> bool:
        """Whether every pack could be read when damaged index files forced a trailer scan
        (only then may a new index supersede the damaged files)."""
        return not any(p.where.startswith(PACK_DIR + "/") for p in self._view.problems)

    def _repack(
        self, rewrite: list[str], live: dict[str, list[Entry]], renew: bool = False
    ) -> list[PackRef]:
        """Copy the live records of ``rewrite`` packs into new packs (durable on return);
        ``renew``: the copies revive tombstoned books (each such pack made unique). A
        damaged or missing pack stops it (CorruptBook, CorruptStoreFile): nothing is
        deleted then, and the new packs stay unreferenced."""
        batch = self._new_batch()
        if renew:
            batch.renewed.update(e.cid.raw for es in live.values() for e in es)
        ok = False
        try:
            for pid in rewrite:
                entries = live[pid]
                for run in _runs([(e, []) for e in entries], self._run_max):
                    es = [e for e, _ in run]
                    try:
                        recs = self._backend.read_ranges(
                            pack_key(pid), [e.offset for e in es], [e.length for e in es]
                        )
                    except Missing:
                        raise CorruptStoreFile(
                            pack_key(pid), "missing (an index file names it)"
                        ) from None
                    for e, rec in zip(es, recs, strict=True):
                        if len(rec) != e.length:
                            raise CorruptBook(e.cid, f"pack {pid} ends inside the record")
                        verify_book(e.cid, self._decode(e.cid, rec))
                        batch.add_record(e.cid, bytes(rec))
            ok = True
        finally:
            packs = batch.close(commit=ok)
        return packs

    def _write_index(self, refs: list[PackRef], supersedes: list[str]) -> set[str]:
        """Index files naming ``refs``; the last one written carries ``supersedes`` (so a
        crash between two of them never hides a live pack), and none takes the name of a
        file it supersedes (an earlier one with a live file's content would, and vanish)."""
        groups: list[list[PackRef]] = [[]]
        count = 0
        for ref in refs:
            if groups[-1] and count + len(ref) > _INDEX_ENTRIES_MAX:
                groups.append([])
                count = 0
            groups[-1].append(ref)
            count += len(ref)
        written = set()
        for k, group in enumerate(groups):
            last = k == len(groups) - 1
            written.add(self._add_index(group, supersedes if last else (), avoid=supersedes))
        return written

    def sweep_temp_files(self, older_than_s: float = DEFAULT_GC_GRACE_S) -> int:
        """Remove temp files of interrupted writes older than ``older_than_s`` (local
        stores; a small age is safe only while no other process writes to the store)."""
        return self._backend.sweep_temp(older_than_s)

    # --- check ---------------------------------------------------------------------------
    def check(self, *, read_files: bool = True, bar: Any = None) -> StoreCheck:
        """Packs against their names, trailers against the index (docs/FORMAT.md §1.4).

        Problems: damaged index files (unless superseded), indexed packs that are missing
        or of another size, and with ``read_files`` packs whose bytes do not hash to their
        name, whose trailer is damaged, or whose trailer does not list an indexed entry at
        the same offset and length. Overlapping and out-of-range entries are caught when an
        index file or trailer is decoded. Books themselves are verified by ``get``.
        """
        with self._lock:
            self._refresh(force=True)
            view = self._view
            problems = list(view.problems)
            listing = {
                pid: info
                for info in self._backend.list(PACK_DIR)
                if (pid := parse_key(info.name, PACK_SUFFIX)) is not None
            }
            unused = 0
            for pid in sorted(view.packs):
                key = pack_key(pid)
                info = listing.get(pid)
                if info is None:
                    problems.append(StoreProblem(key, "missing (an index file names it)"))
                    continue
                if info.size != view.sizes[pid]:
                    problems.append(
                        StoreProblem(key, f"{info.size} bytes, the index says {view.sizes[pid]}")
                    )
                    continue
                entries = view.packs[pid]
                unused += info.size - sum(e.length for e in entries.values())
                if read_files:
                    problems += self._check_pack(pid, info.size, entries)
                if bar is not None:
                    bar.update(1)
            orphans = [p for p in listing if p not in view.packs]
            superseded = [i for i in view.names if i not in view.live]
            info = {
                "index_files": len(view.live),
                "superseded_index_files": len(superseded),
                "packs": len(view.packs),
                "pack_bytes": sum(listing[p].size for p in view.packs if p in listing),
                "unused_bytes": unused,
                "unreferenced_packs": len(orphans),
                "unreferenced_bytes": sum(listing[p].size for p in orphans),
            }
            if self.two_phase:
                info["tombstone_files"] = len(view.tomb_files)
                info["tombstoned_books"] = len(view.tombs)
            if isinstance(self._backend, LocalBackend) and self._backend.exists_dir("books"):
                info["leftover_book_files"] = sum(
                    1 for _ in Path(self._backend.path("books")).glob("*/*")
                )
            return StoreCheck(tuple(problems), info)

    def _check_pack(self, pid: str, size: int, entries: dict[CID, Entry]) -> list[StoreProblem]:
        key = pack_key(pid)
        try:
            data = self._backend.read(key)
        except Missing:
            return [StoreProblem(key, "missing (an index file names it)")]
        if len(data) != size or file_id(data) != pid:
            return [StoreProblem(key, "content does not match its name")]
        try:
            _, _, trailer_len = parse_footer(key, data[-FOOTER_LEN:], size)
            trailer = decode_trailer(key, data[size - trailer_len :], size)
        except CorruptStoreFile as exc:
            return [StoreProblem(key, exc.reason, exc.cid)]
        listed = {e.cid: e for e in trailer}
        out = []
        for cid, e in entries.items():
            if listed.get(cid) != e:
                out.append(
                    StoreProblem(key, "the index names a record the trailer does not list", cid)
                )
        return out

    def __repr__(self) -> str:
        return f"PackStore({self._name!r}, level={self.level})"

    def _repr_html_(self) -> str:
        from oluo_lab._html import kv_table

        return kv_table(
            "PackStore",
            [
                ("location", self._name),
                ("zstd level", self.level),
                ("packs", len(self._view.sizes)),
            ]
            + self.stats().rows(),
        )


@dataclass(frozen=True)
class _Records:
    """The records one ``get_concat_into`` reads, by pack and offset: the asking item
    (its index in the CID rows), offset, length, start in ``out`` and book size."""

    cids: bytes  # the CID rows, concatenated
    item: list[int]
    offset: list[int]
    length: list[int]
    start: list[int]
    size: list[int]
    out: memoryview

    def cid(self, i: int) -> CID:
        return CID._unchecked(self.cids[40 * i : 40 * i + 40])

    def dest(self, k: int) -> memoryview:
        return self.out[self.start[k] : self.start[k] + self.size[k]]


_BUFFERS = threading.local()


def _read_buffer(n: int) -> memoryview:
    """A buffer of ``n`` bytes reused by this thread's reads (a fresh one per read would
    page-fault its way in every time)."""
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None or len(buf) < n:
        buf = _BUFFERS.buf = bytearray(max(n, _RUN_MAX_LOCAL + (1 << 16)))
    return memoryview(buf)[:n]


def _runs(entries: Sequence[tuple[Entry, Any]], most: int) -> Iterator[list[tuple[Entry, Any]]]:
    """Split offset-sorted entries of one pack into runs read with one request: gaps under
    ``COALESCE_GAP``, at most ``most`` bytes (or one record), and no two records overlapping
    (only index files at odds with each other name such records; each is read as named)."""
    run: list[tuple[Entry, Any]] = []
    for item in entries:
        e = item[0]
        if run and (
            e.offset - run[-1][0].end > COALESCE_GAP
            or e.end - run[0][0].offset > most
            or e.offset < run[-1][0].end
        ):
            yield run
            run = []
        run.append(item)
    if run:
        yield run
