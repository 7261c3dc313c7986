"""``Lab.gc``: delete the books no kept generation reaches, planned before executed.

Snapshot layer: the one module that deletes books. Like restic's prune, a gc first
computes a :class:`GcPlan` without changing anything (:func:`plan_gc`):

* **mark** the books of every branch head, of every retained history commit (all, or
  the newest ``keep_last`` of each branch; older ones keep only their manifest, so the
  log stays complete) and of every tagged commit, each under the reason it is kept;
* **sweep** the store: an unmarked book is doomed, unless it was written less than the
  grace period ago (a writer may be about to name it);
* note the history generations this gc **retires** (payloads no longer kept).

A dry run reports the plan (and what the store's sweep would do). A real gc, under the
data-directory lock throughout (a lab on an object store has no lock: its store's sweep
is two-phase instead, docs/FORMAT.md §4.4), first
removes crash-leftover temp files, then plans, then executes the plan: it records the
retired generations in the refs log *before* deleting anything (verify then treats them
as retired even if the gc is killed half-way) and then has the store remove exactly the
plan's doomed books (``BookStore.sweep``; a pack store repacks and deletes whole files,
again only those older than the grace period). A reachable book is never deleted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._faults import fault_point
from ..cas import CID, DEFAULT_GC_GRACE_S, BookStore, SweepReport
from . import refs_log
from .durable import sweep_temp_files
from .errors import PersistIOError
from .head import Head
from .history import generation_books, walk_history
from .refs import RefStore
from .reports import GcReport

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["GcPlan", "gc_lab", "plan_gc"]

#: the reasons a book is kept (besides ``"tag NAME"``), as the report names them
REASON_HEAD = "head"
REASON_HISTORY = "history"
REASON_MANIFEST_ONLY = "history (manifest only)"


@dataclass(frozen=True)
class GcPlan:
    """What a gc deletes and keeps, and why, computed before anything is deleted.

    ``marks``: reason -> the books kept for it, in marking order (``"head"``,
    ``"history"``, ``"history (manifest only)"``, ``"tag NAME"``); a book may be under
    several reasons. ``doomed``: unmarked books older than the grace period, in store
    order (what execution deletes). ``young``: unmarked books kept by the grace period.
    ``retire``: history manifests whose payloads this gc stops keeping, not yet recorded
    as retired in the refs log and not tagged. ``doomed_stored_bytes``: the doomed
    books' size on disk (compressed).
    """

    marks: Mapping[str, frozenset[CID]]
    doomed: tuple[CID, ...]
    young: tuple[CID, ...]
    retire: tuple[CID, ...]
    doomed_stored_bytes: int
    grace_s: float

    @property
    def marked(self) -> frozenset[CID]:
        """Every book some reason keeps."""
        return frozenset().union(*self.marks.values())

    def kept(self) -> tuple[dict[str, int], dict[str, int]]:
        """Books and logical bytes kept per reason, each book counted under its first."""
        books: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        counted: set[CID] = set()
        for reason, marked in self.marks.items():
            mine = marked - counted
            counted |= mine
            books[reason] = len(mine)
            nbytes[reason] = sum(c.size for c in mine)
        return books, nbytes

    def report(
        self, dry_run: bool, temp_files_removed: int = 0, store: SweepReport | None = None
    ) -> GcReport:
        """The report of this plan: as a dry run, or as executed (``store``: what the
        store's sweep did, or would do; a two-phase sweep deletes only the books it had
        tombstoned for the grace period, and says so)."""
        kept_books, kept_bytes = self.kept()
        deleted = (len(self.doomed), sum(c.size for c in self.doomed), self.doomed_stored_bytes)
        two_phase = store is not None and bool(store.tombstoned or store.pending)
        if two_phase:
            assert store is not None
            deleted = (store.books, store.logical_bytes, store.stored_bytes)
        return GcReport(
            dry_run=dry_run,
            deleted_books=deleted[0],
            deleted_bytes=deleted[1],
            deleted_stored_bytes=deleted[2],
            kept_books=kept_books,
            kept_bytes=kept_bytes,
            young_books=len(self.young),
            young_bytes=sum(c.size for c in self.young),
            grace_s=self.grace_s,
            temp_files_removed=temp_files_removed,
            store=store,
            tombstoned_books=store.tombstoned if store is not None else 0,
            pending_books=store.pending if store is not None else 0,
        )


def plan_gc(lab: Lab, grace_s: float, keep_last: int | None = None, bar: Any = None) -> GcPlan:
    """The plan of ``lab.gc(grace_s=..., keep_last=...)``, computed under the data-directory
    lock; nothing is changed. ``bar`` (tqdm-like or None) advances per book swept."""
    _check_keep_last(keep_last)
    with lab.refs.locked(shared=True):
        return _plan(lab, grace_s, keep_last, bar)


def gc_lab(
    lab: Lab,
    dry_run: bool = True,
    grace_s: float = DEFAULT_GC_GRACE_S,
    keep_last: int | None = None,
    bar: Any = None,
) -> GcReport:
    """Mark from the head, retained history and tags; sweep unreachable books older than
    ``grace_s``. ``keep_last`` limits retained history to the newest N generations (their
    manifests stay, so the log remains complete). Never deletes a reachable book.
    ``bar`` (a tqdm-like progress bar or None) advances per book swept and deleted."""
    _check_keep_last(keep_last)
    if not dry_run:
        lab.refs.check_writable("gc")
    with lab.refs.locked(shared=dry_run):
        temp_removed = 0 if dry_run else _sweep_temp_files(lab, grace_s)
        plan = _plan(lab, grace_s, keep_last, bar)
        if dry_run:
            swept = lab.store.sweep(plan.doomed, grace_s=grace_s, dry_run=True, keep=plan.marked)
        else:
            swept = _execute(lab.refs, lab.store, plan, bar)
    return plan.report(dry_run, temp_removed, swept)


def _check_keep_last(keep_last: int | None) -> None:
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")


def _plan(lab: Lab, grace_s: float, keep_last: int | None, bar: Any) -> GcPlan:
    """Mark, sweep and list the generations to retire (hold the data-directory lock)."""
    store = lab.store
    try:
        retired_before = set(refs_log.retired_times(None, lab.refs.records()))
    except PersistIOError:  # an unreadable log: nothing is known to be retired
        retired_before = set()
    marks: dict[str, set[CID]] = {}
    _mark_history(store, list(lab.refs.branches().values()), keep_last, retired_before, marks)
    tags = lab.tags()
    _mark_tags(store, tags, retired_before, marks)
    doomed, young = _sweep(store, set().union(*marks.values()), grace_s, bar)
    kept = marks.get(REASON_HEAD, set()) | marks.get(REASON_HISTORY, set())
    retire = marks.get(REASON_MANIFEST_ONLY, set()) - kept - retired_before - set(tags.values())
    return GcPlan(
        marks={reason: frozenset(books) for reason, books in marks.items()},
        doomed=tuple(doomed),
        young=tuple(young),
        retire=tuple(sorted(retire)),
        doomed_stored_bytes=sum(store.stored_size(c) for c in doomed),
        grace_s=grace_s,
    )


def _mark_history(
    store: BookStore,
    heads: list[Head],
    keep_last: int | None,
    retired_before: set[CID],
    marks: dict[str, set[CID]],
) -> None:
    """Each branch head's books; every retained commit's books (the newest ``keep_last``
    of each branch); the manifests of the others (beyond ``keep_last``, or retired by an
    earlier gc). A commit some branch retains is kept whatever the others say."""
    for head in heads:
        for i, gen in enumerate(walk_history(store, head.cid)):
            if i == 0:
                marks.setdefault(REASON_HEAD, set()).update(
                    generation_books(store, gen.cid, gen.manifest)
                )
            elif (keep_last is None or i < keep_last) and gen.cid not in retired_before:
                marks.setdefault(REASON_HISTORY, set()).update(
                    generation_books(store, gen.cid, gen.manifest)
                )
            else:
                marks.setdefault(REASON_MANIFEST_ONLY, set()).add(gen.cid)


def _mark_tags(
    store: BookStore,
    tags: Mapping[str, CID],
    retired_before: set[CID],
    marks: dict[str, set[CID]],
) -> None:
    """Each tagged generation's books, and the manifests of its history."""
    for name, cid in tags.items():
        books: set[CID] = set()
        for gen in walk_history(store, cid):
            books.add(gen.cid)
            if gen.cid == cid:
                books |= generation_books(store, gen.cid, gen.manifest, retired_before)
        marks.setdefault(f"tag {name}", set()).update(books)


