"""``Lab.verify``: check everything reachable, like ``restic check``.

Snapshot layer: reads the refs (head, branches, tags) and the commit log through the
lab's :class:`~oluo_lab.snapshot.refs.RefStore` (local files or objects), every
reachable manifest and book,
runs the store's own check (``BookStore.check``: packs, trailers, index files), and
rebuilds every retained engine; it writes nothing and reports what it finds as
:class:`~oluo_lab.snapshot.reports.Problem` rows instead of raising. A generation whose
payloads gc retired (recorded in the refs log) is checked as a manifest only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _io
from ..cas import CID, BookStore, ContentError
from . import refs_log
from .base_cache import BASE_NAME
from .branches import DEFAULT_BRANCH
from .errors import OluoPersistError
from .history import Generation, generation_books, payload_collected, walk_history
from .index_codec import decode_index
from .persist import restore_engine
from .reports import Problem, VerifyReport

if TYPE_CHECKING:
    from ..engine import OluoEngine
    from .lab import Lab

__all__ = ["verify_lab"]

_FAILURES = (ContentError, OluoPersistError)


@dataclass
class _Tally:
    """What a verify has found so far."""

    problems: list[Problem] = field(default_factory=list)
    checked: list[int] = field(default_factory=list)  # generations fully checked
    reachable: set[CID] = field(default_factory=set)
    books_checked: int = 0
    bytes_checked: int = 0
    searched: int = 0
    partly_marked: list[int] = field(default_factory=list)  # books not all listed

    def error(self, kind: str, where: str, generation: int | None, message: str) -> None:
        self.problems.append(Problem("error", kind, where, generation, message))


def verify_lab(lab: Lab, sample: int = 32, bar: Any = None) -> VerifyReport:
    """Re-hash every reachable book, decode every manifest, load every retained index,
    check its entries against the metadata, its graph's invariants (lists packed, holes
    unlinked and zeroed, no list naming a hole, a live entry point on the top level:
    each broken one a ``graph`` problem naming the generation and index position) and
    that a sample of entries finds itself.
    ``bar`` (a tqdm-like progress bar or None) advances by the bytes of each book read."""
    tally = _Tally()
    roots = _roots(lab, tally)
    try:
        retired = set(refs_log.retired_times(None, lab.refs.records()))
    except OluoPersistError:
        retired = set()
    seen: set[CID] = set()
    for root, label in roots:
        try:
            for gen in walk_history(lab.store, root):
                if gen.cid in seen:
                    break
                seen.add(gen.cid)
                _verify_generation(lab, gen, retired, sample, tally, bar)
        except _FAILURES as exc:
            tally.error(type(exc).__name__, root.hex, None, f"{label}: {exc}")
    if roots and roots[0][1] == "head" and tally.checked and lab.path is not None:
        with contextlib.suppress(*_FAILURES):
            _check_base_cache(lab, tally.problems)  # (a damaged head manifest is reported above)
    return _report(lab.store, tally)


def _roots(lab: Lab, tally: _Tally) -> list[tuple[CID, str]]:
    """The head, every other branch and every tag, labelled; an unreadable head,
    branches or tags file is an error."""
    refs = lab.refs
    roots: list[tuple[CID, str]] = []
    try:
        head = refs.read_ref(DEFAULT_BRANCH)
        if head is not None:
            roots.append((head.cid, "head"))
    except OluoPersistError as exc:
        tally.error("head", refs.where("head"), None, str(exc))
    try:
        roots.extend((h.cid, f"branch {name}") for name, h in refs.other_branches().items())
    except OluoPersistError as exc:
        tally.error("branches", refs.where("branches"), None, str(exc))
    try:
        roots.extend((cid, f"tag {name}") for name, cid in refs.tags().items())
    except OluoPersistError as exc:
        tally.error("tags", refs.where("tags"), None, str(exc))
    return roots


def _verify_generation(
    lab: Lab, gen: Generation, retired: set[CID], sample: int, tally: _Tally, bar: Any
) -> None:
    """Check one generation; a failure becomes a problem naming the CID it concerns."""
    store, g = lab.store, gen.generation
    if bar is not None:
        bar.set_description(f"verify generation {g}", refresh=False)
    try:
        store.get(gen.cid)
        manifest_only = gen.cid in retired or payload_collected(store, gen.manifest)
        tally.reachable.add(gen.cid)
        if manifest_only:
            if gen.cid not in retired:
                tally.error(
                    "payload-missing",
                    gen.cid.hex,
                    g,
                    "both payload roots are missing and gc did not retire this generation",
                )
            return
        books = _mark_books(store, gen, tally)
        _rehash(store, books, tally, bar)
        engine, _ = restore_engine(store, gen.manifest, lab.compact_threshold, check_entries=True)
        tally.checked.append(g)
        if len(engine) != gen.manifest.entries:
            tally.error(
                "entry-count",
                gen.cid.hex,
                g,
                f"index holds {len(engine)} entries, manifest says {gen.manifest.entries}",
            )
        for position, message in engine.graph_problems():
            tally.error(
                "graph", gen.manifest.index_cid.hex, g, f"index position {position}: {message}"
            )
        tally.searched += _self_search(engine, sample, gen.cid, g, tally.problems)
    except _FAILURES as exc:
        where = exc.cid.hex if isinstance(getattr(exc, "cid", None), CID) else gen.cid.hex
        tally.error(type(exc).__name__, where, g, str(exc))


def _mark_books(store: BookStore, gen: Generation, tally: _Tally) -> set[CID]:
    """The generation's books, marked reachable; when they cannot all be listed, its two
    payload roots are marked, the generation noted, and the failure re-raised."""
    try:
        books = generation_books(store, gen.cid, gen.manifest)
    except _FAILURES:
        tally.partly_marked.append(gen.generation)
        tally.reachable.update((gen.manifest.index_cid, gen.manifest.metadata_cid))
        raise
    tally.reachable |= books
    return books


def _rehash(store: BookStore, books: set[CID], tally: _Tally, bar: Any) -> None:
    """Read (and so hash-verify) every book, in CID order."""
    for cid in sorted(books):
        store.get(cid)
        tally.books_checked += 1
        tally.bytes_checked += cid.size
        if bar is not None:
            bar.update(cid.size)


def _self_search(engine: OluoEngine, sample: int, cid: CID, g: int, problems: list[Problem]) -> int:
    keys, ids, vectors = engine.live_vectors()
    if len(keys) == 0 or sample <= 0:
        return 0
    step = max(1, -(-len(keys) // sample))
    rows = np.arange(0, len(keys), step)[:sample]
    res = engine.search(vectors[rows], k=1)
    exact = engine.search(vectors[rows], k=1, exact=True)
    for row, hit_key, hit_score, best in zip(
        rows.tolist(),
        res.keys[:, 0].tolist(),
        res.scores[:, 0].tolist(),
        exact.scores[:, 0].tolist(),
        strict=True,
    ):
        if hit_key != int(keys[row]) and hit_score > best:
            problems.append(
                Problem(
                    "error",
                    "self-search",
                    cid.hex,
                    g,
                    f"entry {ids[row]!r} does not find itself (got key {hit_key})",
                )
            )
    return len(rows)


def _check_base_cache(lab: Lab, problems: list[Problem]) -> None:
    """A warning when the base cache does not hold the head's index (a load rebuilds it)."""
    assert lab.path is not None
    head = lab.head(DEFAULT_BRANCH)
    try:
        data = _io.read_file(lab.path / BASE_NAME)
    except FileNotFoundError:
        message = "base cache missing; load_snapshot rebuilds it from the CAS"
    except OSError as exc:
        message = str(exc)
    else:
        if len(data) == head.manifest.index_size and data == decode_index(
            head.manifest.index_cid, lab.store
        ):
            return
        message = "base cache differs from the head's index; load_snapshot rebuilds it"
    problems.append(Problem("warning", "base-cache", BASE_NAME, head.generation, message))


