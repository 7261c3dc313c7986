"""diff, verify and gc over a Lab's history (the bodies of ``Lab.diff/verify/gc``)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .._faults import fault_point
from ..cas import CID, ContentError, reassemble
from ..engine import decode_metadata
from .durable import data_dir_lock, sweep_temp_files
from .errors import OluoPersistError
from .history import generation_books, payload_collected, walk_history
from .index_codec import decode_index
from .persist import (
    BASE_NAME,
    REFS_LOG_NAME,
    _append_refs_log,
    _now_text,
    read_head,
    restore_engine,
)
from .reports import GcReport, ManifestDiff, Problem, SemanticDiff, VerifyReport

if TYPE_CHECKING:
    from ..engine import OluoEngine
    from .lab import Lab, Snapshot

__all__ = ["diff_snapshots", "gc_lab", "verify_lab"]

_DIFF_FIELDS = (
    "key_counter",
    "compact_generation",
    "entries",
    "index_size",
    "metadata_size",
    "index_config",
    "chunker",
    "note",
    "annotations",
    "index_cid",
    "metadata_cid",
    "parent",
)


def _show(value: Any) -> Any:
    return value.short if isinstance(value, CID) else value


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    if truth.size == 0:
        return 1.0
    hits = sum(
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist()))
        for f, t in zip(found, truth, strict=True)
    )
    denom = int((truth >= 0).sum())
    return hits / denom if denom else 1.0


def _id_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    if len(a) == 0:
        return 1.0
    total = 0
    for ra, rb in zip(a, b, strict=True):
        total += len({x for x in ra if x is not None} & {x for x in rb if x is not None})
    return total / (k * len(a))


def default_queries(engine: OluoEngine, n: int = 100) -> np.ndarray:
    """A fixed, deterministic query set: every ⌈N/n⌉-th live vector in key order."""
    _, _, vectors = engine.live_vectors()
    if len(vectors) == 0:
        return vectors
    step = max(1, -(-len(vectors) // n))
    return np.ascontiguousarray(vectors[::step][:n])


def semantic_diff(ea: OluoEngine, eb: OluoEngine, queries: np.ndarray, k: int) -> SemanticDiff:
    """Recall of each side against its own exact answers, and the overlap of the two."""
    ra, rb = ea.search(queries, k=k), eb.search(queries, k=k)
    ta, tb = ea.search(queries, k=k, exact=True), eb.search(queries, k=k, exact=True)
    return SemanticDiff(
        k=k,
        n_queries=len(queries),
        recall_a=_recall(ra.keys, ta.keys),
        recall_b=_recall(rb.keys, tb.keys),
        overlap=_id_overlap(ra.ids, rb.ids, k),
    )


def diff_snapshots(
    lab: Lab, a: Snapshot, b: Snapshot, queries: Any = None, k: int = 10, semantic: bool = True
) -> ManifestDiff:
    """Field, byte, entry and (optionally) answer-level differences from ``a`` to ``b``."""
    store = lab.store
    ma, mb = a.manifest, b.manifest
    fields = {
        name: (_show(getattr(ma, name)), _show(getattr(mb, name)))
        for name in _DIFF_FIELDS
        if getattr(ma, name) != getattr(mb, name)
    }
    books_a = generation_books(store, a.cid, ma)
    books_b = generation_books(store, b.cid, mb)
    shared, added, removed = books_a & books_b, books_b - books_a, books_a - books_b

    meta_a = decode_metadata(reassemble(ma.metadata_cid, store)).entries
    meta_b = decode_metadata(reassemble(mb.metadata_cid, store)).entries
    # ids are listed in key order (insertion order), a's keys for removals, b's otherwise
    by_id_a = {meta_a[key].target: meta_a[key] for key in sorted(meta_a)}
    by_id_b = {meta_b[key].target: meta_b[key] for key in sorted(meta_b)}
    ids_added = tuple(t for t in by_id_b if t not in by_id_a)
    ids_removed = tuple(t for t in by_id_a if t not in by_id_b)
    common = [t for t in by_id_b if t in by_id_a]
    changed_meta = tuple(t for t in common if _entry_view(by_id_a[t]) != _entry_view(by_id_b[t]))

    changed_vec: tuple[Any, ...] = ()
    sem = None
    if semantic or queries is not None:
        ea, _ = restore_engine(store, ma, lab.compact_threshold)
        eb, _ = restore_engine(store, mb, lab.compact_threshold)
        changed_vec = _changed_vectors(ea, eb, common)
        q = default_queries(ea) if queries is None else np.asarray(queries)
        if len(q):
            sem = semantic_diff(ea, eb, q, k)
    return ManifestDiff(
        a=a.generation,
        b=b.generation,
        a_cid=a.cid.hex,
        b_cid=b.cid.hex,
        fields=fields,
        books_shared=len(shared),
        books_added=len(added),
        books_removed=len(removed),
        bytes_shared=sum(c.size for c in shared),
        bytes_added=sum(c.size for c in added),
        bytes_removed=sum(c.size for c in removed),
        ids_added=ids_added,
        ids_removed=ids_removed,
        ids_changed_metadata=changed_meta,
        ids_changed_vector=changed_vec,
        semantic=sem,
    )


def _entry_view(entry: Any) -> tuple:
    """What counts as an entry's metadata for a diff (everything but its key)."""
    return (
        entry.scope,
        entry.privacy_tier,
        entry.expires_at,
        entry.ingested_at_ms,
        tuple(entry.overlays),
        repr(sorted(entry.metadata.items(), key=lambda kv: kv[0])),
    )


