"""The engine's entry table: what it knows about each live entry, by key (engine layer).

:class:`EntryTable` holds the metadata of every live entry in per-key NumPy columns,
builds an entry's :class:`~oluo_lab.engine.events.EntryMetadata` only when somebody
reads it, and turns the table into the :class:`~oluo_lab.engine.metadata.MetadataColumns`
a snapshot stores (and back, on restore). It knows nothing of vectors: the engine
keeps the table and the compound index in step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .events import EntryMetadata, PrivacyTier, Scope, Target
from .metadata import MetadataColumns, encode_entry_metadata

__all__ = ["EntryTable"]

_SCOPES = tuple(Scope)
_TIERS = tuple(PrivacyTier)
_COLUMNS = (
    "ids_by_key",
    "ent_by_key",
    "scope_by_key",
    "tier_by_key",
    "ingested_by_key",
    "row_by_key",
    "lazy_by_key",
)


class EntryTable:
    """The live entries, columnar and indexed by key.

    Per-key columns (the last slot is always empty, so that key -1 maps to "no entry"):
    ``ids_by_key`` the caller id, ``scope_by_key`` the scope code (-1: no live entry),
    ``tier_by_key`` the privacy tier, ``ingested_by_key`` the ingest time. Expiry times
    (``expiring``), provenance ids (``overlays``) and caller maps are stored only for
    the entries that have them.

    The EntryMetadata of a key is built on first access (:meth:`entry_at`) and cached
    in ``ent_by_key``, for ingested and restored entries alike; ``lazy_by_key`` marks
    a live key whose entry is not built yet and ``n_lazy`` counts them. An ingested
    entry's non-empty caller map is kept in ``meta_by_key`` (as given: its key order);
    a restored entry's is decoded from its row of the stored metadata bytes. An entry
    unchanged since the last compaction or restore has ``row_by_key`` >= 0, its row in
    ``snap``, whose bytes the next compaction reuses verbatim (:meth:`columns`).
    """

    def __init__(self) -> None:
        self.ids_by_key = np.full(64, None, dtype=object)
        self.ent_by_key = np.full(64, None, dtype=object)
        self.scope_by_key = np.full(64, -1, np.int8)
        self.tier_by_key = np.zeros(64, np.int8)
        self.ingested_by_key = np.zeros(64, np.uint64)
        self.row_by_key = np.full(64, -1, np.int64)
        self.lazy_by_key = np.zeros(64, bool)
        #: the stored metadata of the last compaction or restore (only keys and caller
        #: maps: see :func:`_stored_maps`)
        self.snap: MetadataColumns | None = None
        self.meta_by_key: dict[int, dict[str, Any]] = {}  # non-empty maps of ingested entries
        self.n_lazy = 0  # live keys whose EntryMetadata is not built yet
        self.n_live = 0
        self.expiring: dict[int, int] = {}  # key -> expires_at (ms), lightweight entries
        self.overlays: dict[int, tuple[str, ...]] = {}  # only keys with provenance ids
        self.scope_counts = [0, 0, 0]
        self._tk: dict[Target, int] | None = {}  # caller id -> key; None = build on demand

    # ------------------------------------------------------------------ lookups
    @property
    def target_key(self) -> dict[Target, int]:
        """Caller id -> key of every live entry; after a restore or a compaction it is
        built on first use (ids are unique: checked when ingested or decoded)."""
        tk = self._tk
        if tk is None:
            keys = self.live_keys()
            tk = self._tk = dict(zip(self.ids_by_key[keys].tolist(), keys.tolist(), strict=True))
        return tk

    def live_keys(self) -> np.ndarray:
        """Keys of every live entry, ascending (int64)."""
        return np.flatnonzero(self.scope_by_key >= 0)

    def entry_at(self, key: int) -> EntryMetadata:
        """The EntryMetadata of a live key (built from the columns on first use;
        SnapshotDecodeError when its stored caller map is damaged)."""
        e = self.ent_by_key[key]
        if e is None:
            meta = self.meta_by_key.get(key)
            if meta is None:
                row = int(self.row_by_key[key])
                meta = self.snap.metadata_at(row) if row >= 0 else {}
            e = EntryMetadata(
                self.ids_by_key[key],
                meta,
                _TIERS[self.tier_by_key[key]],
                self.expiring.get(key),
                int(self.ingested_by_key[key]),
                _SCOPES[self.scope_by_key[key]],
                self.overlays.get(key, ()),
            )
            self.ent_by_key[key] = e
            self.lazy_by_key[key] = False
            self.n_lazy -= 1
        return e

    def materialise(self, keys: np.ndarray) -> None:
        """Build the EntryMetadata of every not yet built key among ``keys``."""
        if not self.n_lazy:
            return
        lazy = keys[self.lazy_by_key[keys]]  # key -1 maps to the last slot: never lazy
        for key in np.unique(lazy).tolist():
            self.entry_at(key)

    def entries(self) -> dict[int, EntryMetadata]:
        """A copy of the table, key -> EntryMetadata (in key order)."""
        keys = self.live_keys()
        self.materialise(keys)
        return dict(zip(keys.tolist(), self.ent_by_key[keys].tolist(), strict=True))

    def ids_for(self, keys: np.ndarray) -> np.ndarray:
        """The caller id of each key (object array, same shape; None where key == -1)."""
        return self.ids_by_key[keys]

    def entries_for(self, keys: np.ndarray) -> np.ndarray:
        """The EntryMetadata of each key (object array, same shape; None where key == -1)."""
        if self.n_lazy and self.lazy_by_key[keys].any():
            self.materialise(keys.reshape(-1))
        return self.ent_by_key[keys]

    # ------------------------------------------------------------------ changes
    def ensure_capacity(self, max_key: int) -> None:
        """Grow every column to hold ``max_key`` (and the empty last slot)."""
        if max_key + 1 < len(self.ids_by_key):
            return
        cap = max(2 * len(self.ids_by_key), max_key + 2)
        for name in _COLUMNS:
            old = getattr(self, name)
            new = np.full(cap, old[-1], dtype=old.dtype)  # the last slot holds the empty value
            new[: len(old)] = old
            setattr(self, name, new)

    def upsert(
        self,
        keys: np.ndarray,
        targets: list[Target],
        scope_codes: list[int],
        tier_codes: list[int],
        now: int,
        expires_at: list[int | None] | None,
        overlays: list[tuple[str, ...]] | None,
        metas: list[dict[str, Any]] | None,
    ) -> np.ndarray:
        """Store new or re-ingested entries (distinct ``keys``, int64; the other lists
        align with them; a None list: no entry has one). Every field of a re-ingested
        entry is replaced except its scope, which becomes the widest of old and new.
        Returns the stored scope code of each key (int8)."""
        self.ensure_capacity(int(keys.max()))
        old_scopes = self.scope_by_key[keys]  # -1: a new key
        scopes = np.maximum(np.asarray(scope_codes, np.int8), old_scopes)
        old = old_scopes >= 0
        n_old = int(np.count_nonzero(old))
        counts = np.bincount(scopes, minlength=3)
        if n_old:
            counts -= np.bincount(old_scopes[old], minlength=3)
            self.row_by_key[keys[old]] = -1  # no longer its snapshot row
            for key in keys[old].tolist():  # replaced below if the new entry has them
                self.expiring.pop(key, None)
                self.overlays.pop(key, None)
                self.meta_by_key.pop(key, None)
        self.scope_counts = [c + int(a) for c, a in zip(self.scope_counts, counts, strict=True)]
        self.n_live += len(keys) - n_old
        key_list = keys.tolist()
        self.target_key.update(zip(targets, key_list, strict=True))
        # the sparse per-key fields: only entries that have one are stored
        if expires_at is not None:
            for key, t in zip(key_list, expires_at, strict=True):
                if t is not None:
                    self.expiring[key] = t
        for field, values in ((self.overlays, overlays), (self.meta_by_key, metas)):
            if values is not None:
                for key, v in zip(key_list, values, strict=True):
                    if v:  # (an empty tuple or map is not stored)
                        field[key] = v
        # the per-key columns, in bulk; the EntryMetadata is built on first access
        ids = np.empty(len(keys), object)
        ids[:] = targets  # (a list would be coerced to str/int64)
        self.ids_by_key[keys] = ids
        self.ent_by_key[keys] = None
        self.n_lazy += len(keys) - int(np.count_nonzero(self.lazy_by_key[keys]))
        self.lazy_by_key[keys] = True
        self.scope_by_key[keys] = scopes
        self.tier_by_key[keys] = tier_codes
        self.ingested_by_key[keys] = now
        return scopes

    def remove(self, keys: list[int]) -> tuple[Target, ...]:
        """Drop live entries; returns their caller ids (in the order of ``keys``)."""
        removed = []
        tk = self.target_key
        for key in keys:
            target = self.ids_by_key[key]
            del tk[target]
            self.scope_counts[self.scope_by_key[key]] -= 1
            self.row_by_key[key] = -1
            if self.lazy_by_key[key]:
                self.lazy_by_key[key] = False
                self.n_lazy -= 1
            self.meta_by_key.pop(key, None)
            self.ids_by_key[key] = None
            self.ent_by_key[key] = None
            self.scope_by_key[key] = -1
            self.expiring.pop(key, None)
            self.overlays.pop(key, None)
            self.n_live -= 1
            removed.append(target)
        return tuple(removed)

    # ------------------------------------------------------------------ snapshots
    def columns(self) -> MetadataColumns:
        """The live entries as columns (key order), without building an EntryMetadata.

        The caller maps of entries still equal to their snapshot row are copied from the
        snapshot's stored bytes (in runs of adjacent rows); only the others are encoded.
        """
        keys = self.live_keys()
        n = len(keys)
        rows = self.row_by_key[keys]
        fresh = np.flatnonzero(rows < 0)
        fk = keys[fresh]
        lazy = self.lazy_by_key[fk]
        if not self.meta_by_key and lazy.all():  # only empty maps (encoded as _EMPTY_MAP)
            pieces = [encode_entry_metadata({})] * len(fk)
        else:  # a built entry's map is its EntryMetadata's
            mk, ents = self.meta_by_key, self.ent_by_key
            pieces = [
                encode_entry_metadata(mk.get(k) if lz else ents[k].metadata)
                for k, lz in zip(fk.tolist(), lazy.tolist(), strict=True)
            ]
        starts = np.zeros(n, np.int64)  # offsets into src = snapshot bytes + fresh pieces
        lens = np.zeros(n, np.int64)
        parts: list[bytes] = []
        if self.snap is not None and len(fresh) < n:
            old = np.flatnonzero(rows >= 0)
            ends = self.snap.metadata_ends
            r = rows[old]
            begin = np.where(r > 0, ends[r - 1], 0)
            starts[old], lens[old] = begin, ends[r] - begin
            parts.append(self.snap.metadata)
        if pieces:
            plen = np.fromiter(map(len, pieces), np.int64, len(pieces))
            base = len(parts[0]) if parts else 0
            starts[fresh] = base + np.cumsum(plen) - plen
            lens[fresh] = plen
        if len(fresh) == 0 and n and n == len(self.snap) and (rows == np.arange(n)).all():
            blob = self.snap.metadata  # unchanged since the restore: reuse as is
        else:
            src = memoryview(b"".join([*parts, *pieces]) if pieces else (parts or [b""])[0])
            cut = np.flatnonzero(starts[1:] != starts[:-1] + lens[:-1]) + 1
            first = np.concatenate(([0], cut)).tolist() if n else []
            last = np.concatenate((cut, [n])).tolist() if n else []
            st, ln = starts.tolist(), lens.tolist()
            blob = b"".join(
                src[st[a] : st[b - 1] + ln[b - 1]] for a, b in zip(first, last, strict=True)
            )
        exp_keys = np.asarray(sorted(self.expiring), np.int64)
        ov_keys = np.asarray(sorted(self.overlays), np.int64)
        return MetadataColumns(
            keys=keys.astype(np.int64),
            targets=self.ids_by_key[keys],
            scope=self.scope_by_key[keys],
            privacy_tier=self.tier_by_key[keys],
            ingested_at_ms=self.ingested_by_key[keys],
            expires_rows=np.searchsorted(keys, exp_keys).astype(np.int64),
            expires_at=np.asarray([self.expiring[k] for k in exp_keys.tolist()], np.uint64),
            overlay_rows=np.searchsorted(keys, ov_keys).astype(np.int64),
            overlays=tuple(self.overlays[k] for k in ov_keys.tolist()),
            metadata_ends=np.cumsum(lens),
            metadata=blob,
        )

    def stored(self, cols: MetadataColumns, base_keys_sorted: np.ndarray) -> None:
        """Every live entry is now row ``i`` of the stored ``cols`` (:meth:`columns` of
        this table, just compacted): the next compaction reuses their bytes. Ingested
        caller maps stay in ``meta_by_key``. The id -> key map is rebuilt when next
        needed (an ingest, delete or id lookup: ~2% of an append compaction's time),
        as after a restore: ~80 bytes per entry."""
        self.snap = _stored_maps(cols, base_keys_sorted)
        self.row_by_key[cols.keys] = np.arange(len(cols), dtype=np.int64)
        self._tk = None

    def restore(self, cols: MetadataColumns, base_keys_sorted: np.ndarray) -> None:
        """Fill an empty table from decoded snapshot columns (validated by
        ``decode_metadata``: key order, ranges, unique ids); every entry is built on
        first use."""
        keys = cols.keys  # entry rows, ascending key
        n = len(cols)
        self.ensure_capacity(max(int(keys[-1]) if n else -1, 0))
        self.ids_by_key[keys] = cols.targets
        self.scope_by_key[keys] = cols.scope
        self.tier_by_key[keys] = cols.privacy_tier
        self.ingested_by_key[keys] = cols.ingested_at_ms
        self.lazy_by_key[keys] = True
        self.n_lazy = self.n_live = n
        self.scope_counts = np.bincount(cols.scope, minlength=3).tolist()
        self.expiring = dict(
            zip(keys[cols.expires_rows].tolist(), cols.expires_at.tolist(), strict=True)
        )
        self.overlays = dict(zip(keys[cols.overlay_rows].tolist(), cols.overlays, strict=True))
        self.stored(cols, base_keys_sorted)


def _stored_maps(cols: MetadataColumns, base_keys_sorted: np.ndarray) -> MetadataColumns:
    """``cols`` with only what the table reads back from it: the keys (row count, error
    messages) and the caller maps (``metadata``, ``metadata_ends``, for ``metadata_at``).
    The other columns are copied into the per-key columns; holding them twice would
    cost ~18 bytes per entry. The keys are the base's sorted keys (the same values,
    right after a compaction or restore), which the index holds anyway."""
    same = np.array_equal(base_keys_sorted, cols.keys)
    return replace(
        cols,
        keys=base_keys_sorted if same else cols.keys,
        targets=np.zeros(0, object),
        scope=np.zeros(0, np.int8),
        privacy_tier=np.zeros(0, np.int8),
        ingested_at_ms=np.zeros(0, np.uint64),
        expires_rows=np.zeros(0, np.int64),
        expires_at=np.zeros(0, np.uint64),
        overlay_rows=np.zeros(0, np.int64),
        overlays=(),
        row_order=None,
    )
