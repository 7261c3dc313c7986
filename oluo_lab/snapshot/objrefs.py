"""Refs of a lab on an object store: create-only, numbered ref and log objects, no lock.

Snapshot layer (docs/FORMAT.md §3.9). An object store has no lock and no append, but it
has a create-only put (S3 ``If-None-Match: *``, obstore ``mode="create"``): a key is
written once, by exactly one writer. Every ref is therefore a sequence of immutable,
numbered objects, and moving a ref is claiming the next number:

* ``refs/heads/<branch>/<n:020d>``: the n-th value of a branch (``/`` in a branch name
  becomes ``~``); the newest number is the branch's head, a ``head`` of null deletes it;
* ``refs/tags/<tag>/<n:020d>``: the same for a tag (moving or deleting a tag is a new
  number, so a tag object is never replaced);
* ``log/<n:020d>``: the n-th record of the commit log (the records of ``oluo_refs.log``,
  in the same order rules: a commit record carries its number ``seq``).

Each object's body is canonical JSON with a random ``write_id``. A put that fails with a
transport error, or that the server reports as "already exists", is read back: the
writer's own ``write_id`` there means it landed (a lost acknowledgement), another one
means another writer won the number (:class:`HeadMoved` naming the winner, for a
branch), an absent key means nothing landed and the put is tried again.

Before the first write the store is tested once per process (:func:`self_test`): a
create-only put of a probe key twice must fail the second time. A server that ignores
the condition would let two writers both "win" a number; then every write is refused
(:class:`UnsafeObjectStore`) unless the lab was opened with ``single_writer=True``. A
probe the server refuses for want of permission (read-only credentials) makes the lab
read-only for this process: reads work, every writer raises :class:`ReadOnlyLab` before
it writes anything.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..cas import CID, StoreIOError
from ..cas._backends import Missing, ObstoreBackend
from . import refs_log
from .branches import DEFAULT_BRANCH
from .errors import (
    HeadMoved,
    ManifestSerde,
    PersistIOError,
    ReadOnlyLab,
    RefExists,
    UnsafeObjectStore,
)
from .head import Head
from .refs import RefStore

__all__ = ["LAB_FORMAT_KEY", "LAB_FORMAT_TEXT", "ObjectRefs", "clear_self_tests", "self_test"]

#: format (docs/FORMAT.md §3.9): the marker object of a lab on an object store.
LAB_FORMAT_KEY = "oluo-lab-format"
LAB_FORMAT_TEXT = "oluo-lab objects 1\n"
#: format: where branch heads, tags and log records live, and how they are numbered.
HEADS_DIR = "refs/heads"
TAGS_DIR = "refs/tags"
LOG_DIR = "log"
REF_VERSION = 1
_NUMBER = re.compile(r"^[0-9]{20}$")
#: Attempts at one numbered put before giving up (conflicts with other writers aside).
_PUT_TRIES = 6
#: Reads of new log records at once.
_LOG_READERS = 8

_SELF_TESTS: dict[str, str | None] = {}
_SELF_TESTS_LOCK = threading.Lock()


def _key(directory: str, name: str, n: int) -> str:
    return f"{directory}/{name}/{n:020d}"


def _segment(branch: str) -> str:
    """A branch name as one key segment (``~`` never occurs in a branch name)."""
    return branch.replace("/", "~")


def _encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def self_test(backend: ObstoreBackend) -> str | None:
    """Check once per store (by ``backend.identity``) that create-only puts are honoured:
    None when they are, else why writes must be refused. A test that cannot run (no
    write permission, say) is not cached, and its reason returned."""
    return _self_test(backend)[0]


def _refused(exc: StoreIOError) -> bool:
    """Whether the server refused a request for want of permission (read-only
    credentials, a bucket policy): obstore's permission and authentication errors."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    return isinstance(exc.cause, PermissionDeniedError | UnauthenticatedError)


