"""Events the engine accepts and actions it returns (the sans-I/O vocabulary).

``OluoEngine.handle(event) -> list[action]``. Events: :class:`Ingest`,
:class:`Search`, :class:`Delete`, :class:`EvictExpired`, :class:`Compact`,
:class:`CompactComplete`. Actions: :class:`IndexUpdated`,
:class:`~oluo_lab.engine.results.SearchResults`, :class:`PersistSnapshot`,
:class:`EngineError`. Layer: engine (plain data classes; imports nothing of the engine).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Scope",
    "PrivacyTier",
    "Reject",
    "IndexFull",
    "IndexLightweight",
    "IngestDecision",
    "EntryMetadata",
    "Ingest",
    "Search",
    "Delete",
    "EvictExpired",
    "Compact",
    "CompactComplete",
    "IndexUpdated",
    "PersistSnapshot",
    "EngineError",
    "Target",
]

Target = str | int


class Scope(enum.IntEnum):
    """Visibility of an entry. A query sees its own scope and every narrower one."""

    PERSONAL = 0
    COMMUNITY = 1
    NETWORK_WIDE = 2


class PrivacyTier(enum.IntEnum):
    """Privacy tier of the content, ordered public -> private.

    ENCRYPTED_EPHEMERAL content is never indexed (and removes an existing entry
    for the same target, see :class:`Ingest`).
    """

    PUBLIC_DURABLE = 0
    PUBLIC_EPHEMERAL = 1
    ENCRYPTED_DURABLE = 2
    ENCRYPTED_EPHEMERAL = 3


@dataclass(frozen=True)
class Reject:
    """Ingest decision: do not index."""


@dataclass(frozen=True)
class IndexFull:
    """Ingest decision: index durably (no expiry)."""


@dataclass(frozen=True)
class IndexLightweight:
    """Ingest decision: index with a TTL; ``expires_at = now_ms + ttl_secs*1000`` (saturating)."""

    ttl_secs: int


IngestDecision = Reject | IndexFull | IndexLightweight


@dataclass(frozen=True)
class EntryMetadata:
    """Everything the engine knows about one live entry (the vector lives in the index).

    ``metadata`` is the caller's free-form mapping (None/bool/int/float/str/bytes/
    list/dict with str keys); ``expires_at`` is in ms and only set for lightweight
    entries; ``overlays`` is a tuple of provenance ids (str).

    Read-only by contract: ``metadata`` is the engine's own (validated, normalised) copy,
    handed out without another copy, and an in-place change to it is neither validated nor
    persisted; snapshots keep what was ingested. Re-ingest the entry to change it.
    """

    target: Target
    metadata: Mapping[str, Any]
    privacy_tier: PrivacyTier = PrivacyTier.PUBLIC_DURABLE
    expires_at: int | None = None
    ingested_at_ms: int = 0
    scope: Scope = Scope.NETWORK_WIDE
    overlays: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"EntryMetadata(target={self.target!r}, scope={self.scope.name}, "
            f"tier={self.privacy_tier.name}, expires_at={self.expires_at}, "
            f"metadata={dict(self.metadata)!r})"
        )


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, eq=False)
class Ingest:
    """Index a batch of vectors.

    ``vectors`` is (n, d) (or (d,) with a single ``targets`` value). Every other
    per-entry field is either one value applied to all entries or a sequence of
    length n: ``metadata`` (mapping or sequence of mappings, default {}),
    ``decision``, ``scope``, ``privacy_tier``, ``overlays`` (a sequence of
    provenance-id sequences, one per entry; default none). ``now_ms`` is the
    caller's clock for the whole batch.

    Per entry: Reject or ENCRYPTED_EPHEMERAL -> not indexed, and an existing entry
    for that target is removed (the newest privacy decision wins; upstream left
    the old entry searchable). Known target -> same key, scope = max(old, new),
    every other field replaced. New target -> key = key_counter++. The
    compaction trigger (delta size >= compact_threshold) is checked once, after
    the batch.
    """

    vectors: Any
    targets: Any
    metadata: Any = None
    decision: Any = IndexFull()
    now_ms: int = 0
    scope: Any = Scope.NETWORK_WIDE
    privacy_tier: Any = PrivacyTier.PUBLIC_DURABLE
    overlays: Any = None

    def __repr__(self) -> str:
        shape = getattr(self.vectors, "shape", None)
        return f"Ingest(vectors={shape}, now_ms={self.now_ms})"


@dataclass(frozen=True, eq=False)
class Search:
    """k-NN search for a batch of queries ((d,) or (n, d)).

    ``scope``: entries whose scope is wider than this are invisible.
    ``predicate``: optional ``f(EntryMetadata) -> bool``; only entries for which
    it is true can be returned. Both filters are applied inside the search, so
    k hits come back whenever k allowed entries exist. ``ef`` defaults to the
    engine's ef_search. ``k == 0`` returns an empty result (upstream
    max_results=0); ``k < 0`` is an :class:`~oluo_lab.engine.errors.InvalidK`.
    ``exact``: answer by brute force over every allowed live entry (the oracle
    that recall is measured against) instead of the HNSW graph.
    """

    query_id: int | None
    vectors: Any
    k: int = 10
    scope: Scope = Scope.NETWORK_WIDE
    ef: int | None = None
    predicate: Callable[[EntryMetadata], bool] | None = None
    exact: bool = False

    def __repr__(self) -> str:
        shape = getattr(self.vectors, "shape", None)
        return f"Search(query_id={self.query_id}, vectors={shape}, k={self.k}, scope={Scope(self.scope).name})"


@dataclass(frozen=True)
class Delete:
    """Remove entries by caller id. Every id must be live (else UnknownId, nothing removed)."""

    targets: Sequence[Target]


@dataclass(frozen=True)
class EvictExpired:
    """Remove every entry whose ``expires_at <= now_ms``."""

    now_ms: int


@dataclass(frozen=True)
class Compact:
    """Compact now (merge delta into base, drop dead vectors) if anything changed.

    Not in upstream (which only compacts on the ingest trigger); the convenience
    ``compact()`` sends it. ``force``: compact even when nothing changed, giving
    a new generation with the same entries (a Lab uses it to record a note or a
    restored state as a new generation).
    """

    force: bool = False


@dataclass(frozen=True)
class CompactComplete:
    """The caller persisted the snapshot of ``generation`` at ``path``: map it as the base."""

    path: str
    generation: int


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class IndexUpdated:
    """State changed. ``keys``: per ingested entry, its key or None when it was not
    indexed (Ingest only). ``removed``: caller ids removed by this event, in key order."""

    keys: tuple[int | None, ...] = ()
    removed: tuple[Target, ...] = ()


@dataclass(frozen=True, eq=False)
class PersistSnapshot:
    """A compaction's output: the caller should persist it and then send CompactComplete.

    ``index_bytes``: faiss serialisation of the base, live entries only. Its
    positions are in ascending key order unless the metadata's ``row_order`` says
    otherwise (a rebuilt base is renumbered in breadth-first order of its graph);
    docs/FORMAT.md §2.1. ``metadata_bytes``: canonical CBOR, docs/FORMAT.md §2.2.
    """

    index_bytes: bytes
    metadata_bytes: bytes
    key_counter: int
    generation: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PersistSnapshot):
            return NotImplemented
        return (
            self.index_bytes == other.index_bytes
            and self.metadata_bytes == other.metadata_bytes
            and self.key_counter == other.key_counter
            and self.generation == other.generation
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"PersistSnapshot(generation={self.generation}, key_counter={self.key_counter}, "
            f"index_bytes={len(self.index_bytes)} B, metadata_bytes={len(self.metadata_bytes)} B)"
        )


@dataclass(frozen=True)
class EngineError:
    """A typed failure. ``error`` is the exception; ``query_id`` is set for searches."""

    error: Exception
    query_id: int | None = None
    message: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", f"{type(self.error).__name__}: {self.error}")

    def __repr__(self) -> str:
        return f"EngineError(query_id={self.query_id}, {self.message!r})"