def _sweep(
    store: BookStore, marked: set[CID], grace_s: float, bar: Any
) -> tuple[list[CID], list[CID]]:
    """Unmarked books, split into doomed (older than ``grace_s``) and young."""
    now = time.time()
    doomed: list[CID] = []
    young: list[CID] = []
    if bar is not None:
        bar.set_description("gc sweep", refresh=False)
    for cid in store:
        if bar is not None:
            bar.update(1)
        if cid in marked:
            continue
        if now - store.book_mtime(cid) < grace_s:
            young.append(cid)
        else:
            doomed.append(cid)
    return doomed, young


def _sweep_temp_files(lab: Lab, grace_s: float) -> int:
    """Remove crash leftovers: the data directory's temp files (all: the lock is held)
    and the CAS writers' temp files older than ``grace_s``; returns how many."""
    removed = len(sweep_temp_files(lab.path)) if lab.path is not None else 0
    sweep_store = getattr(lab.store, "sweep_temp_files", None)
    if sweep_store is not None:
        removed += sweep_store(grace_s)
    return removed


def _execute(refs: RefStore, store: BookStore, plan: GcPlan, bar: Any) -> SweepReport:
    """Record the retired generations, then have the store remove exactly the plan's
    doomed books (``store.sweep``: book by book, or a pack store's mark-then-repack, which
    deletes the files it frees only past the grace period; on an object store, two-phase:
    tombstones first, removal once tombstoned for the grace period)."""
    if plan.retire:
        refs.log_event(refs_log.retired_record(plan.retire))
        fault_point("gc.retire_logged")
    return store.sweep(plan.doomed, grace_s=plan.grace_s, bar=bar, keep=plan.marked)