def _self_test(backend: ObstoreBackend) -> tuple[str | None, bool]:
    """:func:`self_test`'s answer, and whether the probe was refused for want of
    permission (the credentials are read-only; not cached either)."""
    with _SELF_TESTS_LOCK:
        if backend.identity in _SELF_TESTS:
            return _SELF_TESTS[backend.identity], False
    key = f"selftest/{secrets.token_hex(12)}"
    created = False
    try:
        first = backend.put_if_absent(key, b"1")
        created = True
        second = backend.put_if_absent(key, b"2")
        kept = backend.read(key)
    except (StoreIOError, Missing) as exc:
        refused = not created and isinstance(exc, StoreIOError) and _refused(exc)
        return f"the conditional-write self-test could not run: {exc}", refused
    finally:
        with contextlib.suppress(StoreIOError):
            backend.delete(key)
    if not first:
        result: str | None = "a create-only put of a new key was refused"
    elif second or kept != b"1":
        result = (
            "the server ignores conditional writes: a create-only put "
            "(If-None-Match: *) replaced an existing object"
        )
    else:
        result = None
    with _SELF_TESTS_LOCK:
        _SELF_TESTS[backend.identity] = result
    return result, False


def clear_self_tests() -> None:
    """Forget every cached self-test result (tests)."""
    with _SELF_TESTS_LOCK:
        _SELF_TESTS.clear()