def _store_problems(store: BookStore) -> list[Problem]:
    """The store's own check (a pack store: packs against their names, trailers against
    the index), as errors naming the file and, where there is one, the book."""
    try:
        check = store.check()
    except _FAILURES as exc:
        return [Problem("error", "store", "store", None, str(exc))]
    return [
        Problem(
            "error",
            "store",
            p.where,
            None,
            p.message if p.cid is None else f"{p.message} (book {p.cid.hex})",
        )
        for p in check.problems
    ]


def _report(store: BookStore, tally: _Tally) -> VerifyReport:
    """The report: findings, counts, and the books nothing reachable names."""
    problems = list(tally.problems)
    problems += _store_problems(store)
    unreachable = [c for c in store if c not in tally.reachable]
    if tally.partly_marked:
        problems.append(
            Problem(
                "warning",
                "unreachable-approximate",
                "store",
                None,
                f"the books of generation(s) {sorted(set(tally.partly_marked))} could not all "
                "be listed (see the errors above), so some of them may be counted as unreachable",
            )
        )
    return VerifyReport(
        generations_checked=tuple(sorted(set(tally.checked), reverse=True)),
        commits_checked=len(tally.checked),
        books_checked=tally.books_checked,
        bytes_checked=tally.bytes_checked,
        entries_searched=tally.searched,
        problems=tuple(problems),
        unreachable_books=len(unreachable),
        unreachable_bytes=sum(c.size for c in unreachable),
    )