def _changed_vectors(ea: OluoEngine, eb: OluoEngine, common: list[Any]) -> tuple[Any, ...]:
    _, ids_a, va = ea.live_vectors()
    _, ids_b, vb = eb.live_vectors()
    row_a = {t: i for i, t in enumerate(ids_a)}
    row_b = {t: i for i, t in enumerate(ids_b)}
    if not common:
        return ()
    ia = np.fromiter((row_a[t] for t in common), np.int64, len(common))
    ib = np.fromiter((row_b[t] for t in common), np.int64, len(common))
    differ = np.any(va[ia] != vb[ib], axis=1)
    return tuple(t for t, d in zip(common, differ.tolist(), strict=True) if d)


# ---------------------------------------------------------------------- verify


def verify_lab(lab: Lab, sample: int = 32, bar: Any = None) -> VerifyReport:
    """Re-hash every reachable book, decode every manifest, load every retained index,
    check its entries against the metadata and that a sample of entries finds itself.
    ``bar`` (a tqdm-like progress bar or None) advances by the bytes of each book read."""
    store = lab.store
    problems: list[Problem] = []
    checked: list[int] = []
    reachable: set[CID] = set()
    books_checked = bytes_checked = searched = 0
    partly_marked: list[int] = []  # generations whose books could not all be listed

    roots: list[tuple[CID, str]] = []
    try:
        head = read_head(lab.path)
        if head is not None:
            roots.append((head.cid, "head"))
    except OluoPersistError as exc:
        problems.append(Problem("error", "head", "oluo_head.json", None, str(exc)))
    try:
        roots.extend((cid, f"tag {name}") for name, cid in lab.tags().items())
    except OluoPersistError as exc:
        problems.append(Problem("error", "tags", "oluo_tags.json", None, str(exc)))

    collected = retired_generations(lab)
    seen_manifests: set[CID] = set()
    for root, label in roots:
        try:
            for gen in walk_history(store, root):
                if gen.cid in seen_manifests:
                    break
                seen_manifests.add(gen.cid)
                g = gen.generation
                if bar is not None:
                    bar.set_description(f"verify generation {g}", refresh=False)
                try:
                    store.get(gen.cid)
                    if gen.cid in collected or payload_collected(store, gen.manifest):
                        reachable.add(gen.cid)
                        if gen.cid not in collected:
                            problems.append(
                                Problem(
                                    "error",
                                    "payload-missing",
                                    gen.cid.hex,
                                    g,
                                    "both payload roots are missing and gc did not "
                                    "retire this generation",
                                )
                            )
                        continue
                    reachable.add(gen.cid)
                    try:
                        books = generation_books(store, gen.cid, gen.manifest)
                    except (ContentError, OluoPersistError):
                        partly_marked.append(g)
                        reachable.update((gen.manifest.index_cid, gen.manifest.metadata_cid))
                        raise
                    reachable |= books
                    for cid in sorted(books):
                        store.get(cid)
                        books_checked += 1
                        bytes_checked += cid.size
                        if bar is not None:
                            bar.update(cid.size)
                    engine, _ = restore_engine(
                        store, gen.manifest, lab.compact_threshold, check_entries=True
                    )
                    checked.append(g)
                    if len(engine) != gen.manifest.entries:
                        problems.append(
                            Problem(
                                "error",
                                "entry-count",
                                gen.cid.hex,
                                g,
                                f"index holds {len(engine)} entries, manifest says "
                                f"{gen.manifest.entries}",
                            )
                        )
                    searched += _self_search(engine, sample, gen.cid, g, problems)
                except (ContentError, OluoPersistError) as exc:
                    where = (
                        exc.cid.hex if isinstance(getattr(exc, "cid", None), CID) else gen.cid.hex
                    )
                    problems.append(Problem("error", type(exc).__name__, where, g, str(exc)))
        except (ContentError, OluoPersistError) as exc:
            problems.append(Problem("error", type(exc).__name__, root.hex, None, f"{label}: {exc}"))

    if roots and roots[0][1] == "head" and checked:
        with contextlib.suppress(ContentError, OluoPersistError):
            _check_base_cache(lab, problems)  # (a damaged head manifest is reported above)
    unreachable = [c for c in store if c not in reachable]
    if partly_marked:
        problems.append(
            Problem(
                "warning",
                "unreachable-approximate",
                "store",
                None,
                f"the books of generation(s) {sorted(set(partly_marked))} could not all be "
                "listed (see the errors above), so some of them may be counted as unreachable",
            )
        )
    return VerifyReport(
        generations_checked=tuple(sorted(set(checked), reverse=True)),
        books_checked=books_checked,
        bytes_checked=bytes_checked,
        entries_searched=searched,
        problems=tuple(problems),
        unreachable_books=len(unreachable),
        unreachable_bytes=sum(c.size for c in unreachable),
    )


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
    head = lab.head()
    path = lab.path / BASE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(
            Problem(
                "warning",
                "base-cache",
                BASE_NAME,
                head.generation,
                "base cache missing; load_snapshot rebuilds it from the CAS",
            )
        )
        return
    except OSError as exc:
        problems.append(Problem("warning", "base-cache", BASE_NAME, head.generation, str(exc)))
        return
    if len(data) != head.manifest.index_size or data != decode_index(
        head.manifest.index_cid, lab.store
    ):
        problems.append(
            Problem(
                "warning",
                "base-cache",
                BASE_NAME,
                head.generation,
                "base cache differs from the head's index; load_snapshot rebuilds it",
            )
        )


