"""OluoEngine: the sans-I/O search engine and its notebook convenience layer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
    decode_metadata,
    encode_metadata,
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
        self._entries: dict[int, EntryMetadata] = {}
        self._target_key: dict[Target, int] = {}
        self._expiring: dict[int, int] = {}
        self._scope_counts = [0, 0, 0]
        self._key_counter = 0
        self._generation = 0
        self._has_compacted = False
        # indexed by key; the last slot is always None so key -1 maps to None
        self._ids_by_key = np.full(64, None, dtype=object)
        self._ent_by_key = np.full(64, None, dtype=object)

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
        return len(self._entries)

    def __contains__(self, target: object) -> bool:
        return target in self._target_key

    def entry(self, target: Target) -> EntryMetadata:
        """The metadata of a live entry (UnknownId if absent)."""
        key = self._target_key.get(target)
        if key is None:
            raise UnknownId(f"no live entry with id {target!r}")
        return self._entries[key]

    def key_of(self, target: Target) -> int:
        """The key of a live entry (UnknownId if absent)."""
        key = self._target_key.get(target)
        if key is None:
            raise UnknownId(f"no live entry with id {target!r}")
        return key

    def entries(self) -> dict[int, EntryMetadata]:
        """A copy of the metadata table, key -> EntryMetadata."""
        return dict(self._entries)

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
                "M / efConstruction / efSearch",
                f"{self.config.M} / {self.config.ef_construction} / {self.config.ef_search}",
            ),
        ]
        return kv_table("OluoEngine", rows)

    # ------------------------------------------------------------------ core
    def handle(self, event: object) -> list[object]:
        """Apply one event and return the actions it produces.

        Errors are returned as ``[EngineError(error, query_id)]`` with the engine
        state unchanged; they are never raised from here.
        """
        qid = getattr(event, "query_id", None) if isinstance(event, Search) else None
        try:
            if isinstance(event, Search):
                return [self._search(event)]
            if isinstance(event, Ingest):
                return self._ingest(event)
            if isinstance(event, Delete):
                return self._delete(event)
            if isinstance(event, EvictExpired):
                return self._evict(event)
            if isinstance(event, Compact):
                changed = self._index.delta_n or self._index.n_dead or self._index.base is None
                snap = self._compact() if changed or event.force else None
                return [] if snap is None else [snap]
            if isinstance(event, CompactComplete):
                return self._compact_complete(event)
            raise InvalidEvent(f"unknown event type {type(event).__name__}")
        except EngineErrorBase as exc:
            return [EngineError(exc, qid)]

    # ------------------------------------------------------------------ ingest
    def _ensure_capacity(self, max_key: int) -> None:
        if max_key + 1 < len(self._ids_by_key):
            return
        cap = max(2 * len(self._ids_by_key), max_key + 2)
        for name in ("_ids_by_key", "_ent_by_key"):
            old = getattr(self, name)
            new = np.full(cap, None, dtype=object)
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
        scopes = [_scope(s) for s in _per_entry("scope", ev.scope, n, lambda v: _is_int(v))]
        tiers = [
            _tier(t) for t in _per_entry("privacy_tier", ev.privacy_tier, n, lambda v: _is_int(v))
        ]
        if ev.overlays is None:
            overlays = [()] * n
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
        new_entries: list[EntryMetadata] = []
        out_keys: list[int | None] = []
        remove_keys: list[int] = []
        for i in range(n):
            t, d = targets[i], decisions[i]
            old_key = self._target_key.get(t)
            if isinstance(d, Reject) or tiers[i] == PrivacyTier.ENCRYPTED_EPHEMERAL:
                out_keys.append(None)
                if old_key is not None:
                    remove_keys.append(old_key)
                continue
            scope = scopes[i]
            if old_key is None:
                key = next_key
                next_key += 1
            else:
                key = old_key
                scope = max(scope, self._entries[old_key].scope)
            expires = None
            if isinstance(d, IndexLightweight):
                expires = min(now + int(d.ttl_secs) * 1000, _U64_MAX)
            new_entries.append(
                EntryMetadata(t, metas[i], tiers[i], expires, now, Scope(scope), overlays[i])
            )
            idx_rows.append(i)
            idx_keys.append(key)
            out_keys.append(key)
        if not idx_rows and not remove_keys:
            return []

        # ---- apply
        removed = self._remove_keys(sorted(remove_keys))
        if idx_rows:
            keys_arr = np.asarray(idx_keys, np.int64)
            scope_arr = np.asarray([int(e.scope) for e in new_entries], np.int8)
            self._ensure_capacity(max(next_key - 1, int(keys_arr.max())))
            self._index.upsert(keys_arr, vecs[idx_rows], scope_arr)
            for key, e in zip(idx_keys, new_entries, strict=True):
                old = self._entries.get(key)
                if old is not None:
                    self._scope_counts[old.scope] -= 1
                self._scope_counts[e.scope] += 1
                self._entries[key] = e
                self._target_key[e.target] = key
                self._ids_by_key[key] = e.target
                self._ent_by_key[key] = e
                if e.expires_at is not None:
                    self._expiring[key] = e.expires_at
                else:
                    self._expiring.pop(key, None)
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
        for key in keys:
            e = self._entries.pop(key)
            del self._target_key[e.target]
            self._scope_counts[e.scope] -= 1
            self._ids_by_key[key] = None
            self._ent_by_key[key] = None
            self._expiring.pop(key, None)
            removed.append(e.target)
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
    def _search(self, ev: Search) -> SearchResults:
        k = ev.k
        if type(k) is not int and (not _is_int(k) or k < 0):
            raise InvalidK(f"k must be a non-negative int, got {k!r}")
        if k < 0 or k > MAX_K:
            raise InvalidK(f"k must be an int in 0..{MAX_K}, got {k!r}")
        ef = self.config.ef_search if ev.ef is None else ev.ef
        if type(ef) is not int and not _is_int(ef) or ef <= 0:
            raise InvalidK(f"ef must be a positive int, got {ef!r}")
        scope = ev.scope if type(ev.scope) is Scope else _scope(ev.scope)
        v = ev.vectors
        if ev.exact:
            return self._search_exact(ev, int(k), int(scope))
        if k and ev.predicate is None and type(v) is np.ndarray and v.ndim == 1:
            hit = self._index.search_one(v, int(k), max(int(ef), int(k)), int(scope))
            if hit is not None:
                scores, keys = hit
                return SearchResults(
                    ev.query_id, self._ids_by_key[keys], keys, scores, self._ent_by_key[keys]
                )
        q = self._index.prepare(ev.vectors, "queries")
        k = int(k)
        if k == 0:
            e = np.empty((q.shape[0], 0))
            return SearchResults(
                ev.query_id, e.astype(object), e.astype(np.int64), e, e.astype(object)
            )
        mask = self._predicate_mask(ev.predicate)
        scores, keys = self._index.search(q, k, max(int(ef), k), int(scope), mask)
        return SearchResults(
            ev.query_id, self._ids_by_key[keys], keys, scores, self._ent_by_key[keys]
        )

    def _predicate_mask(self, pred: Callable[[EntryMetadata], bool] | None) -> np.ndarray | None:
        if pred is None:
            return None
        if not callable(pred):
            raise InvalidEvent("predicate must be callable")
        mask = np.zeros(len(self._ids_by_key), bool)
        try:
            allowed = [key for key, e in self._entries.items() if pred(e)]
        except Exception as exc:
            raise EngineInputError(f"predicate raised {type(exc).__name__}: {exc}") from exc
        mask[allowed] = True
        return mask

    def _search_exact(self, ev: Search, k: int, scope: int) -> SearchResults:
        """Brute force over every allowed live entry: the oracle for recall."""
        q = self._index.prepare(ev.vectors, "queries")
        keys, _, vectors = self.live_vectors()
        allowed = np.fromiter(
            (int(self._entries[key].scope) <= scope for key in keys.tolist()), bool, len(keys)
        )
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
        return SearchResults(ev.query_id, self._ids_by_key[out], out, scores, self._ent_by_key[out])

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
        meta = encode_metadata(
            self.config.as_dict(), self._key_counter, self._generation, self._entries, idx.base_keys
        )
        return PersistSnapshot(data, meta, self._key_counter, self._generation)

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
        if len(keys) != len(self._entries):
            raise CompactionFailed(
                f"new base has {len(keys)} vectors for {len(self._entries)} entries"
            )
        gen = self._generation + 1
        meta = encode_metadata(self.config.as_dict(), self._key_counter, gen, self._entries, keys)
        self._index.install(ix, data, keys, scopes)
        self._generation = gen
        self._has_compacted = True
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
        build_threads: int = 1,
    ) -> OluoEngine:
        """Rebuild an engine from a PersistSnapshot's parts.

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
        ix = eng._index.load_bytes(index_bytes)
        entries = meta.entries
        if ix.ntotal != len(entries):
            raise EngineRestoreFailed(
                f"index holds {ix.ntotal} vectors but the metadata has {len(entries)} entries"
            )
        seen: dict[Target, int] = {}
        for key, e in entries.items():
            if e.target in seen:
                raise EngineRestoreFailed(
                    f"snapshot contains duplicate id {e.target!r} (keys {seen[e.target]} and {key})"
                )
            seen[e.target] = key
        keys = meta.row_keys()  # the key at each index position
        scopes = np.asarray([int(entries[k].scope) for k in keys.tolist()], np.int8)
        eng._index.install(ix, index_bytes, keys, scopes)
        max_key = int(keys.max()) if len(keys) else -1
        eng._key_counter = max(int(key_counter), max_key + 1)
        eng._generation = int(generation)
        eng._has_compacted = True
        eng._ensure_capacity(max(eng._key_counter - 1, 0))
        for key, e in entries.items():
            eng._entries[key] = e
            eng._target_key[e.target] = key
            eng._scope_counts[e.scope] += 1
            eng._ids_by_key[key] = e.target
            eng._ent_by_key[key] = e
            if e.expires_at is not None:
                eng._expiring[key] = e.expires_at
        return eng

    # ------------------------------------------------------------------ convenience
    def _run(self, event: object) -> list[object]:
        actions = self.handle(event)
        for a in actions:
            if isinstance(a, EngineError):
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
    ) -> SearchResults:
        """Search a batch of queries ((d,) or (n, d)); see :class:`SearchResults`.

        ``exact=True`` answers by brute force (the ground truth for recall)."""
        ev = Search(
            None, queries, k, Scope.NETWORK_WIDE if scope is None else scope, ef, predicate, exact
        )
        return self._run(ev)[0]

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
