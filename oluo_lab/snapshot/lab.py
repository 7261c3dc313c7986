"""``Lab``: the notebook workspace over one data directory.

A Lab is a data directory (head, base cache, lock, refs log, tags) plus a book store
under ``path/cas`` (``oluo_lab.cas.open_store``: a new lab gets a pack store, an existing
one keeps the store it has). It commits engines as
generations, walks and tabulates their history, checks out any generation,
names checkpoints with tags, diffs, verifies and garbage-collects.

Snapshot layer, top: the workspace the notebooks use. It reads and writes the
data-directory files only through their owner modules (:mod:`.head`,
:mod:`.refs_log`, :mod:`.base_cache`, :mod:`.tags`) and delegates ``diff``,
``verify`` and ``gc`` to :mod:`.diff`, :mod:`.verify` and :mod:`.gc`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._progress import progress_bar
from ..cas import CID, ContentError, open_store, reassemble
from ..engine import OluoEngine, PersistSnapshot
from . import refs_log
from .base_cache import base_holds
from .diff import diff_snapshots
from .durable import data_dir_lock
from .errors import OluoPersistError, PersistIOError, SnapshotNotFound
from .gc import gc_lab
from .head import Head, read_head, write_head
from .history import generation_books, walk_history
from .index_codec import decode_index
from .manifest import SnapshotManifest, check_note, fetch_manifest, manifest_html
from .persist import persist_snapshot, restore_engine
from .reports import GcReport, ManifestDiff, VerifyReport
from .tags import TAGS_NAME as TAGS_NAME  # the tags file's name, also importable from here
from .tags import check_tag_name, read_tags, write_tags
from .verify import verify_lab

__all__ = ["Lab", "Snapshot"]

Ref = int | str | CID


@dataclass(frozen=True)
class Snapshot:
    """One committed generation: its manifest CID and decoded manifest."""

    cid: CID
    manifest: SnapshotManifest

    @property
    def generation(self) -> int:
        return self.manifest.compact_generation

    @property
    def entries(self) -> int:
        return self.manifest.entries

    @property
    def note(self) -> str:
        return self.manifest.note

    @property
    def annotations(self) -> Mapping[str, Any]:
        return self.manifest.annotations

    @property
    def parent(self) -> CID | None:
        return self.manifest.parent

    def __repr__(self) -> str:
        note = f", note={self.note!r}" if self.note else ""
        return f"Snapshot(generation={self.generation}, cid={self.cid.short}, entries={self.entries}{note})"

    def _repr_html_(self) -> str:
        return manifest_html(self.manifest, f"Snapshot (generation {self.generation})", self.cid)


class Lab:
    """A history of engine generations in one directory (created if missing)."""

    def __init__(self, path: Path | str, *, compact_threshold: int = 1000) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise PersistIOError(f"lab path {self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PersistIOError(f"cannot create lab directory {self.path}", exc) from exc
        self.store = open_store(self.path / "cas")  # as found, else a new pack store
        self.compact_threshold = compact_threshold

    def __repr__(self) -> str:
        head = read_head(self.path)
        where = "empty" if head is None else f"head=generation {head.generation}"
        return f"Lab({self.path.name!r}, {where})"

    def _repr_html_(self) -> str:
        return lab_html(self)

    # ------------------------------------------------------------------ reading
    def head(self) -> Snapshot | None:
        """The head generation, or None for an empty lab."""
        head = read_head(self.path)
        if head is None:
            return None
        return Snapshot(head.cid, fetch_manifest(self.store, head.cid, "head manifest"))

    def history(self, limit: int | None = None) -> list[Snapshot]:
        """Generations from the head back along parent links, newest first."""
        head = read_head(self.path)
        if head is None:
            return []
        return [Snapshot(g.cid, g.manifest) for g in walk_history(self.store, head.cid, limit)]

    def log(self):
        """One row per generation, newest first (a pandas DataFrame).

        ``bytes`` counts the logical bytes of every book the generation reaches;
        ``new_bytes`` those of its books its parent does not reach.
        """
        import pandas as pd

        rows = []
        snaps = self.history()
        tags = self._tags_by_cid()
        retired = refs_log.retired(self.path)
        books = [generation_books(self.store, s.cid, s.manifest, retired) for s in snaps]
        for i, snap in enumerate(snaps):
            mine = books[i]
            parent_books = books[i + 1] if i + 1 < len(books) else set()
            rows.append(
                {
                    "generation": snap.generation,
                    "manifest": snap.cid.short,
                    "parent": "" if snap.parent is None else snap.parent.short,
                    "entries": snap.entries,
                    "bytes": sum(c.size for c in mine),
                    "new_bytes": sum(c.size for c in mine - parent_books),
                    "note": snap.note,
                    "annotations": dict(snap.annotations),
                    "tags": ", ".join(tags.get(snap.cid, [])),
                }
            )
        columns = [
            "generation",
            "manifest",
            "parent",
            "entries",
            "bytes",
            "new_bytes",
            "note",
            "annotations",
            "tags",
        ]
        return pd.DataFrame(rows, columns=columns)

    def resolve(self, ref: Ref | Snapshot) -> Snapshot:
        """Find a generation by number, tag, ``"HEAD"``, CID, or unique CID hex prefix.

        Works without a readable head file for CIDs, tags and generation
        numbers recorded in the refs log, so a damaged head can be recovered
        from with :meth:`checkout`.
        """
        if isinstance(ref, Snapshot):
            return ref
        if isinstance(ref, CID):
            return Snapshot(ref, fetch_manifest(self.store, ref))
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise TypeError(
                f"a generation reference is an int, str or CID, not {type(ref).__name__}"
            )
        if isinstance(ref, int):
            return self._by_generation(ref)
        if ref.upper() == "HEAD":
            head = self.head()
            if head is None:
                raise SnapshotNotFound("HEAD", "the lab is empty")
            return head
        tags = self.tags()
        if ref in tags:
            return self.resolve(tags[ref])
        if re.fullmatch(r"[0-9a-f]{80}", ref):
            return self.resolve(CID.parse(ref))
        if re.fullmatch(r"[0-9a-f]{6,79}", ref):
            matches = [
                s
                for s in self.history()
                if s.cid.hex.startswith(ref) or s.cid.short.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise SnapshotNotFound(ref, f"prefix matches {len(matches)} generations")
        raise SnapshotNotFound(ref, "no generation, tag or CID by that name")

    def _by_generation(self, generation: int) -> Snapshot:
        try:
            for snap in self.history():
                if snap.generation == generation:
                    return snap
                if snap.generation < generation:
                    break
        except (OluoPersistError, ValueError):
            pass  # damaged head or history: fall back to the refs log below
        for cid in refs_log.heads_for(self.path, generation):
            try:
                snap = Snapshot(cid, fetch_manifest(self.store, cid))
            except OluoPersistError:
                continue
            if snap.generation == generation:
                return snap
        raise SnapshotNotFound(str(generation), "no such generation in the history or refs log")

    # ------------------------------------------------------------------ writing
    def commit(
        self, engine: OluoEngine, note: str = "", *, progress: bool = True, **annotations: Any
    ) -> Snapshot:
        """Persist the engine's state as the next generation and return it.

        Snapshots queued by automatic compactions are persisted first, in order;
        then the engine is compacted and the result persisted with ``note`` and
        ``annotations`` (experiment parameters, results). With nothing changed
        and no note or annotations, the head is returned as it is; with a note
        or annotations on unchanged state, a new generation records them.

        ``progress``: a ``tqdm.auto`` bar (shown after half a second) with one step for
        the compaction and one per generation persisted.
        """
        with progress_bar(progress, total=2, desc="commit: compact", unit="step") as bar:
            return self._commit(engine, note, annotations, bar)

    def _commit(
        self, engine: OluoEngine, note: str, annotations: Mapping[str, Any], bar: Any
    ) -> Snapshot:
        check_note(note, annotations)  # before the engine compacts: bad input changes nothing
        snaps: list[PersistSnapshot] = engine.take_snapshots()
        last = engine.compact()
        if last is not None:
            snaps.append(last)
        head = self.head()
        if not snaps:
            current = engine.current_snapshot()
            unchanged = head is not None and self._holds(head, current)
            if unchanged and not note and not annotations:
                return head
            if head is None or unchanged or current.generation <= head.generation:
                forced = engine.compact(force=True)
                snaps.append(forced)
            else:
                snaps.append(current)
        bar.total = 1 + len(snaps)
        bar.update(1)
        for i, snap in enumerate(snaps):
            final = i == len(snaps) - 1
            bar.set_description(f"commit: persist generation {snap.generation}", refresh=False)
            base_path, generation = persist_snapshot(
                self.path,
                self.store,
                snap.index_bytes,
                snap.metadata_bytes,
                snap.key_counter,
                snap.generation,
                note=note if final else "automatic compaction",
                annotations=annotations if final else None,
                progress=False,  # this commit's own bar counts the persists
            )
            bar.update(1)
        with data_dir_lock(self.path):  # another process may have replaced the base since
            if base_holds(base_path, snap.index_bytes):
                engine.compact_complete(str(base_path), generation)
        return self._by_generation(generation)  # not head(): another commit may follow ours

    def _holds(self, snap: Snapshot, payload: PersistSnapshot) -> bool:
        """Does the generation hold exactly these payload bytes (by size and digest)?"""
        m = snap.manifest
        if (m.index_size, m.metadata_size) != (
            len(payload.index_bytes),
            len(payload.metadata_bytes),
        ):
            return False
        if reassemble(m.metadata_cid, self.store) != payload.metadata_bytes:
            return False
        return decode_index(m.index_cid, self.store) == payload.index_bytes

    def checkout(self, ref: Ref | Snapshot = "HEAD", *, progress: bool = True) -> OluoEngine:
        """An engine holding exactly the entries of generation ``ref``.

        The engine continues the lab's history: its next commit becomes
        generation head + 1 with the head as parent, so going back to an old
        generation never rewrites history.

        ``progress``: a ``tqdm.auto`` bar over the payload bytes (shown after half a
        second); reading, decoding and rebuilding the engine are one step, so it
        reports elapsed time while they run and the byte rate when done.
        """
        try:  # read once, before resolving: a head read twice can move in between
            head = self.head()
        except (OluoPersistError, ContentError):
            head = None  # damaged head: see repair_head
        is_head = isinstance(ref, str) and ref.upper() == "HEAD" and head is not None
        snap = head if is_head else self.resolve(ref)
        size = snap.manifest.index_size + snap.manifest.metadata_size
        desc = f"checkout generation {snap.generation}"
        with progress_bar(progress, total=size, desc=desc, unit="B", unit_scale=True) as bar:
            engine, _ = restore_engine(self.store, snap.manifest, self.compact_threshold)
            bar.update(size)
        if head is not None and head.generation > engine.generation:
            engine.renumber(head.generation)
        return engine

    def repair_head(self, ref: Ref | Snapshot | None = None) -> Snapshot:
        """Point a damaged (or lost) head file at a known-good generation.

        ``ref`` defaults to the newest generation in the refs log whose manifest
        and payloads load. The head otherwise never moves backwards; this is the
        explicit way to recover. The move is recorded in the refs log.
        """
        if ref is None:
            snap = self._newest_loadable()
        else:
            snap = self.resolve(ref)
            restore_engine(self.store, snap.manifest, self.compact_threshold)
        with data_dir_lock(self.path):
            refs_log.record_head_move(self.path, "repair", snap.cid, snap.generation, snap.parent)
            write_head(self.path, Head(snap.cid, snap.generation))
        return snap

    def _newest_loadable(self) -> Snapshot:
        try:
            moves = refs_log.head_moves(self.path, missing_ok=False)
        except PersistIOError as exc:
            raise SnapshotNotFound("HEAD", f"no refs log to recover from ({exc.cause})") from exc
        for _, cid in sorted(set(moves), key=lambda gc: (-gc[0], gc[1])):
            try:
                snap = Snapshot(cid, fetch_manifest(self.store, cid))
                restore_engine(self.store, snap.manifest, self.compact_threshold)
                return snap
            except (OluoPersistError, ContentError):
                continue
        raise SnapshotNotFound("HEAD", "no generation in the refs log loads")

    # ------------------------------------------------------------------ tags
    def tags(self) -> dict[str, CID]:
        """Named checkpoints (tags double as gc pins): name -> manifest CID."""
        return read_tags(self.path)

    def _tags_by_cid(self) -> dict[CID, list[str]]:
        out: dict[CID, list[str]] = {}
        for name, cid in self.tags().items():
            out.setdefault(cid, []).append(name)
        return out

    def tag(self, name: str, ref: Ref | Snapshot = "HEAD", *, force: bool = False) -> Snapshot:
        """Name a generation (a checkpoint gc always keeps); ``force`` moves an existing tag."""
        check_tag_name(name)
        snap = self.resolve(ref)
        with data_dir_lock(self.path):
            tags = self.tags()
            if name in tags and tags[name] != snap.cid and not force:
                raise ValueError(
                    f"tag {name!r} already names {tags[name].short}; pass force=True to move it"
                )
            tags[name] = snap.cid
            write_tags(self.path, tags)
        return snap

    def untag(self, name: str) -> None:
        """Remove a tag (KeyError naming it when absent)."""
        with data_dir_lock(self.path):
            tags = self.tags()
            if name not in tags:
                raise KeyError(f"no tag named {name!r}")
            del tags[name]
            write_tags(self.path, tags)

    pin = tag
    unpin = untag

    # ------------------------------------------------------------------ inspection

    def diff(
        self,
        a: Ref | Snapshot,
        b: Ref | Snapshot = "HEAD",
        *,
        queries: Any = None,
        k: int = 10,
        semantic: bool = True,
    ) -> ManifestDiff:
        """What changed from generation ``a`` to ``b``: manifest fields, books and bytes,
        entries (ids added, removed, metadata or vector changed) and, with ``semantic``,
        the answers on a fixed query set (``queries``, default a deterministic sample of
        ``a``'s vectors): recall@k of each side against its exact answers and the
        neighbour overlap between the sides."""
        return diff_snapshots(self, self.resolve(a), self.resolve(b), queries, k, semantic)

    def verify(self, sample: int = 32, *, progress: bool = True) -> VerifyReport:
        """Check everything reachable (like ``restic check``); truthy when clean.

        ``progress``: a ``tqdm.auto`` bar of the bytes re-hashed, per generation."""
        with progress_bar(progress, desc="verify", unit="B", unit_scale=True) as bar:
            return verify_lab(self, sample, bar)

    def gc(
        self,
        dry_run: bool = True,
        *,
        grace_s: float = 3600.0,
        keep_last: int | None = None,
        progress: bool = True,
    ) -> GcReport:
        """Delete unreachable books older than ``grace_s`` (only reports when ``dry_run``).

        ``progress``: a ``tqdm.auto`` bar counting the books swept and deleted."""
        with progress_bar(progress, desc="gc", unit="book") as bar:
            return gc_lab(self, dry_run, grace_s, keep_last, bar)


def lab_html(lab: Lab, rows_shown: int = 20) -> str:
    """The Lab's HTML repr: one row per generation (newest first) with a stacked SVG bar
    of the bytes it shares with its parent and the bytes it added, on one common scale.
    The newest ``rows_shown`` generations are in the open table, the rest in ``<details>``."""
    from .._html import COLORS, Raw, details, fmt_bytes, svg_bar, table

    log = lab.log()
    head = read_head(lab.path)
    caption = (
        f"Lab {lab.path.name!r}: empty"
        if head is None
        else f"Lab {lab.path.name!r}: {len(log)} generations, head = generation {head.generation}"
    )
    if log.empty:
        return table(caption, None, [])
    scale = max(int(log["bytes"].max()), 1)
    header = [
        "generation",
        "manifest",
        "entries",
        "bytes",
        "new bytes",
        "shared | new",
        "note",
        "tags",
    ]
    rows = []
    for rec in log.itertuples(index=False):
        shared = int(rec.bytes) - int(rec.new_bytes)
        bar = svg_bar(
            [("shared", shared, COLORS["shared"]), ("new", int(rec.new_bytes), COLORS["new"])],
            width=160,
            total=scale,
            fmt=lambda v: fmt_bytes(int(v)),
        )
        rows.append(
            [
                rec.generation,
                Raw(f"<code>{rec.manifest}…</code>"),
                rec.entries,
                fmt_bytes(int(rec.bytes)),
                fmt_bytes(int(rec.new_bytes)),
                bar,
                rec.note,
                rec.tags,
            ]
        )
    out = table(caption, header, rows[:rows_shown])
    if len(rows) > rows_shown:
        out += details(
            f"{len(rows) - rows_shown} older generations", table(None, header, rows[rows_shown:])
        )
    return Raw(out)