class ObjectRefs(RefStore):
    """:class:`RefStore` over an object store (see the module docstring).

    ``backend``: the lab's root (keys relative to the lab's prefix); ``name``: how
    messages name the lab; ``single_writer``: allow writes even when the store fails
    the self-test (the caller promises that no other process writes to the lab).
    """

    records_after_move = True

    def __init__(self, backend: ObstoreBackend, name: str, *, single_writer: bool = False):
        self.backend = backend
        self.name = name
        self.single_writer = single_writer
        self.unsafe, self.read_only = _self_test(backend)
        self._bodies: dict[str, dict[str, Any]] = {}  # immutable objects, by key
        self._log: list[tuple[str, dict[str, Any] | None]] = []  # (key, record or damaged)
        self._log_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectRefs({self.name!r})"

    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        yield  # no lock: every change is a create-only put that fails on a conflict

    def check_writable(self, operation: str = "write") -> None:
        if self.read_only:
            raise ReadOnlyLab(self.name, operation)
        if self.unsafe is not None and not self.single_writer:
            raise UnsafeObjectStore(self.name, self.unsafe)

    def where(self, kind: str) -> str:
        return {
            "head": f"{HEADS_DIR}/{DEFAULT_BRANCH}/",
            "branches": f"{HEADS_DIR}/",
            "tags": f"{TAGS_DIR}/",
            "log": f"{LOG_DIR}/",
        }[kind]

    # ---------------------------------------------------------------- objects
    def _get(self, key: str, kind: str) -> dict[str, Any]:
        """The decoded object at ``key`` (cached: objects are never rewritten)."""
        body = self._bodies.get(key)
        if body is None:
            try:
                data = self.backend.read(key)
            except StoreIOError as exc:
                raise PersistIOError(f"cannot read {key} of {self.name}", exc.cause) from exc
            body = self._decode(key, data, kind)
            self._bodies[key] = body
        return body

    @staticmethod
    def _decode(key: str, data: bytes, kind: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestSerde(f"{key} is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("write_id"), str):
            raise ManifestSerde(f"{key}: not a {kind} object")
        if kind != "log":
            if doc.get("version") != REF_VERSION:
                raise ManifestSerde(f"{key}: {kind} object version {doc.get('version')!r}")
            head = doc.get("head")
            if head is not None:
                try:
                    CID.parse(head)
                except (ValueError, TypeError) as exc:
                    raise ManifestSerde(f"{key}: 'head' is not a valid CID: {exc}") from exc
        return doc

    def _claim(self, key: str, doc: dict[str, Any], kind: str) -> dict[str, Any] | None:
        """Create ``key`` holding ``doc``: None when it is ours (also after a lost
        acknowledgement), else the object another writer put there first."""
        self.check_writable()
        data = _encode(doc)
        for attempt in range(_PUT_TRIES):
            try:
                created = self.backend.put_if_absent(key, data)
            except StoreIOError:
                created = False  # may or may not have landed: read it back
            if created:
                self._bodies[key] = doc
                return None
            try:
                found = self.backend.read(key)
            except Missing:
                time.sleep(0.05 * 2**attempt)  # nothing landed (a conflict or an error)
                continue
            except StoreIOError as exc:
                raise PersistIOError(f"cannot read {key} of {self.name}", exc.cause) from exc
            try:
                theirs = self._decode(key, found, kind)
            except ManifestSerde:
                return {"write_id": None, "head": None}  # damaged: not ours either way
            self._bodies[key] = theirs
            return None if theirs["write_id"] == doc["write_id"] else theirs
        raise PersistIOError(f"cannot write {key} of {self.name}: {_PUT_TRIES} attempts failed")

    def _numbered(self, directory: str) -> dict[str, list[int]]:
        """name -> its object numbers, ascending, for every name under ``directory``."""
        try:
            listing = self.backend.list_tree(directory)
        except StoreIOError as exc:
            raise PersistIOError(f"cannot list {directory}/ of {self.name}", exc.cause) from exc
        out: dict[str, list[int]] = {}
        for info in listing:
            name, _, number = info.name.rpartition("/")
            if name and "/" not in name and _NUMBER.match(number):
                out.setdefault(name, []).append(int(number))
        for numbers in out.values():
            numbers.sort()
        return out

    def _newest(self, directory: str, name: str) -> tuple[int, dict[str, Any] | None]:
        numbers = self._numbered_one(directory, name)
        if not numbers:
            return 0, None
        n = numbers[-1]
        return n, self._get(_key(directory, name, n), "tag" if directory == TAGS_DIR else "ref")

    def _numbered_one(self, directory: str, name: str) -> list[int]:
        try:
            listing = self.backend.list(f"{directory}/{name}")
        except StoreIOError as exc:
            raise PersistIOError(
                f"cannot list {directory}/{name}/ of {self.name}", exc.cause
            ) from exc
        return sorted(int(i.name) for i in listing if _NUMBER.match(i.name))

    @staticmethod
    def _head(doc: dict[str, Any] | None) -> Head | None:
        if doc is None or doc.get("head") is None:
            return None
        generation = doc.get("generation")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            generation = -1
        return Head(CID.parse(doc["head"]), generation)

    def _new_doc(self, n: int, **fields: Any) -> dict[str, Any]:
        return {
            "n": n,
            "time": refs_log.now_text(),
            "version": REF_VERSION,
            "write_id": secrets.token_hex(16),
            **fields,
        }

    # ---------------------------------------------------------------- branches
    def read_ref(self, branch: str) -> Head | None:
        return self._head(self._newest(HEADS_DIR, _segment(branch))[1])

    def branches(self) -> dict[str, Head]:
        found: dict[str, Head] = {}
        for segment, numbers in self._numbered(HEADS_DIR).items():
            head = self._head(self._get(_key(HEADS_DIR, segment, numbers[-1]), "ref"))
            if head is not None:
                found[segment.replace("~", "/")] = head
        out = {DEFAULT_BRANCH: found.pop(DEFAULT_BRANCH)} if DEFAULT_BRANCH in found else {}
        out.update(sorted(found.items()))
        return out

    def other_branches(self) -> dict[str, Head]:
        return {k: v for k, v in self.branches().items() if k != DEFAULT_BRANCH}

    def _move(self, branch: str, expected: CID | None, head: Head | None, check: bool) -> None:
        segment = _segment(branch)
        try:
            n, doc = self._newest(HEADS_DIR, segment)
        except ManifestSerde:
            if check:
                raise
            # a repair writes over a damaged newest object (the next number)
            n, doc = self._numbered_one(HEADS_DIR, segment)[-1], None
        found = self._head(doc)
        if check and (None if found is None else found.cid) != expected:
            raise self._moved(branch, found, expected, doc)
        new = self._new_doc(
            n + 1,
            branch=branch,
            head=None if head is None else head.cid.hex,
            generation=None if head is None else head.generation,
            old=None if found is None else found.cid.hex,
        )
        theirs = self._claim(_key(HEADS_DIR, segment, n + 1), new, "ref")
        if theirs is None:
            return
        if not check:  # a repair: claim the next number again
            return self._move(branch, expected, head, check)
        raise self._moved(branch, self._head(theirs), expected, theirs)

    @staticmethod
    def _moved(
        branch: str, winner: Head | None, expected: CID | None, doc: dict[str, Any] | None
    ) -> HeadMoved:
        """Another writer moved ``branch`` first (to ``winner``): the error naming it."""
        what = "deleted it" if winner is None else f"set it to commit {winner.cid.short}"
        when = f" at {doc.get('time')}" if doc and doc.get("time") else ""
        moved = HeadMoved(
            branch,
            None if winner is None else winner.cid,
            expected,
            f"branch {branch!r} moved meanwhile: another writer {what}{when} (this writer "
            f"expected {'no head' if expected is None else expected.short}); the ref was not "
            "moved. A commit is stored but on no branch: commit again with retry=True to "
            "put it on top of the new head when the engine still descends from it",
        )
        moved.raced = True
        return moved

    def compare_and_set(self, branch: str, expected: CID | None, new: Head) -> None:
        self._move(branch, expected, new, True)

    def delete_branch(self, branch: str, expected: CID) -> None:
        if branch == DEFAULT_BRANCH:
            raise ValueError(f"the default branch {DEFAULT_BRANCH!r} cannot be deleted")
        self._move(branch, expected, None, True)

    def repair_ref(self, branch: str, new: Head) -> None:
        self._move(branch, None, new, False)

    # ---------------------------------------------------------------- commit log
    def records(self) -> list[dict[str, Any]]:
        with self._log_lock:
            after = self._log[-1][0].rpartition("/")[2] if self._log else None
            try:
                listing = self.backend.list_tree(LOG_DIR, after=after)
            except StoreIOError as exc:
                raise PersistIOError(f"cannot list {LOG_DIR}/ of {self.name}", exc.cause) from exc
            keys = [f"{LOG_DIR}/{i.name}" for i in listing if _NUMBER.match(i.name)]
            if keys:
                with ThreadPoolExecutor(min(_LOG_READERS, len(keys))) as pool:
                    docs = list(pool.map(self._log_record, keys))
                self._log += list(zip(keys, docs, strict=True))
            return [dict(d) for _, d in self._log if d is not None]

    def _log_record(self, key: str) -> dict[str, Any] | None:
        try:
            return self._get(key, "log")
        except ManifestSerde:
            return None  # a damaged record is skipped, like a torn line of the local log

    def _append(self, record: dict[str, Any], numbered: bool) -> int:
        """Claim the next log number for ``record``; returns the commit number it got
        (``numbered``: a commit record, which carries it) or 0."""
        write_id = secrets.token_hex(16)
        while True:
            recs = self.records()
            with self._log_lock:
                n = int(self._log[-1][0].rpartition("/")[2]) + 1 if self._log else 1
            doc = {**record, "write_id": write_id}
            seq = 0
            if numbered:
                _, seq = refs_log.commits(recs)
                doc["seq"] = seq
            if self._claim(f"{LOG_DIR}/{n:020d}", doc, "log") is None:
                return seq

    def log_commit(self, record: dict[str, Any]) -> int:
        return self._append(record, True)

    def log_event(self, record: dict[str, Any]) -> None:
        self._append(record, False)

    # ---------------------------------------------------------------- tags
    def tags(self) -> dict[str, CID]:
        out: dict[str, CID] = {}
        for name, numbers in sorted(self._numbered(TAGS_DIR).items()):
            head = self._head(self._get(_key(TAGS_DIR, name, numbers[-1]), "tag"))
            if head is not None:
                out[name] = head.cid
        return out

    def _set_tag(self, name: str, cid: CID | None) -> None:
        n, doc = self._newest(TAGS_DIR, name)
        new = self._new_doc(n + 1, tag=name, head=None if cid is None else cid.hex)
        theirs = self._claim(_key(TAGS_DIR, name, n + 1), new, "tag")
        if theirs is not None and theirs.get("head") != new["head"]:
            raise RefExists(
                name,
                f"tag {name!r} was changed by another writer meanwhile (now "
                f"{theirs.get('head') or 'deleted'}); nothing was written",
            )

    def set_tag(self, name: str, cid: CID) -> None:
        self._set_tag(name, cid)

    def delete_tag(self, name: str) -> None:
        if name not in self.tags():
            raise KeyError(f"no tag named {name!r}")
        self._set_tag(name, None)
