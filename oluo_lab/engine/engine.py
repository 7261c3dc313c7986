"""OluoEngine: the sans-I/O search engine and its notebook convenience layer (engine layer).

:class:`OluoEngine` turns events into actions (:meth:`OluoEngine.handle`): it validates
an event (``_ingest.py``), plans and applies it to its entry table (``_table.py``) and
its compound index (``index.py``), searches, and compacts the delta into a new base
whose bytes leave as a :class:`~oluo_lab.engine.events.PersistSnapshot`. The notebook
methods (:meth:`~OluoEngine.add`, :meth:`~OluoEngine.search`, ...) send events to
``handle`` and raise the typed error of an :class:`~oluo_lab.engine.events.EngineError`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._html import kv_table
from .._progress import progress_bar
from ._ingest import (
    IngestBatch,
    check_uint,
    is_int,
    normalize_ingest,
    normalize_target,
    to_scope,
)
from ._table import EntryTable
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
from .metadata import DecodedMetadata, MetadataColumns, decode_metadata, encode_columns
from .results import SearchResults

__all__ = ["DEFAULT_COMPACT_THRESHOLD", "OluoEngine"]

#: Delta size at which an ingest compacts (``compact_threshold``'s default everywhere).
DEFAULT_COMPACT_THRESHOLD = 1000
#: ``add`` shows a progress bar for batches of at least this many vectors.
PROGRESS_MIN_ROWS = 10_000
#: Largest ``k`` a search accepts: results are padded to ``k`` columns, so an absurd k
#: (say 10**12) would otherwise try to allocate that many slots per query.
MAX_K = 1 << 20
_NETWORK_WIDE = Scope.NETWORK_WIDE
_DROPPED = int(PrivacyTier.ENCRYPTED_EPHEMERAL)


class _IngestPlan(NamedTuple):
    """What an Ingest will do (see ``OluoEngine._plan_ingest``)."""

    rows: list[int]  # the batch rows that are indexed ...
    keys: list[int]  # ... and their keys
    out_keys: list[int | None]  # per batch row: its key, None when not indexed
    remove_keys: list[int]  # ascending
    next_key: int  # the key counter afterwards


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
        compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
        M: int = IndexConfig.M,
        ef_construction: int = IndexConfig.ef_construction,
        ef_search: int = IndexConfig.ef_search,
        *,
        on_snapshot: Callable[[PersistSnapshot], None] | None = None,
        build_threads: int = 1,
    ) -> None:
        if metric not in METRICS:
            raise UnknownMetric(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
        for name, v in (("dim", dim), ("M", M), ("ef_construction", ef_construction)):
            if not is_int(v) or int(v) <= 0:
                raise InvalidEvent(f"{name} must be a positive int, got {v!r}")
        if not is_int(ef_search) or int(ef_search) <= 0:
            raise InvalidK(f"ef_search must be a positive int, got {ef_search!r}")
        if not is_int(compact_threshold) or int(compact_threshold) <= 0:
            raise InvalidEvent(
                f"compact_threshold must be a positive int, got {compact_threshold!r}"
            )
        if metric == "hamming" and int(dim) % 8:
            raise InvalidEvent(f"hamming dim is a bit count and must be a multiple of 8, got {dim}")
        if not is_int(build_threads) or int(build_threads) <= 0:
            raise InvalidEvent(f"build_threads must be a positive int, got {build_threads!r}")
        self.config = IndexConfig(int(dim), metric, int(M), int(ef_construction), int(ef_search))
        self.compact_threshold = int(compact_threshold)
        self.on_snapshot = on_snapshot
        self.pending_snapshots: list[PersistSnapshot] = []
        self._index = CompoundIndex(self.config, build_threads=int(build_threads))
        self._table = EntryTable()
        # what a lazy SearchResults resolves its ids and entries with (one attribute
        # hop per search; the table object lives as long as the engine)
        self._resolve = (self._table.ids_for, self._table.entries_for)
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
        return tuple(self._table.scope_counts)

    @property
    def delta_size(self) -> int:
        return self._index.delta_n

    @property
    def base_size(self) -> int:
        """Vectors physically in the base (including tombstoned ones)."""
        return self._index.base_n

    def __len__(self) -> int:
        return self._table.n_live

    def __contains__(self, target: object) -> bool:
        return target in self._table.target_key

    def entry(self, target: Target) -> EntryMetadata:
        """The metadata of a live entry (UnknownId if absent)."""
        return self._table.entry_at(self.key_of(target))

    def key_of(self, target: Target) -> int:
        """The key of a live entry (UnknownId if absent)."""
        key = self._table.target_key.get(target)
        if key is None:
            raise UnknownId(f"no live entry with id {target!r}")
        return key

    def entries(self) -> dict[int, EntryMetadata]:
        """A copy of the metadata table, key -> EntryMetadata (in key order)."""
        return self._table.entries()

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
        state unchanged; they are never raised from here. Before any event other
        than a Search, outstanding search results get their ids and entries
        resolved, so a result always describes the engine as it was at search time.
        A result holding a restored entry whose stored caller map is damaged cannot
        be resolved: reading its entries raises that SnapshotDecodeError, and the
        event that found it is refused with the same error (nothing applied), so the
        damage is reported before anything changes.
        """
        if type(event) is Search:  # the hot path: no table lookup
            try:
                return [self._search(event)]
            except EngineErrorBase as exc:
                return [EngineError(exc, event.query_id)]
        qid = event.query_id if isinstance(event, Search) else None
        try:
            if self._outstanding:
                self._settle_results()
            name = _HANDLERS.get(type(event))
            if name is None:  # subclasses of the event types
                name = next((m for t, m in _HANDLERS.items() if isinstance(event, t)), None)
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
    def _ingest(self, ev: Ingest) -> list[object]:
        vecs = self._index.prepare(ev.vectors)
        batch = normalize_ingest(ev, vecs.shape[0], np.ndim(ev.vectors) == 1)
        plan = self._plan_ingest(batch)
        if not plan.rows and not plan.remove_keys:
            return []
        removed = self._apply_ingest(batch, vecs, plan)
        actions: list[object] = []
        if self._index.delta_n >= self.compact_threshold:
            try:
                actions.append(self._compact())
            except EngineErrorBase as exc:  # the ingest itself succeeded
                actions.append(EngineError(exc, None))
        actions.append(IndexUpdated(tuple(plan.out_keys), removed))
        return actions

    def _plan_ingest(self, batch: IngestBatch) -> _IngestPlan:
        """The key of each indexed entry and the keys removed (no mutation).

        Reject or ENCRYPTED_EPHEMERAL: not indexed, and an existing entry for that id
        is removed (the newest privacy decision wins). A known id keeps its key; a new
        id takes the next fresh key."""
        next_key = self._key_counter
        rows: list[int] = []
        keys: list[int] = []
        out_keys: list[int | None] = []
        remove_keys: list[int] = []
        tk_get = self._table.target_key.get
        targets, decisions, tier_codes = batch.targets, batch.decisions, batch.tier_codes
        for i in range(len(targets)):
            old_key = tk_get(targets[i])
            if tier_codes[i] == _DROPPED or isinstance(decisions[i], Reject):
                out_keys.append(None)
                if old_key is not None:
                    remove_keys.append(old_key)
                continue
            if old_key is None:
                key = next_key
                next_key += 1
            else:
                key = old_key
            rows.append(i)
            keys.append(key)
            out_keys.append(key)
        return _IngestPlan(rows, keys, out_keys, sorted(remove_keys), next_key)

    def _apply_ingest(
        self, batch: IngestBatch, vecs: np.ndarray, plan: _IngestPlan
    ) -> tuple[Target, ...]:
        """Carry out a plan: removals first, then the indexed entries into the table and
        the index's delta. Returns the caller ids removed."""
        removed = self._remove_keys(plan.remove_keys)
        rows = plan.rows
        if rows:
            every = len(rows) == len(batch.targets)

            def pick(values: list | None) -> list | None:
                return values if every or values is None else [values[i] for i in rows]

            keys = np.asarray(plan.keys, np.int64)
            scopes = self._table.upsert(
                keys,
                pick(batch.targets),
                pick(batch.scope_codes),
                pick(batch.tier_codes),
                batch.now,
                pick(batch.expires_at),
                pick(batch.overlays),
                pick(batch.metas),
            )
            self._index.upsert(keys, vecs if every else vecs[rows], scopes)
            self._key_counter = plan.next_key
        return removed

    def _remove_keys(self, keys: list[int]) -> tuple[Target, ...]:
        removed = self._table.remove(keys)
        if keys:
            self._index.remove(np.asarray(keys, np.int64))
        return removed

    # ------------------------------------------------------------------ delete / evict
    def _delete(self, ev: Delete) -> list[object]:
        raw = ev.targets
        if isinstance(raw, (str, int, np.integer)):
            raw = [raw]
        targets = [normalize_target(t) for t in raw]
        if len(set(targets)) != len(targets):
            raise DuplicateIds(f"ids repeated within one delete: {targets!r}"[:200])
        tk = self._table.target_key
        missing = [t for t in targets if t not in tk]
        if missing:
            raise UnknownId(f"cannot delete ids with no live entry: {missing[:5]!r}")
        keys = sorted(tk[t] for t in targets)
        return [IndexUpdated((), self._remove_keys(keys))] if keys else []

    def _evict(self, ev: EvictExpired) -> list[object]:
        now = check_uint("now_ms", ev.now_ms)
        keys = sorted(k for k, exp in self._table.expiring.items() if exp <= now)
        return [IndexUpdated((), self._remove_keys(keys))] if keys else []

    # ------------------------------------------------------------------ search
    #: weak references to search results whose ids/entries are still unresolved (see
    #: handle); a dead result's reference removes itself (the set's discard is its callback)
    _outstanding: set[weakref.ref] | None = None

    def _results(self, query_id: int | None, keys: np.ndarray, scores: np.ndarray) -> SearchResults:
        """A SearchResults whose ids and entries are gathered from ``keys`` on first
        access (most of a search's Python cost otherwise, for a large batch)."""
        res = SearchResults._lazy(query_id, keys, scores, self._resolve)
        outstanding = self._outstanding
        if outstanding is None:
            outstanding = self._outstanding = set()
        outstanding.add(weakref.ref(res, outstanding.discard))
        return res

    def _settle_results(self) -> None:
        """Resolve every outstanding result now, before the entries can change.

        Every result is settled even when one fails (it then keeps its error, see
        ``SearchResults._settle``); the first failure is raised afterwards."""
        outstanding = self._outstanding
        failed: EngineErrorBase | None = None
        for ref in list(outstanding):
            res = ref()
            if res is not None:
                err = res._settle()
                if failed is None:
                    failed = err
        outstanding.clear()
        if failed is not None:
            raise failed

    def _search(self, ev: Search) -> SearchResults:
        k = ev.k
        if type(k) is not int:
            if not is_int(k) or k < 0:
                raise InvalidK(f"k must be a non-negative int, got {k!r}")
            k = int(k)
        if k < 0 or k > MAX_K:
            raise InvalidK(f"k must be an int in 0..{MAX_K}, got {k!r}")
        ef = ev.ef
        if ef is None:
            ef = self.config.ef_search
        elif type(ef) is not int:
            if not is_int(ef):
                raise InvalidK(f"ef must be a positive int, got {ef!r}")
            ef = int(ef)
        if ef <= 0:
            raise InvalidK(f"ef must be a positive int, got {ef!r}")
        scope = ev.scope
        scope = int(scope if type(scope) is Scope else to_scope(scope))
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
                ev.query_id, e.astype(object), e.astype(np.int64), e, e.astype(object)
            )
        mask = self._predicate_mask(ev.predicate)
        scores, keys = self._index.search(q, k, ef, scope, mask)
        return self._results(ev.query_id, keys, scores)

    def _predicate_mask(self, pred: Callable[[EntryMetadata], bool] | None) -> np.ndarray | None:
        if pred is None:
            return None
        if not callable(pred):
            raise InvalidEvent("predicate must be callable")
        table = self._table
        mask = np.zeros(len(table.ids_by_key), bool)
        keys = table.live_keys()
        table.materialise(keys)
        try:
            ents = table.ent_by_key[keys].tolist()
            allowed = [key for key, e in zip(keys.tolist(), ents, strict=True) if pred(e)]
        except Exception as exc:
            raise EngineInputError(f"predicate raised {type(exc).__name__}: {exc}") from exc
        mask[allowed] = True
        return mask

    def _search_exact(self, ev: Search, k: int, scope: int) -> SearchResults:
        """Brute force over every allowed live entry: the oracle for recall."""
        q = self._index.prepare(ev.vectors, "queries")
        keys, _, vectors = self.live_vectors()
        allowed = self._table.scope_by_key[keys] <= scope
        mask = self._predicate_mask(ev.predicate)
        if mask is not None:
            allowed &= mask[keys]
        keys, vectors = keys[allowed], vectors[allowed]
        dist, rows = self._index.exact_knn(q, vectors, k)
        valid = rows >= 0
        scores = np.where(valid, self._index.to_scores(dist), np.inf)
        out = np.where(valid, keys[np.maximum(rows, 0)] if len(keys) else -1, -1)
        tie = np.where(out < 0, np.iinfo(np.int64).max, out)
        order = np.lexsort((tie, scores), axis=-1)
        scores = np.take_along_axis(scores, order, 1)
        out = np.take_along_axis(out, order, 1)
        return self._results(ev.query_id, out, scores)

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
        return keys, self._table.ids_by_key[keys], np.ascontiguousarray(vecs[order])

    def current_snapshot(self) -> PersistSnapshot | None:
        """The payloads of the current generation without compacting, or None when
        the delta or tombstones hold changes not in the base yet (compact first)."""
        idx = self._index
        if idx.base is None or idx.delta_n or idx.n_dead:
            return None
        data = idx.base_bytes()
        meta = self._encode_metadata(self._table.columns(), self._generation, idx.base_keys)
        return PersistSnapshot(data, meta, self._key_counter, self._generation)

    def _encode_metadata(
        self, cols: MetadataColumns, generation: int, row_keys: np.ndarray
    ) -> bytes:
        """Metadata bytes of the live entries ``cols`` (from ``EntryTable.columns``);
        ``row_keys`` is the key at each position of the base they describe (stored as
        ``row_order`` when not in key order)."""
        cols = cols.with_row_keys(row_keys)
        return encode_columns(self.config.as_dict(), self._key_counter, generation, cols)

    def renumber(self, generation: int) -> None:
        """Continue numbering from a later ``generation`` (never backwards): the next
        compaction becomes ``generation + 1``. A Lab uses it when an old generation is
        checked out, so that committing it extends the history instead of rewriting it."""
        if not is_int(generation) or int(generation) < self._generation:
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
        if len(keys) != len(self):
            raise CompactionFailed(f"new base has {len(keys)} vectors for {len(self)} entries")
        gen = self._generation + 1
        cols = self._table.columns()
        meta = self._encode_metadata(cols, gen, keys)
        self._index.install(ix, data, keys, scopes)
        self._generation = gen
        self._has_compacted = True
        # every live entry is now a row of the stored metadata, as after a restore
        self._table.stored(cols, self._index.keys_sorted)
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
        compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
        *,
        on_snapshot: Callable[[PersistSnapshot], None] | None = None,
        index_digest: bytes | None = None,
        base_path: str | None = None,
        build_threads: int = 1,
    ) -> OluoEngine:
        """Rebuild an engine from a PersistSnapshot's parts.

        The configuration (dim, metric, M, efConstruction, efSearch) is read from the
        metadata, not from defaults. The index must match it and hold exactly one
        vector per entry, at the positions the metadata gives (ascending key, or its
        ``row_order``). ``key_counter`` is clamped to ``> max key``; duplicate ids are
        rejected; the next compaction is ``generation + 1`` and a
        ``CompactComplete(path, generation)`` is accepted. Raises
        :class:`EngineRestoreFailed` (or its subclass SnapshotDecodeError).

        ``index_digest``: the blake3-256 of ``index_bytes`` when the caller has already
        verified it (else it is computed, for CompactComplete's check). ``base_path``:
        a file the caller guarantees holds exactly ``index_bytes`` (``load_snapshot``
        has just compared it under the data-directory lock); the base is then mapped
        from it, as after ``CompactComplete``, instead of deserialised (5x faster at
        137 MB; RAM holds only the graph).
        """
        meta = metadata if isinstance(metadata, DecodedMetadata) else decode_metadata(metadata)
        for name, v in (("key_counter", key_counter), ("generation", generation)):
            if not is_int(v) or int(v) < 0:
                raise EngineRestoreFailed(f"{name} must be a non-negative int, got {v!r}")
        if index_digest is not None and (
            type(index_digest) is not bytes or len(index_digest) != 32
        ):
            raise EngineRestoreFailed("index_digest must be 32 bytes (blake3-256 of index_bytes)")
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
        path = None if base_path is None else str(base_path)
        ix, mapped = eng._index.load(index_bytes, path)
        cols = meta.columns  # validated by decode_metadata (order, ranges, unique ids)
        if ix.ntotal != len(cols):
            raise EngineRestoreFailed(
                f"index holds {ix.ntotal} vectors but the metadata has {len(cols)} entries"
            )
        row_scopes = cols.scope if cols.row_order is None else cols.scope[cols.row_order]
        eng._index.install(
            ix, index_bytes, cols.row_keys(), row_scopes, digest=index_digest, mapped=mapped
        )
        eng._table.restore(cols, eng._index.keys_sorted)
        max_key = int(cols.keys[-1]) if len(cols) else -1
        eng._key_counter = max(int(key_counter), max_key + 1)
        eng._generation = int(generation)
        eng._has_compacted = True
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
            clash = [t for t in ids if t in self._table.target_key]
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


#: handle() dispatch: event type -> method name (Search is special-cased first in handle)
_HANDLERS: dict[type, str] = {
    Search: "_handle_search",
    Ingest: "_ingest",
    Delete: "_delete",
    EvictExpired: "_evict",
    Compact: "_handle_compact",
    CompactComplete: "_compact_complete",
}
