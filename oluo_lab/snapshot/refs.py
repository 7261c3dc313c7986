"""Refs: branch heads, tags and the lab-wide commit log behind one small interface.

Snapshot layer. :class:`RefStore` is everything a ``Lab`` needs of where its refs live;
the Lab's logic (what a commit's parent is, whether a branch may move, how refs are
resolved) never touches a ref file itself. :class:`LocalRefs` implements it over a
data directory, with the owner modules of each file: the head file of ``main``
(:mod:`.head`), the other branches (:mod:`.branches`), the refs log, which is also the
commit log (:mod:`.refs_log`), and the tags (:mod:`.tags`); every change happens under
``data_dir_lock``. :class:`~oluo_lab.snapshot.objrefs.ObjectRefs` implements it on an
object store (no lock, no append; refs as create-only, numbered objects written with
put-if-absent): :meth:`RefStore.compare_and_set` is then a conditional put that fails
when another writer got there first, and :meth:`RefStore.log_commit` a put-if-absent
of the next numbered record, retried with the next number on conflict.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..cas import CID
from . import refs_log
from .branches import BRANCHES_NAME, DEFAULT_BRANCH, read_branches, write_branches
from .durable import data_dir_lock, require_writable
from .errors import HeadMoved
from .head import HEAD_NAME, Head, read_head, write_head
from .refs_log import REFS_LOG_NAME
from .tags import TAGS_NAME, read_tags, write_tags

__all__ = ["LocalRefs", "RefStore"]


def _short(cid: CID | None) -> str:
    return "none" if cid is None else cid.short


class RefStore(ABC):
    """Branch refs, tags and the commit log of one lab.

    Writers call the mutating methods inside :meth:`locked` (a local directory's lock;
    a no-op where the store offers conditional writes instead). A ref's value is a
    :class:`~oluo_lab.snapshot.head.Head`: the commit's manifest CID and its engine
    generation.

    ``records_after_move``: whether a writer moves the ref first and records the move in
    the log after (an object store: a writer that loses the race for the ref then leaves
    no log record behind) rather than the other way round (a local lab, under its lock).
    """

    records_after_move = False

    def check_writable(self, operation: str = "write") -> None:
        """Raise before an operation writes anything when this store must not be
        written: :class:`~oluo_lab.snapshot.errors.ReadOnlyLab` naming ``operation`` when
        this process cannot write it (a read-only mount or bucket), or
        :class:`~oluo_lab.snapshot.errors.UnsafeObjectStore` (an object store that failed
        the conditional-write self-test). A store that only learns it from a refused
        write may accept here."""
        return None

    def where(self, kind: str) -> str:
        """What a message names as the place of ``kind`` (``head``, ``branches``,
        ``tags`` or ``log``)."""
        return {"head": HEAD_NAME, "branches": BRANCHES_NAME, "tags": TAGS_NAME}.get(
            kind, REFS_LOG_NAME
        )

    def other_branches(self) -> dict[str, Head]:
        """Every branch but ``main`` (readable even when ``main``'s ref is not)."""
        return {k: v for k, v in self.branches().items() if k != DEFAULT_BRANCH}

    @abstractmethod
    def locked(self, *, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        """An exclusive section for a read-check-write of refs (and the CAS writes of a
        commit, so a concurrent gc cannot sweep them before a ref names them); ``shared``
        for a reader that must not see a writer's half-done work (a gc plan), which
        works on storage this process cannot write."""

    # ---------------------------------------------------------------- branches
    @abstractmethod
    def read_ref(self, branch: str) -> Head | None:
        """The head of ``branch``; None when the branch does not exist (or is empty)."""

    @abstractmethod
    def branches(self) -> dict[str, Head]:
        """Every branch that has a head: ``main`` first, then the others by name."""

    @abstractmethod
    def compare_and_set(self, branch: str, expected: CID | None, new: Head) -> None:
        """Move ``branch`` to ``new`` if its head is ``expected`` (None: the branch does
        not exist yet); else :class:`HeadMoved` naming the head found, nothing changed."""

    @abstractmethod
    def delete_branch(self, branch: str, expected: CID) -> None:
        """Delete ``branch`` if its head is ``expected`` (else :class:`HeadMoved`)."""

    @abstractmethod
    def repair_ref(self, branch: str, new: Head) -> None:
        """Point ``branch`` at ``new`` whatever its head is now, even unreadable: the
        explicit recovery of ``Lab.repair_head`` (never used by a commit)."""

    # ---------------------------------------------------------------- commit log
    @abstractmethod
    def records(self) -> list[dict[str, Any]]:
        """Every log record, oldest first (see :mod:`.refs_log` for their schema)."""

    @abstractmethod
    def log_commit(self, record: dict[str, Any]) -> int:
        """Append a commit record under the next free commit number, which it returns
        (the record's ``seq`` is set to it)."""

    @abstractmethod
    def log_event(self, record: dict[str, Any]) -> None:
        """Append a record that makes no commit (branch moves, repairs, gc retirements)."""

    # ---------------------------------------------------------------- tags
    @abstractmethod
    def tags(self) -> dict[str, CID]:
        """name -> manifest CID, sorted by name."""

    @abstractmethod
    def set_tag(self, name: str, cid: CID) -> None:
        """Create or move tag ``name``."""

    @abstractmethod
    def delete_tag(self, name: str) -> None:
        """Delete tag ``name`` (KeyError when absent)."""


class LocalRefs(RefStore):
    """:class:`RefStore` over a local data directory (see the module docstring)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir)

    def __repr__(self) -> str:
        return f"LocalRefs({self.path.name!r})"

    def check_writable(self, operation: str = "write") -> None:
        require_writable(self.path, operation)

    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        with data_dir_lock(self.path, shared=shared):
            yield

    def read_ref(self, branch: str) -> Head | None:
        if branch == DEFAULT_BRANCH:
            return read_head(self.path)
        return read_branches(self.path).get(branch)

    def other_branches(self) -> dict[str, Head]:
        return read_branches(self.path)

    def branches(self) -> dict[str, Head]:
        out: dict[str, Head] = {}
        head = read_head(self.path)
        if head is not None:
            out[DEFAULT_BRANCH] = head
        out.update(read_branches(self.path))
        return out

    def _check(self, branch: str, expected: CID | None, found: Head | None) -> None:
        if (None if found is None else found.cid) != expected:
            raise HeadMoved(
                branch,
                None if found is None else found.cid,
                expected,
                f"branch {branch!r} moved: its head is {_short(found and found.cid)}, "
                f"expected {_short(expected)}; nothing was written",
            )

    def compare_and_set(self, branch: str, expected: CID | None, new: Head) -> None:
        if branch == DEFAULT_BRANCH:
            self._check(branch, expected, read_head(self.path))
            write_head(self.path, new)
            return
        heads = read_branches(self.path)
        self._check(branch, expected, heads.get(branch))
        heads[branch] = new
        write_branches(self.path, heads)

    def delete_branch(self, branch: str, expected: CID) -> None:
        if branch == DEFAULT_BRANCH:
            raise ValueError(f"the default branch {DEFAULT_BRANCH!r} cannot be deleted")
        heads = read_branches(self.path)
        self._check(branch, expected, heads.get(branch))
        del heads[branch]
        write_branches(self.path, heads)

    def repair_ref(self, branch: str, new: Head) -> None:
        if branch == DEFAULT_BRANCH:
            write_head(self.path, new)
            return
        heads = read_branches(self.path)
        heads[branch] = new
        write_branches(self.path, heads)

    def records(self) -> list[dict[str, Any]]:
        return refs_log.records(self.path)

    def log_commit(self, record: dict[str, Any]) -> int:
        _, seq = refs_log.commits(self.records())
        refs_log.append(self.path, {**record, "seq": seq})
        return seq

    def log_event(self, record: dict[str, Any]) -> None:
        refs_log.append(self.path, record)

    def tags(self) -> dict[str, CID]:
        return read_tags(self.path)

    def set_tag(self, name: str, cid: CID) -> None:
        tags = read_tags(self.path)
        tags[name] = cid
        write_tags(self.path, tags)

    def delete_tag(self, name: str) -> None:
        tags = read_tags(self.path)
        if name not in tags:
            raise KeyError(f"no tag named {name!r}")
        del tags[name]
        write_tags(self.path, tags)
