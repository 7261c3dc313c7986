"""Where a pack store keeps its files: a local directory, or an object store via obstore.

Layer: cas, below ``packs.py``. A backend is a flat namespace of immutable, content-named
files (``packs/<id>.olp``, ``index/<id>.oli``) plus the format marker, with the few
operations a pack store needs, and that a later commit protocol on object stores needs
too: a create-only put (an existing name is never replaced, and "already there" is
success for a content-named file), listing with sizes and times, whole and ranged reads,
and deletes. :class:`LocalBackend` does every file operation through ``oluo_lab._io``
and makes writes durable with fsync; :class:`ObstoreBackend` speaks to any store obstore
builds (S3 and S3-compatible servers, GCS, Azure, its local and memory stores).

Errors: an absent file raises :class:`Missing` (the store decides what that means); any
other failure raises :class:`~oluo_lab.cas.errors.StoreIOError` naming the file and the
operation. Crash points (``oluo_lab/_faults.py``) mark each durable step of a local write.

Every request :class:`ObstoreBackend` makes goes through one function, which an optional
hook (:func:`set_object_hook`) may wrap: the object-store counterpart of ``_io``'s hook,
where tests record requests and inject server errors, timeouts, throttling and refused
writes, before a request is sent or after it landed (a lost acknowledgement).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from oluo_lab import _io
from oluo_lab._faults import fault_point
from oluo_lab.cas.errors import StoreIOError
from oluo_lab.errors import OluoError

__all__ = [
    "TMP_PREFIX",
    "Backend",
    "LocalBackend",
    "Missing",
    "ObjectInfo",
    "ObstoreBackend",
    "Sink",
    "import_obstore",
    "set_object_hook",
]

#: Name prefix of a local backend's in-flight writes (never read as store files).
TMP_PREFIX = ".tmp-"


class Missing(OluoError):
    """The named file does not exist (internal: the store turns it into its own error)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class ObjectInfo:
    """A listed file: its name within the listed directory, size and modification time."""

    name: str
    size: int
    mtime: float


class Sink(ABC):
    """A new pack being written: bytes are appended, then it is published under its name."""

    @abstractmethod
    def append(self, data: Any) -> None:
        """Append bytes (any buffer)."""

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Bytes already appended (to read a book back before the pack is published)."""

    @abstractmethod
    def publish(self, key: str) -> None:
        """Make the bytes durable under ``key`` (create-only; an existing file with that
        content-derived name is success). The sink is closed afterwards."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the bytes (idempotent)."""


class Backend(ABC):
    """The file operations a pack store uses (see the module docstring)."""

    #: whether :meth:`read_scatter` reads straight into caller buffers (local files)
    scatter = False

    @abstractmethod
    def put_create(self, key: str, data: Any) -> bool:
        """Store ``data`` under ``key`` durably unless the name exists; True if created."""

    @abstractmethod
    def put_replace(self, key: str, data: Any) -> None:
        """Atomically store ``data`` under ``key``, replacing what is there (the marker)."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """A whole file; :class:`Missing` if absent."""

    @abstractmethod
    def read_ranges(self, key: str, starts: Sequence[int], lengths: Sequence[int]) -> list[Any]:
        """Byte ranges of a file (buffers; a range past the end comes back short)."""

    def read_scatter(self, key: str, offset: int, buffers: list[Any]) -> int:
        """Read consecutive bytes from ``offset`` into ``buffers``; bytes read."""
        raise NotImplementedError

    @abstractmethod
    def list(self, directory: str) -> list[ObjectInfo]:
        """Every file directly in ``directory`` (temp files excluded), by name."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a file; an absent one is not an error."""

    @abstractmethod
    def new_sink(self, directory: str) -> Sink:
        """A sink for a new file that will be published in ``directory``."""

    def barrier(self, directory: str) -> None:
        """Make every file published in ``directory`` so far durable (local: one fsync of
        the directory); before anything names them. Object stores: already durable."""
        return None

    def sweep_temp(self, older_than_s: float) -> int:
        """Remove crash leftovers of writes (temp files) older than ``older_than_s``."""
        return 0

    def exists_dir(self, directory: str) -> bool:
        """Whether ``directory`` holds anything (local: whether it exists)."""
        return bool(self.list(directory))


