"""OluoEngine: the sans-I/O search engine and its notebook convenience layer."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._html import kv_table
from .._progress import progress_bar
from .errors import (
    CompactionFailed,
    DuplicateIds,
    EngineErrorBase,
    EngineInputError,
    EngineRestoreFailed,
    InvalidEvent,
    InvalidK,
    UnknownId,
    UnknownMetric,
)
from .events import (
    Compact,
    CompactComplete,
    Delete,
    EngineError,
    EntryMetadata,
    EvictExpired,
    IndexFull,
    IndexLightweight,
    IndexUpdated,
    Ingest,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
    Search,
    Target,
)
from .index import METRICS, CompoundIndex, IndexConfig
from .metadata import (
    DecodedMetadata,
    MetadataColumns,
    decode_metadata,
    encode_columns,
    encode_entry_metadata,
    normalize_metadata,
    normalize_target,
)
from .results import SearchResults

__all__ = ["OluoEngine"]

_U64_MAX = 2**64 - 1
#: ``add`` shows a progress bar for batches of at least this many vectors.
PROGRESS_MIN_ROWS = 10_000
#: Largest ``k`` a search accepts: results are padded to ``k`` columns, so an absurd k
#: (say 10**12) would otherwise try to allocate that many slots per query.
MAX_K = 1 << 20
_NETWORK_WIDE = Scope.NETWORK_WIDE


_SCOPES = tuple(Scope)
_TIERS = tuple(PrivacyTier)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_uint(name: str, value: Any) -> int:
    if not _is_int(value) or int(value) < 0:
        raise InvalidEvent(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _per_entry(name: str, value: Any, n: int, scalar: Callable[[Any], bool]) -> list[Any]:
    """Broadcast one value to n entries, or check a sequence has length n."""
    if scalar(value):
        return [value] * n
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidEvent(f"{name} must be one value or a sequence of {n}, got {value!r}")
    vals = list(value)
    if len(vals) != n:
        raise InvalidEvent(f"{name} has {len(vals)} items for {n} vectors")
    return vals


def _scope(value: Any) -> Scope:
    try:
        return Scope(value)
    except (ValueError, TypeError):
        raise InvalidEvent(f"unknown scope {value!r}") from None


def _tier(value: Any) -> PrivacyTier:
    try:
        return PrivacyTier(value)
    except (ValueError, TypeError):
        raise InvalidEvent(f"unknown privacy tier {value!r}") from None


class OluoEngine:
    """Vector search engine: compound faiss HNSW base + exact delta, driven by events.

    The core is :meth:`handle` (sans-I/O: events in, actions out; the caller owns
    time and files). The methods :meth:`add`, :meth:`search`, :meth:`delete`,
    :meth:`compact` are a notebook layer that sends events to :meth:`handle` and
    raises the typed error of any :class:`EngineError` action.

    Snapshots produced by an automatic compaction inside :meth:`add` are passed to
    ``on_snapshot`` or, when it is None, queued in :attr:`pending_snapshots`
    (:meth:`take_snapshots` returns and clears them). None is dropped.

    ``metric="hamming"``: ``dim`` is the number of bits (a multiple of 8) and
    vectors are packed bits, uint8 arrays of shape (n, dim // 8).

    ``build_threads``: faiss threads used by compactions. The default 1 makes the
    graph, hence the snapshot bytes and CIDs, a pure function of the operations;
    more threads build faster but HNSW insertion order then varies between runs,
    so the graph bytes (and search results near ties) are **not deterministic**.
    Not stored in snapshots.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        compact_threshold: int = 1000,
        M: int = 16,
        ef_construction: int = 128,
        ef_search: int = 64,
        *,
        on_snapshot: Callable[[PersistSnapshot], None] | None = None,
        build_threads: int = 1,
    ) -> None:
        if metric not in METRICS:
            raise UnknownMetric(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
        for name, v in (("dim", dim), ("M", M), ("ef_construction", ef_construction)):
            if not _is_int(v) or int(v) <= 0:
                raise InvalidEvent(f"{name} must be a positive int, got {v!r}")
        if not _is_int(ef_search) or int(ef_search) <= 0:
            raise InvalidK(f"ef_search must be a positive int, got {ef_search!r}")
        if not _is_int(compact_threshold) or int(compact_threshold) <= 0:
            raise InvalidEvent(
                f"compact_threshold must be a positive int, got {compact_threshold!r}"
            )
        if metric == "hamming" and int(dim) % 8:
            raise InvalidEvent(f"hamming dim is a bit count and must be a multiple of 8, got {dim}")
        if not _is_int(build_threads) or int(build_threads) <= 0:
            raise InvalidEvent(f"build_threads must be a positive int, got {build_threads!r}")
        self.config = IndexConfig(int(dim), metric, int(M), int(ef_construction), int(ef_search))
        self.compact_threshold = int(compact_threshold)
        self.on_snapshot = on_snapshot
        self.pending_snapshots: list[PersistSnapshot] = []
        self._index = CompoundIndex(self.config, build_threads=int(build_threads))
        # The entry table is columnar, indexed by key (the last slot is always empty so
        # that key -1 maps to "no entry"): caller id, scope (-1 = no live entry), privacy
        # tier, ingest time; expiry times, provenance ids and caller maps are stored only
        # for the entries that have them. The EntryMetadata of a key is built on first
        # access and cached in ``_ent_by_key`` (``_lazy_by_key``: a live key whose entry is
        # not built yet), for ingested and restored entries alike. An ingested entry's
        # non-empty caller map is kept in ``_meta_by_key`` (as given: its key order); a
        # restored entry's is decoded from its row of the stored metadata bytes. An entry
        # unchanged since the last compaction or restore has ``_row_by_key`` >= 0, its row
        # in ``_snap``, whose bytes the next compaction reuses verbatim.
        self._ids_by_key = np.full(64, None, dtype=object)
        self._ent_by_key = np.full(64, None, dtype=object)
        self._scope_by_key = np.full(64, -1, np.int8)
        self._tier_by_key = np.zeros(64, np.int8)
        self._ingested_by_key = np.zeros(64, np.uint64)
        self._row_by_key = np.full(64, -1, np.int64)
        self._lazy_by_key = np.zeros(64, bool)  # a live key whose entry is not built yet
        self._snap: MetadataColumns | None = None  # (only keys and caller maps: _stored_maps)
        self._meta_by_key: dict[int, dict[str, Any]] = {}  # non-empty maps of ingested entries
        self._n_lazy = 0  # live keys whose EntryMetadata is not built yet
        self._n_live = 0
        self._tk: dict[Target, int] | None = {}  # caller id -> key; None = build on demand
        self._expiring: dict[int, int] = {}
        self._overlays: dict[int, tuple[str, ...]] = {}  # only keys with provenance ids
        self._scope_counts = [0, 0, 0]
        self._key_counter = 0
        self._generation = 0
        self._has_compacted = False

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def generation(self) -> int:
        """Compaction generation: 0 before the first compaction, +1 per successful one."""
        return self._generation

    @property
    def key_counter(self) -> int:
        """Next fresh key (monotonic, keys are never reused)."""
        return self._key_counter

    @property
    def scope_counts(self) -> tuple[int, int, int]:
        """Live entries per scope (PERSONAL, COMMUNITY, NETWORK_WIDE)."""
        return tuple(self._scope_counts)

    @property
    def delta_size(self) -> int:
        return self._index.delta_n

    @property
    def base_size(self) -> int:
        """Vectors physically in the base (including tombstoned ones)."""
        return self._index.base_n

    def __len__(self) -> int:
        return self._n_live

    def __contains__(self, target: object) -> bool:
        return target in self._target_key

    @property
    def _target_key(self) -> dict[Target, int]:
        """Caller id -> key of every live entry; after a restore or a compaction it is
        built on first use (ids are unique: checked when ingested or decoded)."""
        tk = self._tk
        if tk is None:
            keys = self._live_keys()
            tk = self._tk = dict(zip(self._ids_by_key[keys].tolist(), keys.tolist(), strict=True))
        return tk

    def _live_keys(self) -> np.ndarray:
        """Keys of every live entry, ascending (int64)."""
        return np.flatnonzero(self._scope_by_key >= 0)

    def _entry_at(self, key: int) -> EntryMetadata:
        """The EntryMetadata of a live key (built from the columns on first use)."""
        e = self._ent_by_key[key]
        if e is None:
            meta = self._meta_by_key.get(key)
            if meta is None:
                row = int(self._row_by_key[key])
                meta = self._snap.metadata_at(row) if row >= 0 else {}
            e = EntryMetadata(
                self._ids_by_key[key],
                meta,
                _TIERS[self._tier_by_key[key]],
                self._expiring.get(key),
                int(self._ingested_by_key[key]),
                _SCOPES[self._scope_by_key[key]],
                self._overlays.get(key, ()),
            )
            self._ent_by_key[key] = e
            self._lazy_by_key[key] = False
            self._n_lazy -= 1
        return e

    def _materialise(self, keys: np.ndarray) -> None:
        """Build the EntryMetadata of every not yet built key among ``keys``."""
        if not self._n_lazy:
            return
        lazy = keys[self._lazy_by_key[keys]]  # key -1 maps to the last slot: never lazy
        for key in np.unique(lazy).tolist():
            self._entry_at(key)

    def entry(self, target: Target) -> EntryMetadata:
        """The metadata of a live entry (UnknownId if absent)."""
        key = self._target_key.get(target)
        if key is None:
            raise UnknownId(f"no live entry with id {target!r}")
        return self._entry_at(key)

    def key_of(self, target: Target) -> int:
        """The key of a live entry (UnknownId if absent)."""
        key = self._target_key.get(target)
        if key is None:
            raise UnknownId(f"no live entry with id {target!r}")
        return key

    def entries(self) -> dict[int, EntryMetadata]:
        """A copy of the metadata table, key -> EntryMetadata (in key order)."""
        keys = self._live_keys()
        self._materialise(keys)
        return dict(zip(keys.tolist(), self._ent_by_key[keys].tolist(), strict=True))

    def __repr__(self) -> str:
        return (
            f"OluoEngine(dim={self.dim}, metric={self.metric!r}, entries={len(self)}, "
            f"base={self._index.base_n}, delta={self._index.delta_n}, generation={self._generation})"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("dim", self.dim),
            ("metric", self.metric),
            ("entries", len(self)),
            ("base", self._index.base_n),
            ("delta", self._index.delta_n),
            ("generation", self._generation),
            ("key_counter", self._key_counter),
            ("compact_threshold", self.compact_threshold),
            (
                "M / ef_construction / ef_search",
                f"{self.config.M} / {self.config.ef_construction} / {self.config.ef_search}",
            ),
        ]
        return kv_table("OluoEngine", rows)

    # ------------------------------------------------------------------ core
    def handle(self, event: object) -> list[object]:
        """Apply one event and return the actions it produces.

        Errors are returned as ``[EngineError(error, query_id)]`` with the engine
        state unchanged; they are never raised from here. Before any event other
        than a Search, outstanding search results get their ids and entries
        resolved, so a result always describes the engine as it was at search time.
        """
        if type(event) is Search:  # the hot path: no table lookup
            try:
                return [self._search(event)]
            except EngineErrorBase as exc:
                return [EngineError(exc, event.query_id)]
        outstanding = self._outstanding
        if outstanding:
            self._settle_results()
        name = _HANDLERS.get(type(event))
        if name is None:  # subclasses of the event types
            name = next((m for t, m in _HANDLERS.items() if isinstance(event, t)), None)
        qid = event.query_id if isinstance(event, Search) else None
        try:
            if name is None:
                raise InvalidEvent(f"unknown event type {type(event).__name__}")
            return getattr(self, name)(event)
        except EngineErrorBase as exc:
            return [EngineError(exc, qid)]

    def _handle_search(self, ev: Search) -> list[object]:
        return [self._search(ev)]

    def _handle_compact(self, ev: Compact) -> list[object]:
        changed = self._index.delta_n or self._index.n_dead or self._index.base is None
        snap = self._compact() if changed or ev.force else None
        return [] if snap is None else [snap]

    # ------------------------------------------------------------------ ingest
    def _ensure_capacity(self, max_key: int) -> None:
        if max_key + 1 < len(self._ids_by_key):
            return
        cap = max(2 * len(self._ids_by_key), max_key + 2)
        for name in (
            "_ids_by_key",
            "_ent_by_key",
            "_scope_by_key",
            "_tier_by_key",
            "_ingested_by_key",
            "_row_by_key",
            "_lazy_by_key",
        ):
            old = getattr(self, name)
            new = np.full(cap, old[-1], dtype=old.dtype)  # the last slot holds the empty value
            new[: len(old)] = old
            setattr(self, name, new)

    def _ingest(self, ev: Ingest) -> list[object]:
        vecs = self._index.prepare(ev.vectors)
        n = vecs.shape[0]
        single = np.ndim(ev.vectors) == 1
        if single and (isinstance(ev.targets, (str, int, np.integer))):
            raw_targets = [ev.targets]
        else:
            if isinstance(ev.targets, (str, bytes)) or not isinstance(ev.targets, Iterable):
                raise InvalidEvent(f"targets must be a sequence of ids, got {ev.targets!r}")
            raw_targets = list(ev.targets)
        if len(raw_targets) != n:
            raise InvalidEvent(f"{len(raw_targets)} ids for {n} vectors")
        targets = [normalize_target(t) for t in raw_targets]
        if len(set(targets)) != n:
            seen: set[Target] = set()
            dups = [t for t in targets if t in seen or seen.add(t)]
            raise DuplicateIds(f"ids repeated within one batch: {dups[:5]!r}")
        now = _check_uint("now_ms", ev.now_ms)
        if now > _U64_MAX:
            raise InvalidEvent(f"now_ms must fit in an unsigned 64-bit int, got {now}")
        if ev.metadata is None:
            metas = None  # every entry's caller map is empty (nothing is stored for it)
        else:
            metas_raw = _per_entry(
                "metadata", ev.metadata, n, lambda v: v is None or isinstance(v, Mapping)
            )
            metas = [normalize_metadata(m) for m in metas_raw]
        decisions = _per_entry(
            "decision",
            ev.decision,
            n,
            lambda v: isinstance(v, (Reject, IndexFull, IndexLightweight)),
        )
        for d in decisions:
            if not isinstance(d, (Reject, IndexFull, IndexLightweight)):
                raise InvalidEvent(f"unknown ingest decision {d!r}")
            if isinstance(d, IndexLightweight):
                _check_uint("ttl_secs", d.ttl_secs)
        # scope and tier codes (one value for the whole batch, the common case: validated once)
        if _is_int(ev.scope):
            scope_codes = [int(_scope(ev.scope))] * n
        else:
            scope_codes = [int(_scope(s)) for s in _per_entry("scope", ev.scope, n, _is_int)]
        if _is_int(ev.privacy_tier):
            tier_codes = [int(_tier(ev.privacy_tier))] * n
        else:
            tier_codes = [
                int(_tier(t)) for t in _per_entry("privacy_tier", ev.privacy_tier, n, _is_int)
            ]
        if ev.overlays is None:
            overlays = None  # no entry has provenance ids
        else:
            ov = ev.overlays
            if single and isinstance(ov, Sequence) and all(isinstance(o, str) for o in ov):
                ov = [ov]
            if isinstance(ov, (str, bytes)) or not isinstance(ov, Iterable):
                raise InvalidEvent("overlays must be a sequence (one sequence of str per entry)")
            ov = list(ov)
            if len(ov) != n:
                raise InvalidEvent(f"overlays has {len(ov)} items for {n} vectors")
            overlays = []
            for o in ov:
                if isinstance(o, str) or not isinstance(o, Iterable):
                    raise InvalidEvent(
                        f"overlays of one entry must be a sequence of str, got {o!r}"
                    )
                o = tuple(o)
                if not all(isinstance(x, str) for x in o):
                    raise InvalidEvent(f"overlay ids must be str, got {o!r}")
                overlays.append(tuple(str(x) for x in o))

        # ---- plan (no mutation yet)
        next_key = self._key_counter
        idx_rows: list[int] = []
        idx_keys: list[int] = []
        out_keys: list[int | None] = []
        remove_keys: list[int] = []
        tk_get = self._target_key.get
        dropped = int(PrivacyTier.ENCRYPTED_EPHEMERAL)
        for i in range(n):
            old_key = tk_get(targets[i])
            if tier_codes[i] == dropped or isinstance(decisions[i], Reject):
                out_keys.append(None)
                if old_key is not None:
                    remove_keys.append(old_key)
                continue
            if old_key is None:
                key = next_key
                next_key += 1
            else:
                key = old_key
            idx_rows.append(i)
            idx_keys.append(key)
            out_keys.append(key)
        if not idx_rows and not remove_keys:
            return []

        # ---- apply
        removed = self._remove_keys(sorted(remove_keys))
        if idx_rows:
            every = len(idx_rows) == n
            keys_arr = np.asarray(idx_keys, np.int64)
            self._ensure_capacity(max(next_key - 1, int(keys_arr.max())))
            # a re-ingested entry keeps the widest of its old and new scopes
            old_scopes = self._scope_by_key[keys_arr]  # -1: a new key
            codes = scope_codes if every else [scope_codes[i] for i in idx_rows]
            scope_arr = np.maximum(np.asarray(codes, np.int8), old_scopes)
            self._index.upsert(keys_arr, vecs if every else vecs[idx_rows], scope_arr)
            new_targets = targets if every else [targets[i] for i in idx_rows]
            old = old_scopes >= 0
            n_old = int(np.count_nonzero(old))
            counts = np.bincount(scope_arr, minlength=3)
            if n_old:
                counts -= np.bincount(old_scopes[old], minlength=3)
                self._row_by_key[keys_arr[old]] = -1  # no longer its snapshot row
                for key in keys_arr[old].tolist():  # replaced below if the new entry has them
                    self._expiring.pop(key, None)
                    self._overlays.pop(key, None)
                    self._meta_by_key.pop(key, None)
            self._scope_counts = [
                c + int(a) for c, a in zip(self._scope_counts, counts, strict=True)
            ]
            self._n_live += len(idx_keys) - n_old
            self._target_key.update(zip(new_targets, idx_keys, strict=True))
            # the sparse per-key fields: only entries that have one are stored
            if not isinstance(ev.decision, IndexFull):  # (one IndexFull: nothing expires)
                for i, key in zip(idx_rows, idx_keys, strict=True):
                    d = decisions[i]
                    if isinstance(d, IndexLightweight):
                        self._expiring[key] = min(now + int(d.ttl_secs) * 1000, _U64_MAX)
            if overlays is not None:
                for i, key in zip(idx_rows, idx_keys, strict=True):
                    if overlays[i]:
                        self._overlays[key] = overlays[i]
            if metas is not None:
                for i, key in zip(idx_rows, idx_keys, strict=True):
                    if metas[i]:
                        self._meta_by_key[key] = metas[i]
            # the per-key columns, in bulk (keys are distinct within a batch); the
            # EntryMetadata is built on first access (_entry_at)
            ids = np.empty(len(idx_keys), object)
            ids[:] = new_targets  # (a list would be coerced to str/int64)
            self._ids_by_key[keys_arr] = ids
            self._ent_by_key[keys_arr] = None
            self._n_lazy += len(idx_keys) - int(np.count_nonzero(self._lazy_by_key[keys_arr]))
            self._lazy_by_key[keys_arr] = True
            self._scope_by_key[keys_arr] = scope_arr
            tiers = tier_codes if every else [tier_codes[i] for i in idx_rows]
            self._tier_by_key[keys_arr] = tiers
            self._ingested_by_key[keys_arr] = now
            self._key_counter = next_key
        actions: list[object] = []
        if self._index.delta_n >= self.compact_threshold:
            try:
                actions.append(self._compact())
            except EngineErrorBase as exc:  # the ingest itself succeeded
                actions.append(EngineError(exc, None))
        actions.append(IndexUpdated(tuple(out_keys), removed))
        return actions

    def _remove_keys(self, keys: list[int]) -> tuple[Target, ...]:
        removed = []
        tk = self._target_key
        for key in keys:
            target = self._ids_by_key[key]
            del tk[target]
            self._scope_counts[self._scope_by_key[key]] -= 1
            self._row_by_key[key] = -1
            if self._lazy_by_key[key]:
                self._lazy_by_key[key] = False
                self._n_lazy -= 1
            self._meta_by_key.pop(key, None)
            self._ids_by_key[key] = None
            self._ent_by_key[key] = None
            self._scope_by_key[key] = -1
            self._expiring.pop(key, None)
            self._overlays.pop(key, None)
            self._n_live -= 1
            removed.append(target)
        if keys:
            self._index.remove(np.asarray(keys, np.int64))
        return tuple(removed)

    # ------------------------------------------------------------------ delete / evict
    def _delete(self, ev: Delete) -> list[object]:
        raw = ev.targets
        if isinstance(raw, (str, int, np.integer)):
            raw = [raw]
        targets = [normalize_target(t) for t in raw]
        if len(set(targets)) != len(targets):
            raise DuplicateIds(f"ids repeated within one delete: {targets!r}"[:200])
        missing = [t for t in targets if t not in self._target_key]
        if missing:
            raise UnknownId(f"cannot delete ids with no live entry: {missing[:5]!r}")
        keys = sorted(self._target_key[t] for t in targets)
        return [IndexUpdated((), self._remove_keys(keys))] if keys else []

    def _evict(self, ev: EvictExpired) -> list[object]:
        now = _check_uint("now_ms", ev.now_ms)
        keys = sorted(k for k, exp in self._expiring.items() if exp <= now)
        return [IndexUpdated((), self._remove_keys(keys))] if keys else []

    # ------------------------------------------------------------------ search
    #: weak references to search results whose ids/entries are still unresolved (see
    #: handle); a dead result's reference removes itself (the set's discard is its callback)
    _outstanding: set[weakref.ref] | None = None

    def _results(self, query_id: int | None, keys: np.ndarray, scores: np.ndarray) -> SearchResults:
        """A SearchResults whose ids and entries are gathered from ``keys`` on first
        access (most of a search's Python cost otherwise, for a large batch)."""
        resolve = (self._ids_for, self._entries_for)
        res = SearchResults._lazy(query_id, keys, scores, resolve, self.metric)
        outstanding = self._outstanding
        if outstanding is None:
            outstanding = self._outstanding = set()
        outstanding.add(weakref.ref(res, outstanding.discard))
        return res

    def _ids_for(self, keys: np.ndarray) -> np.ndarray:
        """The caller id of each key (object array, same shape; None where key == -1)."""
        return self._ids_by_key[keys]

    def _settle_results(self) -> None:
        """Resolve every outstanding result now, before the entries can change."""
        outstanding = self._outstanding
        for ref in list(outstanding):
            res = ref()
            if res is not None:
                res._settle()
        outstanding.clear()

    def _search(self, ev: Search) -> SearchResults:
        k = ev.k
        if type(k) is not int:
            if not _is_int(k) or k < 0:
                raise InvalidK(f"k must be a non-negative int, got {k!r}")
            k = int(k)
        if k < 0 or k > MAX_K:
            raise InvalidK(f"k must be an int in 0..{MAX_K}, got {k!r}")
        ef = ev.ef
        if ef is None:
            ef = self.config.ef_search
        elif type(ef) is not int:
            if not _is_int(ef):
                raise InvalidK(f"ef must be a positive int, got {ef!r}")
            ef = int(ef)
        if ef <= 0:
            raise InvalidK(f"ef must be a positive int, got {ef!r}")
        scope = ev.scope
        scope = int(scope if type(scope) is Scope else _scope(scope))
        if ev.exact:
            return self._search_exact(ev, k, scope)
        if ef < k:
            ef = k
        v = ev.vectors
        if k and ev.predicate is None and type(v) is np.ndarray and v.ndim == 1:
            hit = self._index.search_one(v, k, ef, scope)
            if hit is not None:
                return self._results(ev.query_id, hit[1], hit[0])
        q = self._index.prepare(v, "queries")
        if k == 0:
            e = np.empty((q.shape[0], 0))
            return SearchResults(
                ev.query_id, e.astype(object), e.astype(np.int64), e, e.astype(object), self.metric
            )
        mask = self._predicate_mask(ev.predicate)
        scores, keys = self._index.search(q, k, ef, scope, mask)
        return self._results(ev.query_id, keys, scores)

    def _predicate_mask(self, pred: Callable[[EntryMetadata], bool] | None) -> np.ndarray | None:
        if pred is None:
            return None
        if not callable(pred):
            raise InvalidEvent("predicate must be callable")
        mask = np.zeros(len(self._ids_by_key), bool)
        keys = self._live_keys()
        self._materialise(keys)
        try:
            ents = self._ent_by_key[keys].tolist()
            allowed = [key for key, e in zip(keys.tolist(), ents, strict=True) if pred(e)]
        except Exception as exc:
            raise EngineInputError(f"predicate raised {type(exc).__name__}: {exc}") from exc
        mask[allowed] = True
        return mask

    def _search_exact(self, ev: Search, k: int, scope: int) -> SearchResults:
        """Brute force over every allowed live entry: the oracle for recall."""
        q = self._index.prepare(ev.vectors, "queries")
        keys, _, vectors = self.live_vectors()
        allowed = self._scope_by_key[keys] <= scope
        mask = self._predicate_mask(ev.predicate)
        if mask is not None:
            allowed &= mask[keys]
        keys, vectors = keys[allowed], vectors[allowed]
        dist, rows = self._index._exact(q, vectors, k)
        valid = rows >= 0
        scores = np.where(valid, self._index._to_scores(dist), np.inf)
        out = np.where(valid, keys[np.maximum(rows, 0)] if len(keys) else -1, -1)
        tie = np.where(out < 0, np.iinfo(np.int64).max, out)
        order = np.lexsort((tie, scores), axis=-1)
        scores = np.take_along_axis(scores, order, 1)
        out = np.take_along_axis(out, order, 1)
        return self._results(ev.query_id, out, scores)

    def _entries_for(self, keys: np.ndarray) -> np.ndarray:
        """The EntryMetadata of each key (object array, same shape; None where key == -1)."""
        if self._n_lazy and self._lazy_by_key[keys].any():
            self._materialise(keys.reshape(-1))
        return self._ent_by_key[keys]

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live entry as (keys int64, caller ids object array, vectors), in key order.

        Vectors are as stored: unit-normalised for cosine, packed bits for hamming.
        """
        idx = self._index
        parts_k, parts_v = [], []
        if idx.base is not None and idx.base_n:
            alive = np.nonzero(idx.base_alive)[0]
            parts_k.append(idx.base_keys[alive])
            parts_v.append(idx.base_vectors()[alive])
        if idx.delta_n:
            parts_k.append(idx.delta_keys[: idx.delta_n])
            parts_v.append(idx.delta_vecs[: idx.delta_n])
        if not parts_k:
            width = self.config.width
            dtype = np.uint8 if self.config.binary else np.float32
            return np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, width), dtype)
        keys = np.concatenate(parts_k)
        vecs = np.concatenate(parts_v)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        return keys, self._ids_by_key[keys], np.ascontiguousarray(vecs[order])

    def current_snapshot(self) -> PersistSnapshot | None:
        """The payloads of the current generation without compacting, or None when
        the delta or tombstones hold changes not in the base yet (compact first)."""
        idx = self._index
        if idx.base is None or idx.delta_n or idx.n_dead:
            return None
        data = idx._serialize(idx.base)
        meta = self._encode_metadata(self._metadata_columns(), self._generation, idx.base_keys)
        return PersistSnapshot(data, meta, self._key_counter, self._generation)

    def _metadata_columns(self) -> MetadataColumns:
        """The live entries as columns (key order), without building an EntryMetadata.

        The caller maps of entries still equal to their snapshot row are copied from the
        snapshot's stored bytes (in runs of adjacent rows); only the others are encoded.
        """
        keys = self._live_keys()
        n = len(keys)
        rows = self._row_by_key[keys]
        fresh = np.flatnonzero(rows < 0)
        fk = keys[fresh]
        lazy = self._lazy_by_key[fk]
        if not self._meta_by_key and lazy.all():  # only empty maps (encoded as _EMPTY_MAP)
            pieces = [encode_entry_metadata({})] * len(fk)
        else:  # a built entry's map is its EntryMetadata's
            mk, ents = self._meta_by_key, self._ent_by_key
            pieces = [
                encode_entry_metadata(mk.get(k) if lz else ents[k].metadata)
                for k, lz in zip(fk.tolist(), lazy.tolist(), strict=True)
            ]
        starts = np.zeros(n, np.int64)  # offsets into src = snapshot bytes + fresh pieces
        lens = np.zeros(n, np.int64)
        parts: list[bytes] = []
        if self._snap is not None and len(fresh) < n:
            old = np.flatnonzero(rows >= 0)
            ends = self._snap.metadata_ends
            r = rows[old]
            begin = np.where(r > 0, ends[r - 1], 0)
            starts[old], lens[old] = begin, ends[r] - begin
            parts.append(self._snap.metadata)
        if pieces:
            plen = np.fromiter(map(len, pieces), np.int64, len(pieces))
            base = len(parts[0]) if parts else 0
            starts[fresh] = base + np.cumsum(plen) - plen
            lens[fresh] = plen
        if len(fresh) == 0 and n and n == len(self._snap) and (rows == np.arange(n)).all():
            blob = self._snap.metadata  # unchanged since the restore: reuse as is
        else:
            src = memoryview(b"".join([*parts, *pieces]) if pieces else (parts or [b""])[0])
            cut = np.flatnonzero(starts[1:] != starts[:-1] + lens[:-1]) + 1
            first = np.concatenate(([0], cut)).tolist() if n else []
            last = np.concatenate((cut, [n])).tolist() if n else []
            st, ln = starts.tolist(), lens.tolist()
            blob = b"".join(
                src[st[a] : st[b - 1] + ln[b - 1]] for a, b in zip(first, last, strict=True)
            )
        exp_keys = np.asarray(sorted(self._expiring), np.int64)
        ov_keys = np.asarray(sorted(self._overlays), np.int64)
        return MetadataColumns(
            keys=keys.astype(np.int64),
            targets=self._ids_by_key[keys],
            scope=self._scope_by_key[keys],
            privacy_tier=self._tier_by_key[keys],
            ingested_at_ms=self._ingested_by_key[keys],
            expires_rows=np.searchsorted(keys, exp_keys).astype(np.int64),
            expires_at=np.asarray([self._expiring[k] for k in exp_keys.tolist()], np.uint64),
            overlay_rows=np.searchsorted(keys, ov_keys).astype(np.int64),
            overlays=tuple(self._overlays[k] for k in ov_keys.tolist()),
            metadata_ends=np.cumsum(lens),
            metadata=blob,
        )

    def _encode_metadata(
        self, cols: MetadataColumns, generation: int, row_keys: np.ndarray
    ) -> bytes:
        """Metadata bytes of the live entries ``cols`` (from :meth:`_metadata_columns`);
        ``row_keys`` is the key at each position of the base they describe (stored as
        ``row_order`` when not in key order)."""
        cols = cols.with_row_keys(row_keys)
        return encode_columns(self.config.as_dict(), self._key_counter, generation, cols)

    def renumber(self, generation: int) -> None:
        """Continue numbering from a later ``generation`` (never backwards): the next
        compaction becomes ``generation + 1``. A Lab uses it when an old generation is
        checked out, so that committing it extends the history instead of rewriting it."""
        if not _is_int(generation) or int(generation) < self._generation:
            raise InvalidEvent(
                f"generation can only move forward: {generation!r} < {self._generation}"
            )
        self._generation = int(generation)

    # ------------------------------------------------------------------ compaction
    def _compact(self) -> PersistSnapshot:
        """Merge the delta into a new base, drop dead vectors, emit the snapshot.

        State changes only after the new base and both byte strings exist.
        """
        try:
            ix, data, keys, scopes = self._index.compact()
        except Exception as exc:
            raise CompactionFailed(f"building the new base failed: {exc}") from exc
        if len(keys) != self._n_live:
            raise CompactionFailed(f"new base has {len(keys)} vectors for {self._n_live} entries")
        gen = self._generation + 1
        cols = self._metadata_columns()
        meta = self._encode_metadata(cols, gen, keys)
        self._index.install(ix, data, keys, scopes)
        self._generation = gen
        self._has_compacted = True
        # every live entry is now a row of the stored metadata, as after a restore (the
        # next compaction reuses its bytes; ingested caller maps stay in _meta_by_key)
        self._snap = _stored_maps(cols, self._index._keys_sorted)
        self._row_by_key[cols.keys] = np.arange(len(cols), dtype=np.int64)
        # the id -> key map is rebuilt when next needed (an ingest, delete or id lookup:
        # ~2% of an append compaction's time), as after a restore: ~80 bytes per entry
        self._tk = None
        return PersistSnapshot(data, meta, self._key_counter, gen)

    def _compact_complete(self, ev: CompactComplete) -> list[object]:
        if not self._has_compacted or ev.generation != self._generation:
            return []
        self._index.swap_to_file(str(ev.path))
        return []

    # ------------------------------------------------------------------ restore
    @classmethod
    def from_snapshot(
        cls,
        index_bytes: bytes,
        metadata: bytes | Mapping[str, Any] | DecodedMetadata,
        key_counter: int,
        generation: int,
        compact_threshold: int = 1000,
        *,
        on_snapshot: Callable[[PersistSnapshot], None] | None = None,
        index_digest: bytes | None = None,
        base_path: str | None = None,
        build_threads: int = 1,
    ) -> OluoEngine:
        """Rebuild an engine from a PersistSnapshot's parts.

        ``index_digest`` (optional) is the blake3-256 of ``index_bytes`` when the caller
        has already verified it (it is otherwise computed, for CompactComplete's check).
        ``base_path`` (optional) names a file the caller guarantees holds exactly
        ``index_bytes`` (``load_snapshot`` has just compared it under the data-directory
        lock): the base is then mapped from it, as after ``CompactComplete``, instead of
        being deserialised from the bytes (5x faster at 137 MB; RAM holds only the graph).

        The configuration (dim, metric, M, efConstruction, efSearch) is read from
        the metadata, not from defaults. The index must match it and hold exactly
        one vector per entry, in key order or in the metadata's ``row_order``
        (version 2, a renumbered rebuild). ``key_counter`` is clamped to
        ``> max key``; duplicate ids are rejected; the next compaction is
        ``generation + 1`` and a ``CompactComplete(path, generation)`` is accepted.
        Raises :class:`EngineRestoreFailed` (or its subclass SnapshotDecodeError).
        """
        meta = metadata if isinstance(metadata, DecodedMetadata) else decode_metadata(metadata)
        for name, v in (("key_counter", key_counter), ("generation", generation)):
            if not _is_int(v) or int(v) < 0:
                raise EngineRestoreFailed(f"{name} must be a non-negative int, got {v!r}")
        cfg = meta.config
        try:
            eng = cls(
                cfg["dim"],
                cfg["metric"],
                compact_threshold,
                cfg["M"],
                cfg["ef_construction"],
                cfg["ef_search"],
                on_snapshot=on_snapshot,
                build_threads=build_threads,
            )
        except EngineInputError as exc:
            raise EngineRestoreFailed(f"snapshot config is invalid: {exc}") from exc
        if isinstance(index_bytes, memoryview | bytearray):
            index_bytes = bytes(index_bytes)
        if index_digest is not None and (
            type(index_digest) is not bytes or len(index_digest) != 32
        ):
            raise EngineRestoreFailed("index_digest must be 32 bytes (blake3-256 of index_bytes)")
        mapped = False
        if base_path is not None:
            # (if mapping fails, e.g. a filesystem without mmap, the bytes are read instead)
            with contextlib.suppress(EngineRestoreFailed):
                ix, mapped = eng._index.map_file(str(base_path)), True
        if not mapped:
            ix = eng._index.load_bytes(index_bytes)
        cols = meta.columns  # validated by decode_metadata (order, ranges, unique ids)
        n = len(cols)
        if ix.ntotal != n:
            raise EngineRestoreFailed(
                f"index holds {ix.ntotal} vectors but the metadata has {n} entries"
            )
        keys = cols.keys  # entry rows, ascending key
        row_keys, row_scopes = keys, cols.scope  # index positions
        if cols.row_order is not None:
            row_keys, row_scopes = keys[cols.row_order], cols.scope[cols.row_order]
        eng._index.install(
            ix, index_bytes, row_keys, row_scopes, digest=index_digest, mapped=mapped
        )
        scopes = cols.scope
        max_key = int(keys[-1]) if n else -1
        eng._key_counter = max(int(key_counter), max_key + 1)
        eng._generation = int(generation)
        eng._has_compacted = True
        eng._ensure_capacity(max(max_key, 0))
        eng._ids_by_key[keys] = cols.targets
        eng._scope_by_key[keys] = scopes
        eng._tier_by_key[keys] = cols.privacy_tier
        eng._ingested_by_key[keys] = cols.ingested_at_ms
        eng._row_by_key[keys] = np.arange(n, dtype=np.int64)
        eng._lazy_by_key[keys] = True
        eng._snap = _stored_maps(cols, eng._index._keys_sorted)
        eng._n_lazy = eng._n_live = n
        eng._tk = None  # built on first use (by id lookups, ingest, delete)
        eng._scope_counts = np.bincount(scopes, minlength=3).tolist()
        eng._expiring = dict(
            zip(keys[cols.expires_rows].tolist(), cols.expires_at.tolist(), strict=True)
        )
        eng._overlays = dict(zip(keys[cols.overlay_rows].tolist(), cols.overlays, strict=True))
        return eng

    # ------------------------------------------------------------------ convenience
    def _run(self, event: object) -> list[object]:
        actions = self.handle(event)
        for a in actions:
            if type(a) is EngineError:
                raise a.error
        return actions

    def _deliver(self, snap: PersistSnapshot) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(snap)
        else:
            self.pending_snapshots.append(snap)

    def take_snapshots(self) -> list[PersistSnapshot]:
        """Return and clear the snapshots queued by automatic compactions."""
        out, self.pending_snapshots = self.pending_snapshots, []
        return out

    def add(
        self,
        vectors: Any,
        ids: Sequence[Target] | None = None,
        metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        *,
        scope: Scope = Scope.NETWORK_WIDE,
        privacy_tier: PrivacyTier = PrivacyTier.PUBLIC_DURABLE,
        ttl_secs: int | None = None,
        now_ms: int = 0,
        progress: bool = True,
    ) -> list[int]:
        """Add (or re-add) a batch of vectors; returns their keys.

        ``ids`` default to running ints starting at the current key counter. A
        PersistSnapshot from an automatic compaction goes to ``on_snapshot`` or
        :attr:`pending_snapshots`.

        ``progress``: batches of at least ``PROGRESS_MIN_ROWS`` vectors show a
        ``tqdm.auto`` bar (after half a second). The batch stays one ``Ingest`` event,
        so it is still all-or-nothing and triggers at most one compaction; faiss builds
        the HNSW graph in one call, so the bar reports the batch as a whole (elapsed
        time while it runs, the count and rate when done) rather than ticking inside it.
        """
        arr = np.asarray(vectors)
        n = 1 if arr.ndim == 1 else (arr.shape[0] if arr.ndim else 0)
        if ids is None:
            ids = list(range(self._key_counter, self._key_counter + n))
            clash = [t for t in ids if t in self._target_key]
            if clash:
                raise DuplicateIds(f"automatic ids {clash[:5]} are already in use; pass ids")
        elif arr.ndim == 1 and isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        if arr.ndim == 1:
            arr = arr[None, :]
        decision = IndexFull() if ttl_secs is None else IndexLightweight(ttl_secs)
        ev = Ingest(arr, ids, metadata, decision, now_ms, scope, privacy_tier)
        rows = int(arr.shape[0]) if arr.ndim == 2 else 0
        with progress_bar(
            progress and rows >= PROGRESS_MIN_ROWS, total=rows, desc="add", unit="vec"
        ) as bar:
            actions = self._run(ev)
            bar.update(rows)
        keys: list[int] = []
        for a in actions:
            if isinstance(a, PersistSnapshot):
                self._deliver(a)
            elif isinstance(a, IndexUpdated):
                keys = [k for k in a.keys if k is not None]
        return keys

    def search(
        self,
        queries: Any,
        k: int = 10,
        ef: int | None = None,
        scope: Scope | None = None,
        predicate: Callable[[EntryMetadata], bool] | None = None,
        exact: bool = False,
        *,
        ef_search: int | None = None,
    ) -> SearchResults:
        """Search a batch of queries ((d,) or (n, d)); see :class:`SearchResults`.

        ``ef_search`` (or its short spelling ``ef``; give at most one) is this call's
        search beam width, default the engine's ``ef_search``.
        ``exact=True`` answers by brute force (the ground truth for recall)."""
        if ef_search is not None:
            if ef is not None:
                raise TypeError("pass ef_search or ef, not both (ef is its short spelling)")
            ef = ef_search
        ev = Search(
            None, queries, k, _NETWORK_WIDE if scope is None else scope, ef, predicate, exact
        )
        action = self.handle(ev)[0]  # exactly one action: SearchResults or EngineError
        if type(action) is EngineError:
            raise action.error
        return action

    def delete(self, ids: Target | Iterable[Target]) -> None:
        """Delete live entries by caller id (UnknownId if any is absent; then nothing is deleted)."""
        self._run(Delete(ids if isinstance(ids, (str, int, np.integer)) else list(ids)))

    def evict_expired(self, now_ms: int) -> list[Target]:
        """Evict entries with ``expires_at <= now_ms``; returns their ids."""
        acts = self._run(EvictExpired(now_ms))
        return [t for a in acts if isinstance(a, IndexUpdated) for t in a.removed]

    def compact(self, force: bool = False) -> PersistSnapshot | None:
        """Compact now; returns the snapshot (to persist) or None when nothing changed
        (with ``force``, always a new generation)."""
        acts = self._run(Compact(force))
        return acts[0] if acts else None

    def compact_complete(self, path: str, generation: int) -> None:
        """Tell the engine the snapshot of ``generation`` is at ``path`` (maps it as base)."""
        self._run(CompactComplete(str(path), generation))


def _stored_maps(cols: MetadataColumns, base_keys_sorted: np.ndarray) -> MetadataColumns:
    """``cols`` with only what the engine reads back from it: the keys (row count, error
    messages) and the caller maps (``metadata``, ``metadata_ends``, for ``metadata_at``).
    The other columns are copied into the engine's per-key columns; holding them twice
    would cost ~18 bytes per entry. The keys are the base's sorted keys (the same
    values, right after a compaction or restore), which the index holds anyway."""
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


#: handle() dispatch: event type -> method name (Search is special-cased first in handle)
_HANDLERS: dict[type, str] = {
    Search: "_handle_search",
    Ingest: "_ingest",
    Delete: "_delete",
    EvictExpired: "_evict",
    Compact: "_handle_compact",
    CompactComplete: "_compact_complete",
}