# ---------------------------------------------------------------------- gc


def retired_generations(lab: Lab) -> set[CID]:
    """Manifests whose payloads gc retired on purpose (recorded in the refs log)."""
    out: set[CID] = set()
    path = lab.path / REFS_LOG_NAME
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
            if rec.get("op") == "gc-retire":
                out.update(CID.parse(h) for h in rec["retired"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def gc_lab(
    lab: Lab,
    dry_run: bool = True,
    grace_s: float = 3600.0,
    keep_last: int | None = None,
    bar: Any = None,
) -> GcReport:
    """Mark from the head, retained history and tags; sweep unreachable books older than
    ``grace_s``. ``keep_last`` limits retained history to the newest N generations (their
    manifests stay, so the log remains complete). Never deletes a reachable book.
    ``bar`` (a tqdm-like progress bar or None) advances per book swept and deleted."""
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    store = lab.store
    with data_dir_lock(lab.path):
        temp_removed = 0 if dry_run else len(sweep_temp_files(lab.path))
        sweep_store = getattr(store, "sweep_temp_files", None)
        if not dry_run and sweep_store is not None:  # crash leftovers of the CAS's writers
            temp_removed += sweep_store(grace_s)
        reasons: dict[str, set[CID]] = {}
        retired_before = retired_generations(lab)
        head = read_head(lab.path)
        if head is not None:
            history = list(walk_history(store, head.cid))
            for i, gen in enumerate(history):
                if i == 0:
                    reasons.setdefault("head", set()).update(
                        generation_books(store, gen.cid, gen.manifest)
                    )
                elif (keep_last is None or i < keep_last) and gen.cid not in retired_before:
                    reasons.setdefault("history", set()).update(
                        generation_books(store, gen.cid, gen.manifest)
                    )
                else:
                    reasons.setdefault("history (manifest only)", set()).add(gen.cid)
        for name, cid in lab.tags().items():
            books: set[CID] = set()
            for gen in walk_history(store, cid):
                books |= {gen.cid}
                if gen.cid == cid:
                    books |= generation_books(store, gen.cid, gen.manifest, retired_before)
            reasons.setdefault(f"tag {name}", set()).update(books)
        marked: set[CID] = set().union(*reasons.values()) if reasons else set()
        kept_books: dict[str, int] = {}
        kept_bytes: dict[str, int] = {}
        counted: set[CID] = set()
        for reason, books in reasons.items():
            mine = books - counted
            counted |= mine
            kept_books[reason] = len(mine)
            kept_bytes[reason] = sum(c.size for c in mine)
        now = time.time()
        doomed: list[CID] = []
        young = young_bytes = 0
        if bar is not None:
            bar.set_description("gc sweep", refresh=False)
        for cid in store:
            if bar is not None:
                bar.update(1)
            if cid in marked:
                continue
            if now - store.book_mtime(cid) < grace_s:
                young += 1
                young_bytes += cid.size
                continue
            doomed.append(cid)
        stored = sum(store.stored_size(c) for c in doomed)
        if not dry_run:
            tagged = set(lab.tags().values())
            retired = sorted(
                reasons.get("history (manifest only)", set()) - retired_before - tagged
            )
            if retired:
                _append_refs_log(
                    lab.path,
                    {"op": "gc-retire", "retired": [c.hex for c in retired], "time": _now_text()},
                )
                fault_point("gc.retire_logged")
            for cid in doomed:
                fault_point("gc.before_delete")
                store.delete(cid)
                fault_point("gc.after_delete")
                if bar is not None:
                    bar.update(1)
    return GcReport(
        dry_run=dry_run,
        deleted_books=len(doomed),
        deleted_bytes=sum(c.size for c in doomed),
        deleted_stored_bytes=stored,
        kept_books=kept_books,
        kept_bytes=kept_bytes,
        young_books=young,
        young_bytes=young_bytes,
        grace_s=grace_s,
        temp_files_removed=temp_removed,
    )