# --- local directory -----------------------------------------------------------------------
@contextlib.contextmanager
def _os_op(op: str, name: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        if op in ("read", "open"):
            raise Missing(name) from None
        raise StoreIOError(op, name, exc) from exc
    except OSError as exc:
        raise StoreIOError(op, name, exc) from exc


class LocalBackend(Backend):
    """Files under a local directory. ``fsync=False`` skips every fsync (scratch stores)."""

    scatter = True

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = os.fspath(root)
        self.fsync = fsync
        self._made: set[str] = set()
        self._counter = iter(range(1 << 62))
        self._stem = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-"
        self._lock = threading.Lock()

    def path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def ensure_dir(self, directory: str) -> None:
        """Create ``directory`` (and the root, with its missing parents) durably."""
        if directory in self._made:
            return
        paths = [self.path(directory)] if directory else []
        p = os.path.abspath(self.root)
        while not os.path.isdir(p):  # the root and the parents it lacks, innermost first
            paths.append(p)
            up = os.path.dirname(p)
            if up == p:
                break
            p = up
        for path in sorted(paths, key=len):
            with _os_op("mkdir", os.path.relpath(path, self.root)):
                created = _io.make_dir(path)
            if created and self.fsync:
                parent = os.path.dirname(path.rstrip(os.sep)) or "."
                with _os_op("fsync", os.path.relpath(parent, self.root)):
                    _io.fsync_dir(parent)
        self._made.add(directory)

    def _tmp(self, directory: str) -> tuple[str, str]:
        with self._lock:
            n = next(self._counter)
        name = f"{directory}/{self._stem}{n}" if directory else f"{self._stem}{n}"
        return name, self.path(name)

    def _write_tmp(self, directory: str, data: Any) -> tuple[str, str]:
        """A new temp file in ``directory`` holding ``data``, synced (when fsync is on)."""
        self.ensure_dir(directory)
        name, tmp = self._tmp(directory)
        with _os_op("create", name):
            fd = _io.create_excl(tmp)
        try:
            with _os_op("write", name):
                _io.write_all(fd, data)
            if self.fsync:
                with _os_op("fsync", name):
                    _io.fsync_fd(fd)
        except BaseException:
            _io.close(fd)
            with contextlib.suppress(OSError):
                _io.unlink(tmp)
            raise
        with _os_op("close", name):
            _io.close(fd)
        return name, tmp

    def put_create(self, key: str, data: Any) -> bool:
        directory = key.rpartition("/")[0]
        name, tmp = self._write_tmp(directory, data)
        fault_point("index.synced")
        try:
            with _os_op("link", key):
                try:
                    _io.link(tmp, self.path(key))
                    created = True
                except FileExistsError:  # same name, so the same content: success
                    created = False
            fault_point("index.linked")
        finally:
            with _os_op("unlink", name), contextlib.suppress(FileNotFoundError):
                _io.unlink(tmp)
        if self.fsync:
            with _os_op("fsync", directory or "."):
                _io.fsync_dir(self.path(directory) if directory else self.root)
        fault_point("index.dir_synced")
        return created

    def put_replace(self, key: str, data: Any) -> None:
        directory = key.rpartition("/")[0]
        _, tmp = self._write_tmp(directory, data)
        try:
            with _os_op("rename", key):
                _io.rename(tmp, self.path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                _io.unlink(tmp)
            raise
        if self.fsync:
            with _os_op("fsync", directory or "."):
                _io.fsync_dir(self.path(directory) if directory else self.root)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[int]:
        with _os_op("open", key):
            fd = _io.open_read(self.path(key))
        try:
            yield fd
        finally:
            _io.close(fd)

    def read(self, key: str) -> bytes:
        with self._open(key) as fd, _os_op("read", key):
            size = os.fstat(fd).st_size
            buf = bytearray(size)
            got = _io.pread_into(fd, buf, 0)
        return bytes(buf[:got])

    def read_ranges(self, key: str, starts: Sequence[int], lengths: Sequence[int]) -> list[Any]:
        out = []
        with self._open(key) as fd, _os_op("read", key):
            for start, length in zip(starts, lengths, strict=True):
                buf = bytearray(length)
                got = _io.pread_into(fd, buf, start)
                out.append(buf if got == length else buf[:got])
        return out

    def read_scatter(self, key: str, offset: int, buffers: list[Any]) -> int:
        with self._open(key) as fd, _os_op("read", key):
            return _io.preadv(fd, buffers, offset)

    def list(self, directory: str) -> list[ObjectInfo]:
        try:
            with _os_op("list", directory):
                rows = _io.list_dir(self.path(directory))
        except StoreIOError as exc:
            if isinstance(exc.cause, FileNotFoundError):
                return []
            raise
        return [ObjectInfo(n, s, m) for n, s, m in rows if not n.startswith(TMP_PREFIX)]

    def exists_dir(self, directory: str) -> bool:
        return os.path.isdir(self.path(directory))

    def delete(self, key: str) -> None:
        with _os_op("unlink", key), contextlib.suppress(FileNotFoundError):
            _io.unlink(self.path(key))

    def sync_dir(self, directory: str) -> None:
        """fsync ``directory`` (deletes and renames in it become durable)."""
        if self.fsync:
            with _os_op("fsync", directory or "."):
                _io.fsync_dir(self.path(directory) if directory else self.root)

    def barrier(self, directory: str) -> None:
        if self.fsync:
            with _os_op("fsync", directory):
                _io.fsync_dir(self.path(directory))
        fault_point("pack.dir_synced")

    def new_sink(self, directory: str) -> Sink:
        self.ensure_dir(directory)
        name, tmp = self._tmp(directory)
        with _os_op("create", name):
            fd = _io.create_excl(tmp)
        return _FileSink(self, name, tmp, fd)

    def sweep_temp(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for directory in ("", "packs", "index"):
            path = self.path(directory) if directory else self.root
            try:
                names = os.listdir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                if not n.startswith(TMP_PREFIX):
                    continue
                p = os.path.join(path, n)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(p).st_mtime <= cutoff:
                        with _os_op("unlink", f"{directory}/{n}"):
                            _io.unlink(p)
                        removed += 1
        return removed


class _FileSink(Sink):
    """A pack written to a temp file, then synced and hard-linked to its final name."""

    def __init__(self, backend: LocalBackend, name: str, tmp: str, fd: int) -> None:
        self._b = backend
        self._name = name
        self._tmp = tmp
        self._fd: int | None = fd
        self._final: str | None = None
        # a read of a book put in the batch may come from another thread while the pack
        # is published: it must not use the temp file's fd once that is closed
        self._lock = threading.Lock()

    def append(self, data: Any) -> None:
        assert self._fd is not None
        with _os_op("write", self._name):
            _io.write_all(self._fd, data)

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            if self._final is None:
                assert self._fd is not None
                buf = bytearray(length)
                with _os_op("read", self._name):
                    got = _io.pread_into(self._fd, buf, offset)
                return bytes(buf[:got])
        return bytes(self._b.read_ranges(self._final, [offset], [length])[0])

    def publish(self, key: str) -> None:
        fd = self._fd
        assert fd is not None
        fault_point("pack.tmp_written")
        if self._b.fsync:
            with _os_op("fsync", self._name):
                _io.fsync_fd(fd)
        fault_point("pack.synced")
        with _os_op("link", key), contextlib.suppress(FileExistsError):  # same content there
            _io.link(self._tmp, self._b.path(key))
        fault_point("pack.linked")
        with self._lock:
            self._final = key
            self._close()

    def abort(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _io.close(fd)
            with _os_op("unlink", self._name), contextlib.suppress(FileNotFoundError):
                _io.unlink(self._tmp)


# --- object stores ------------------------------------------------------------------------
#: ``hook(op, key, request)`` -> what ``request()`` returns: every object-store request of
#: this process (``op``: ``put``, ``put_create``, ``get``, ``get_ranges``, ``head``,
#: ``list`` or ``delete``; ``key``: the full object key), or None.
ObjectHook = Callable[[str, str, Callable[[], Any]], Any]
_OBJECT_HOOK: ObjectHook | None = None


def set_object_hook(hook: ObjectHook | None) -> ObjectHook | None:
    """Route every object-store request through ``hook`` (None: straight through); the
    previous hook is returned. For tests: recording requests, injecting failures."""
    global _OBJECT_HOOK
    previous, _OBJECT_HOOK = _OBJECT_HOOK, hook
    return previous


def import_obstore():
    """The obstore module (the ``s3`` extra), or an ImportError that says how to get it."""
    try:
        import obstore
        import obstore.store
    except ImportError as exc:  # pragma: no cover - the s3 extra is missing
        raise ImportError(
            "object-store URLs need the 's3' extra: pip install 'oluo-lab[s3]'"
        ) from exc
    return obstore


class ObstoreBackend(Backend):
    """Files as objects of an obstore store, under an optional key ``prefix``.

    Puts of content-named files use ``mode="create"`` (``If-None-Match: *`` on S3):
    ``AlreadyExistsError`` means the same bytes are there. Because a server may report a
    racing write as "already exists" while nothing landed, that answer is confirmed with
    a HEAD before it is trusted. :meth:`put_if_absent` is the raw conditional put that
    commit protocols build on (refs, the commit log): it reports "already exists" as it
    is and leaves confirming to the caller. ``identity`` names the server and bucket
    (what a conditional-write self-test result is cached under).
    """

    def __init__(self, store: Any, prefix: str = "", identity: str = "", name: str = "") -> None:
        self.obs = import_obstore()
        self.store = store
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.identity = identity or f"{type(store).__name__}@{id(store):x}"
        self.name = name or self.identity
        from obstore import exceptions

        self._exists = exceptions.AlreadyExistsError
        self._not_found: tuple[type[BaseException], ...] = (
            exceptions.NotFoundError,
            FileNotFoundError,
        )

    def child(self, directory: str, name: str = "") -> ObstoreBackend:
        """The same store seen from ``directory`` (its keys relative to it)."""
        return ObstoreBackend(self.store, self.prefix + directory, self.identity, name)

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _request(self, op: str, key: str, request: Callable[[], Any]) -> Any:
        """Send one request (``key``: the full object key), through the hook if any."""
        hook = _OBJECT_HOOK
        return request() if hook is None else hook(op, key, request)

    @contextlib.contextmanager
    def _op(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except self._not_found as exc:
            if op in ("get", "head"):
                raise Missing(key) from None
            raise StoreIOError(op, key, exc) from exc
        except Missing:
            raise
        except Exception as exc:  # obstore raises its own error classes and OSErrors
            if isinstance(exc, StoreIOError):
                raise
            raise StoreIOError(op, key, exc) from exc

    def put_if_absent(self, key: str, data: Any) -> bool:
        """One create-only put: True when this call created ``key``, False when the server
        says it exists (which may also be a racing write that did not land: read it
        back). Any other failure is :class:`StoreIOError`, after which the object may or
        may not exist (a lost acknowledgement)."""
        try:
            with self._op("put", key):
                k = self._k(key)
                self._request(
                    "put_create",
                    k,
                    lambda: self.obs.put(self.store, k, memoryview(data), mode="create"),
                )
            return True
        except StoreIOError as exc:
            if isinstance(exc.cause, self._exists):
                return False
            raise

    def put_create(self, key: str, data: Any) -> bool:
        k = self._k(key)
        for _ in range(3):
            if self.put_if_absent(key, data):
                return True
            try:
                with self._op("head", key):
                    self._request("head", k, lambda: self.obs.head(self.store, k))
                return False
            except Missing:  # reported as existing, yet absent: a racing write
                continue
        raise StoreIOError("put", key, RuntimeError("the server says it exists but it does not"))

    def put_replace(self, key: str, data: Any) -> None:
        with self._op("put", key):
            k = self._k(key)
            self._request("put", k, lambda: self.obs.put(self.store, k, memoryview(data)))

    def read(self, key: str) -> bytes:
        with self._op("get", key):
            k = self._k(key)
            return self._request("get", k, lambda: bytes(self.obs.get(self.store, k).bytes()))

    def read_ranges(self, key: str, starts: Sequence[int], lengths: Sequence[int]) -> list[Any]:
        if not starts:
            return []
        k = self._k(key)
        try:
            with self._op("get", key):
                return self._request(
                    "get_ranges",
                    k,
                    lambda: list(
                        self.obs.get_ranges(
                            self.store, k, starts=list(starts), lengths=list(lengths)
                        )
                    ),
                )
        except StoreIOError:
            # a range starting at or past the end is refused (416) where a file read comes
            # back short: with the object's size, such ranges come back empty instead
            with self._op("head", key):
                size = self._request("head", k, lambda: self.obs.head(self.store, k))["size"]
            inside = [i for i, start in enumerate(starts) if start < size]
            if len(inside) == len(starts):
                raise
            out: list[Any] = [b""] * len(starts)
            got = self.read_ranges(
                key,
                [starts[i] for i in inside],
                [min(lengths[i], size - starts[i]) for i in inside],
            )
            for i, data in zip(inside, got, strict=True):
                out[i] = data
            return out

    def list_tree(self, directory: str, after: str | None = None) -> list[ObjectInfo]:
        """Every object below ``directory`` at any depth (names relative to it, so they
        may hold ``/``), by name; ``after``: only names that sort after this one (one
        listing request resumes where the last one ended)."""
        prefix = f"{directory}/" if directory else ""
        full = self._k(prefix)
        offset = None if after is None else full + after

        def request() -> list[ObjectInfo]:
            out = []
            for batch in self.obs.list(self.store, full or None, offset=offset, chunk_size=1000):
                for meta in batch:
                    rest = meta["path"][len(full) :]
                    out.append(ObjectInfo(rest, meta["size"], meta["last_modified"].timestamp()))
            return out

        with self._op("list", directory or "."):
            out = self._request("list", full, request)
        out.sort(key=lambda o: o.name)
        return out

    def list(self, directory: str) -> list[ObjectInfo]:
        return [o for o in self.list_tree(directory) if "/" not in o.name]

    def delete(self, key: str) -> None:
        try:
            with self._op("delete", key):
                k = self._k(key)
                self._request("delete", k, lambda: self.obs.delete(self.store, k))
        except StoreIOError as exc:
            if not isinstance(exc.cause, self._not_found):  # already gone is fine
                raise

    def new_sink(self, directory: str) -> Sink:
        return _MemorySink(self)


class _MemorySink(Sink):
    """A pack gathered in memory and uploaded in one create-only put."""

    def __init__(self, backend: ObstoreBackend) -> None:
        self._b = backend
        self._buf: bytearray | None = bytearray()
        self._key: str | None = None

    def append(self, data: Any) -> None:
        assert self._buf is not None
        self._buf += data

    def read(self, offset: int, length: int) -> bytes:
        buf = self._buf  # once: publish() may drop it meanwhile on another thread
        if buf is not None:
            return bytes(buf[offset : offset + length])
        assert self._key is not None
        return bytes(self._b.read_ranges(self._key, [offset], [length])[0])

    def publish(self, key: str) -> None:
        assert self._buf is not None
        self._b.put_create(key, self._buf)
        self._key = key
        self._buf = None

    def abort(self) -> None:
        self._buf = None
