"""Canonical metadata encoding of engine snapshots (engine layer; docs/FORMAT.md §2.2).

The metadata bytes of a :class:`~oluo_lab.engine.events.PersistSnapshot` are one
canonical CBOR item (RFC 8949 §4.2.3 "length-first" core deterministic order, as
written by ``cbor2.dumps(obj, canonical=True)``). Versions 2 to 4 are *columnar*, so
that a restore builds no Python object per entry::

    {"format": "oluo-engine-metadata", "version": 4,
     "config": {"dim", "metric", "M", "ef_construction", "ef_search", "prune_headroom",
                "repair_fraction", "hole_fraction", "faiss_version"},
     "entries": n, "holes": h, "key_counter": int, "generation": int,
     "entry_columns": {"keys", "targets", "scope", "privacy_tier", "ingested_at_ms",
                       "expires_keys", "expires_at", "overlay_keys", "overlays",
                       "metadata_sizes", "metadata"[, "index_keys"][, "index_holes"]}}

Fixed-width columns are little-endian byte strings; ``targets`` is a CBOR array;
``metadata`` concatenates one canonical CBOR map per entry (``metadata_sizes`` holds
each entry's map length). Because the map keys sort length-first, every header field
precedes ``entry_columns``: :func:`read_metadata_header` reads them without touching
the entries. ``index_holes`` (u32 each, ascending) lists the index positions that hold
no entry: deleted vectors whose graph was repaired in place (zeroed, unlinked; the
index holds ``n + h`` vectors). ``index_keys`` (u64 per index position that is not a
hole: the key of the entry stored there) is present only when the entries are not in
key order, i.e. after the engine renumbered a rebuilt base for cache locality or
appended re-ingested keys after holes. Version 4 names entries by key and stores sizes
so that a delete changes each column only where the removed entries were (versions 2
and 3 stored row numbers, ``expires_rows``/``overlay_rows``/``row_order``, and end
offsets, ``metadata_ends``, which shift after any removed row; they are converted to
the same in-memory columns on decode). :func:`decode_metadata` validates
every column with numpy; the caller's per-entry maps are decoded (strictly) on first
access, or all at once by :meth:`DecodedMetadata.check_entries`. Version 1 (one CBOR
array per entry) is still decoded, into the same columns; only version 4 is written.

Caller metadata is restricted to values that CBOR round-trips exactly: None,
bool, int, float (not NaN), str, bytes, list, and dict with str keys. Tuples,
sets, NaN, non-str keys and arbitrary objects are rejected with
:class:`~oluo_lab.engine.errors.UnencodableMetadata` at ingest time (the rules are
``_ingest.normalize_metadata``, which also checks every stored map read back). NumPy
scalars are converted to the equivalent Python value first.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import cbor2
import numpy as np

from ._ingest import normalize_metadata
from .errors import SnapshotDecodeError, UnencodableMetadata
from .events import EntryMetadata, PrivacyTier, Scope, Target
from .index import LEGACY_PRUNE_HEADROOM, CompactionPolicy

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DecodedMetadata",
    "MetadataColumns",
    "MetadataHeader",
    "decode_metadata",
    "encode_columns",
    "encode_metadata",
    "read_metadata_header",
]

#: format (docs/FORMAT.md §2.2): the document's ``format`` field
FORMAT_NAME = "oluo-engine-metadata"
#: format (docs/FORMAT.md §2.2): the version written
FORMAT_VERSION = 4
#: format (docs/FORMAT.md §2.2): versions :func:`decode_metadata` reads (1 is
#: converted to columns on the fly)
READABLE_VERSIONS = (1, 2, 3, 4)
#: format (docs/FORMAT.md §2.2): the fields of ``config`` in versions 1 and 2
CONFIG_FIELDS_V2 = ("dim", "metric", "M", "ef_construction", "ef_search", "faiss_version")
#: format (docs/FORMAT.md §2.2): the fields of ``config`` in version 3
CONFIG_FIELDS_V3 = (*CONFIG_FIELDS_V2[:5], "prune_headroom", "faiss_version")
#: format (docs/FORMAT.md §2.2): the fields of ``config`` in version 4 (the one written)
#: and of every decoded config (older ones get the headroom they were built with and
#: the default compaction policy)
CONFIG_FIELDS = (*CONFIG_FIELDS_V3[:6], "repair_fraction", "hole_fraction", "faiss_version")
#: format (docs/FORMAT.md §2.2): the ``config`` fields that are floats
_FLOAT_FIELDS = ("prune_headroom", "repair_fraction", "hole_fraction")
#: format (docs/FORMAT.md §2.2): the columns of ``entry_columns`` (besides ``row_order``)
COLUMN_FIELDS = (
    "keys",
    "targets",
    "scope",
    "privacy_tier",
    "ingested_at_ms",
    "expires_rows",
    "expires_at",
    "overlay_rows",
    "overlays",
    "metadata_ends",
    "metadata",
)
#: format (docs/FORMAT.md §2.2): the columns of version 4 (besides ``index_keys`` and
#: ``index_holes``). Rows are named by their keys and map sizes are stored, not cumulative
#: ends, so deleting entries changes these columns only where the entries were (a row
#: number or an end offset would shift every later value, and the whole column would be
#: new bytes in the next snapshot)
COLUMN_FIELDS_V4 = tuple(
    {"expires_rows": "expires_keys", "overlay_rows": "overlay_keys"}.get(
        f, "metadata_sizes" if f == "metadata_ends" else f
    )
    for f in COLUMN_FIELDS
)
#: format (docs/FORMAT.md §2.2): the fields before ``entry_columns`` (versions 2 and 3;
#: version 4 adds ``holes``)
_HEADER_FIELDS = ("format", "version", "config", "entries", "key_counter", "generation")
_U64 = np.dtype("<u8")
_U32 = np.dtype("<u4")
#: format (docs/FORMAT.md §2.2): an empty caller map, canonical CBOR
_EMPTY_MAP = b"\xa0"
_SCOPES = tuple(Scope)
_TIERS = tuple(PrivacyTier)


def encode_entry_metadata(meta: Mapping[str, Any]) -> bytes:
    """The canonical CBOR of one entry's (already normalised) caller metadata."""
    return cbor2.dumps(meta, canonical=True) if meta else _EMPTY_MAP


def _fail(msg: str) -> SnapshotDecodeError:
    return SnapshotDecodeError(f"invalid engine metadata: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ----------------------------------------------------------------------------- columns


@dataclass(frozen=True, eq=False)
class MetadataColumns:
    """The entry table as columns, row ``i`` = the entry with the ``i``-th smallest key.

    ``keys`` int64 (strictly increasing); ``targets`` object (str | int);
    ``scope``/``privacy_tier`` int8; ``ingested_at_ms`` uint64; ``expires_rows`` (int64,
    strictly increasing) and ``expires_at`` (uint64): the rows that expire and when;
    ``overlay_rows`` / ``overlays``: the rows with provenance ids (non-empty tuples);
    ``metadata`` the concatenated canonical CBOR maps, ``metadata_ends`` (int64) the end
    offset of each row's map. Caller maps are decoded only by :meth:`metadata_at`.
    ``holes``: the index positions that hold no entry (ascending), None when there are
    none. ``row_order``: for each index position that is not a hole, in order, the row
    of the entry stored there, when that is not simply row ``i`` (the engine renumbers
    rebuilt bases for cache locality).
    """

    keys: np.ndarray
    targets: np.ndarray
    scope: np.ndarray
    privacy_tier: np.ndarray
    ingested_at_ms: np.ndarray
    expires_rows: np.ndarray
    expires_at: np.ndarray
    overlay_rows: np.ndarray
    overlays: tuple[tuple[str, ...], ...]
    metadata_ends: np.ndarray
    metadata: bytes
    #: non-hole index position -> row (int64 permutation), None when the i-th such
    #: position holds row ``i``
    row_order: np.ndarray | None = None
    #: the index positions that hold no entry (int64, ascending), None when there are none
    holes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_holes(self) -> int:
        return 0 if self.holes is None else len(self.holes)

    def per_position(self, values: np.ndarray, fill: int = -1) -> np.ndarray:
        """A per-row column laid out by index position: ``values[row]`` at the position
        of each row, ``fill`` at the holes."""
        ordered = values if self.row_order is None else values[self.row_order]
        if self.holes is None:
            return ordered
        out = np.full(len(self) + len(self.holes), fill, ordered.dtype)
        live = np.ones(len(out), bool)
        live[self.holes] = False
        out[live] = ordered
        return out

    def row_keys(self) -> np.ndarray:
        """The key held at each index position (int64; -1 at a hole)."""
        return self.per_position(self.keys)

    def with_row_keys(self, row_keys: np.ndarray | None) -> MetadataColumns:
        """These columns with ``row_order`` and ``holes`` set from the key at each index
        position, -1 at a hole (``None``: the positions hold the keys in ascending order).
        ValueError unless the keys that are not -1 are a permutation of ``keys``."""
        holes = None
        if row_keys is not None:
            row_keys = np.asarray(row_keys, np.int64).reshape(-1)
            gaps = np.flatnonzero(row_keys < 0)
            if len(gaps):
                holes, row_keys = gaps, row_keys[row_keys >= 0]
        return replace(self, row_order=_row_order(self.keys, row_keys), holes=holes)

    def metadata_slice(self, row: int) -> bytes:
        """The stored canonical CBOR of row ``row``'s caller metadata."""
        start = int(self.metadata_ends[row - 1]) if row else 0
        return self.metadata[start : int(self.metadata_ends[row])]

    def metadata_at(self, row: int) -> dict[str, Any]:
        """Decode and strictly validate one row's caller metadata (SnapshotDecodeError)."""
        raw = self.metadata_slice(row)
        if raw == _EMPTY_MAP:
            return {}
        where = f"entry {row} (key {int(self.keys[row])})"
        try:
            value = cbor2.loads(raw)
        except Exception as exc:  # cbor2 raises several types on garbage
            raise _fail(f"{where}: metadata is not CBOR ({exc})") from exc
        if type(value) is not dict:
            raise _fail(f"{where}: metadata is not a map")
        try:
            value = normalize_metadata(value)
        except UnencodableMetadata as exc:
            raise _fail(f"{where}: {exc}") from exc
        try:
            again = cbor2.dumps(value, canonical=True)
        except Exception as exc:
            raise _fail(f"{where}: metadata cannot be re-encoded ({exc})") from exc
        if again != raw:
            raise _fail(f"{where}: metadata is not one canonical CBOR map")
        return value

    def expires_of(self, row: int) -> int | None:
        i = int(np.searchsorted(self.expires_rows, row))
        if i < len(self.expires_rows) and int(self.expires_rows[i]) == row:
            return int(self.expires_at[i])
        return None

    def overlays_of(self, row: int) -> tuple[str, ...]:
        i = int(np.searchsorted(self.overlay_rows, row))
        if i < len(self.overlay_rows) and int(self.overlay_rows[i]) == row:
            return self.overlays[i]
        return ()

    def entry(self, row: int) -> EntryMetadata:
        """Materialise row ``row`` as an :class:`EntryMetadata` (metadata decoded strictly)."""
        return EntryMetadata(
            target=self.targets[row],
            metadata=self.metadata_at(row),
            privacy_tier=_TIERS[self.privacy_tier[row]],
            expires_at=self.expires_of(row),
            ingested_at_ms=int(self.ingested_at_ms[row]),
            scope=_SCOPES[self.scope[row]],
            overlays=self.overlays_of(row),
        )

    @classmethod
    def from_entries(cls, entries: Mapping[int, EntryMetadata]) -> MetadataColumns:
        """Columns of a key -> EntryMetadata table (sorted by key)."""
        keys = sorted(entries)
        rows = [entries[k] for k in keys]
        return cls.build(
            np.asarray(keys, np.int64).reshape(-1),
            [e.target for e in rows],
            [int(e.scope) for e in rows],
            [int(e.privacy_tier) for e in rows],
            [int(e.ingested_at_ms) for e in rows],
            [e.expires_at for e in rows],
            [tuple(e.overlays) for e in rows],
            [encode_entry_metadata(e.metadata) for e in rows],
        )

    @classmethod
    def build(
        cls,
        keys: np.ndarray,
        targets: Sequence[Target] | np.ndarray,
        scope: Any,
        tier: Any,
        ingested: Any,
        expires: Sequence[int | None],
        overlays: Sequence[tuple[str, ...]],
        metadata: Sequence[bytes],
    ) -> MetadataColumns:
        """Columns from per-row Python values (used by encoders, not on the load path)."""
        n = len(keys)
        tg = np.empty(n, object)
        tg[:] = list(targets)
        exp_rows = [i for i, x in enumerate(expires) if x is not None]
        ov_rows = [i for i, o in enumerate(overlays) if o]
        ends = np.cumsum([len(m) for m in metadata], dtype=np.int64) if n else np.zeros(0, np.int64)
        return cls(
            keys=np.asarray(keys, np.int64),
            targets=tg,
            scope=np.asarray(scope, np.int8).reshape(-1),
            privacy_tier=np.asarray(tier, np.int8).reshape(-1),
            ingested_at_ms=_u64_array([int(x) for x in ingested], "ingested_at_ms"),
            expires_rows=np.asarray(exp_rows, np.int64),
            expires_at=_u64_array([int(expires[i]) for i in exp_rows], "expires_at"),
            overlay_rows=np.asarray(ov_rows, np.int64),
            overlays=tuple(tuple(overlays[i]) for i in ov_rows),
            metadata_ends=ends,
            metadata=b"".join(metadata),
        )


def _row_order(sorted_keys: np.ndarray, row_keys: np.ndarray | None) -> np.ndarray | None:
    """Rows (positions in ``sorted_keys``) of ``row_keys``; None when they are the same."""
    if row_keys is None:
        return None
    row_keys = np.asarray(row_keys, np.int64).reshape(-1)
    if len(row_keys) != len(sorted_keys):
        raise ValueError(f"row_keys has {len(row_keys)} keys for {len(sorted_keys)} entries")
    if np.array_equal(row_keys, sorted_keys):
        return None
    pos, ok = _key_rows(sorted_keys, row_keys)
    if not ok.all() or len(np.unique(pos)) != len(pos):
        raise ValueError("row_keys is not a permutation of the entry keys")
    return pos.astype(np.int64)


def _key_rows(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row of each of ``keys`` in ``sorted_keys`` (ascending), and whether that row
    holds the key (False: no entry has it)."""
    rows = np.searchsorted(sorted_keys, keys)
    found = rows < len(sorted_keys)
    found[found] = sorted_keys[rows[found]] == keys[found]
    return rows, found


def _u64_array(values: list[int], name: str) -> np.ndarray:
    if values and (min(values) < 0 or max(values) > 2**64 - 1):
        raise UnencodableMetadata(f"{name} must fit in an unsigned 64-bit int")
    return np.asarray(values, np.uint64).reshape(-1)


# ----------------------------------------------------------------------------- encode


def encode_columns(
    config: Mapping[str, Any], key_counter: int, generation: int, cols: MetadataColumns
) -> bytes:
    """Encode a columnar entry table canonically (deterministic bytes). A ``config``
    without the compaction policy's fields gets the policy's defaults."""
    config = {**CompactionPolicy().as_dict(), **config}
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": {k: float(config[k]) if k in _FLOAT_FIELDS else config[k] for k in CONFIG_FIELDS},
        "entries": len(cols),
        "holes": cols.n_holes,
        "key_counter": int(key_counter),
        "generation": int(generation),
        "entry_columns": {
            "keys": cols.keys.astype(_U64).tobytes(),
            "targets": cols.targets.tolist(),
            "scope": cols.scope.astype(np.uint8).tobytes(),
            "privacy_tier": cols.privacy_tier.astype(np.uint8).tobytes(),
            "ingested_at_ms": cols.ingested_at_ms.astype(_U64).tobytes(),
            "expires_keys": cols.keys[cols.expires_rows].astype(_U64).tobytes(),
            "expires_at": cols.expires_at.astype(_U64).tobytes(),
            "overlay_keys": cols.keys[cols.overlay_rows].astype(_U64).tobytes(),
            "overlays": [list(o) for o in cols.overlays],
            "metadata_sizes": np.diff(cols.metadata_ends, prepend=0).astype(_U32).tobytes(),
            "metadata": cols.metadata,
        },
    }
    if cols.row_order is not None:
        doc["entry_columns"]["index_keys"] = cols.keys[cols.row_order].astype(_U64).tobytes()
    if cols.holes is not None:
        doc["entry_columns"]["index_holes"] = cols.holes.astype(_U32).tobytes()
    return cbor2.dumps(doc, canonical=True)


def encode_metadata(
    config: Mapping[str, Any],
    key_counter: int,
    generation: int,
    entries: Mapping[int, EntryMetadata],
    row_keys: np.ndarray | None = None,
) -> bytes:
    """Encode the metadata table canonically (entries sorted by key; deterministic bytes).

    ``row_keys``: the key at each index position (-1 at a hole) when the index is not
    simply the keys in ascending order; stored as the ``row_order`` and ``index_holes``
    columns.
    """
    cols = MetadataColumns.from_entries(entries).with_row_keys(row_keys)
    return encode_columns(config, key_counter, generation, cols)


# ----------------------------------------------------------------------------- decode


@dataclass(frozen=True)
class MetadataHeader:
    """The fields before the entry columns: what a manifest needs, read in microseconds."""

    version: int
    config: dict[str, Any]
    entries: int
    key_counter: int
    generation: int
    #: index positions that hold no entry (0 before version 4)
    holes: int = 0


@dataclass(frozen=True, eq=False)
class DecodedMetadata:
    """The decoded content of metadata bytes: the header and the validated columns.

    ``entries`` materialises (and strictly validates) a key -> EntryMetadata dict on
    first use; :meth:`OluoEngine.from_snapshot` uses ``columns`` and builds no entry.
    """

    config: dict[str, Any]
    key_counter: int
    generation: int
    columns: MetadataColumns

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def row_order(self) -> np.ndarray | None:
        """Non-hole index position -> entry row (None: the ``i``-th such position holds
        the ``i``-th key)."""
        return self.columns.row_order

    @property
    def holes(self) -> np.ndarray:
        """The index positions that hold no entry (int64, ascending)."""
        h = self.columns.holes
        return np.zeros(0, np.int64) if h is None else h

    def row_keys(self) -> np.ndarray:
        """The key held at each index position (int64)."""
        return self.columns.row_keys()

    @cached_property
    def entries(self) -> dict[int, EntryMetadata]:
        cols = self.columns
        return {int(k): cols.entry(i) for i, k in enumerate(cols.keys.tolist())}

    def check_entries(self) -> None:
        """Decode and validate every entry's caller metadata (SnapshotDecodeError)."""
        cols = self.columns
        for row in range(len(cols)):
            cols.metadata_at(row)

    def __repr__(self) -> str:
        return (
            f"DecodedMetadata(config={self.config!r}, key_counter={self.key_counter}, "
            f"generation={self.generation}, entries={len(self)}, "
            f"holes={self.columns.n_holes})"
        )


def _check_header(doc: Mapping[str, Any], need_count: bool) -> MetadataHeader:
    if doc.get("format") != FORMAT_NAME:
        raise _fail(f"format is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if version not in READABLE_VERSIONS or not _is_int(version):
        raise _fail(f"unsupported version {version!r} (this build reads {list(READABLE_VERSIONS)})")
    config = doc.get("config")
    fields = (
        CONFIG_FIELDS_V2 if version < 3 else CONFIG_FIELDS_V3 if version == 3 else CONFIG_FIELDS
    )
    if not isinstance(config, Mapping) or set(config) != set(fields):
        raise _fail(f"version {version} config must have exactly the fields {list(fields)}")
    config = dict(config)
    if version < 3:
        config["prune_headroom"] = LEGACY_PRUNE_HEADROOM
    if version < 4:
        config.update(CompactionPolicy().as_dict())
    ph = config["prune_headroom"]
    if type(ph) is not float or not 0.0 <= ph <= 0.5:
        raise _fail(f"config prune_headroom must be a float in [0, 0.5], got {ph!r}")
    for name in ("repair_fraction", "hole_fraction"):
        v = config[name]
        if type(v) is not float or not 0.0 <= v <= 1.0:
            raise _fail(f"config {name} must be a float in [0, 1], got {v!r}")
    kc, gen = doc.get("key_counter"), doc.get("generation")
    if not (_is_int(kc) and kc >= 0 and _is_int(gen) and gen >= 0):
        raise _fail("key_counter and generation must be non-negative ints")
    count = -1
    if version >= 2 or need_count:
        count = doc.get("entries")
        if version == 1:
            count = len(count) if isinstance(count, list) else None
        if not (_is_int(count) and count >= 0):
            raise _fail(f"entries must be a non-negative int, got {count!r}")
    holes = doc.get("holes", 0) if version >= 4 else 0
    if not (_is_int(holes) and holes >= 0):
        raise _fail(f"holes must be a non-negative int, got {holes!r}")
    return MetadataHeader(version, config, count, kc, gen, holes)


def read_metadata_header(data: bytes | bytearray | memoryview) -> MetadataHeader:
    """Read config, entry count, key counter and generation without decoding the entries.

    Only the header is checked here (format, version, field types); the columns are
    validated by :func:`decode_metadata`. Version 1 payloads have no count field, so
    they are decoded in full.
    """
    raw = memoryview(data).cast("B")
    if len(raw) < 1 or raw[0] & 0xE0 != 0xA0 or raw[0] & 0x1F > 23:
        raise _fail("top level is not a small CBOR map")
    n_items = raw[0] & 0x1F
    fp = io.BytesIO(raw)
    fp.seek(1)
    dec = cbor2.CBORDecoder(fp)
    doc: dict[str, Any] = {}
    try:
        for _ in range(n_items):
            key = dec.decode()
            if key == "entry_columns":
                break
            doc[key] = dec.decode()
            if key == "entries" and isinstance(doc[key], list):
                return _header_of(decode_metadata(data))
    except SnapshotDecodeError:
        raise
    except Exception as exc:
        raise _fail(f"header is not CBOR ({exc})") from exc
    if not set(_HEADER_FIELDS) <= set(doc):
        raise _fail(f"missing header fields {sorted(set(_HEADER_FIELDS) - set(doc))}")
    return _check_header(doc, need_count=True)


def _header_of(meta: DecodedMetadata) -> MetadataHeader:
    return MetadataHeader(1, dict(meta.config), len(meta), meta.key_counter, meta.generation)


def decode_metadata(data: bytes | bytearray | memoryview | Mapping[str, Any]) -> DecodedMetadata:
    """Decode (and validate) metadata bytes, or an already-decoded CBOR document.

    Bytes must be exactly one canonical CBOR item: trailing bytes or a
    non-canonical encoding are rejected, so one logical state has one encoding.
    Every column is checked (lengths, ranges, key order, unique targets); each
    entry's caller map is checked when first decoded (or by ``check_entries``).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        fp = io.BytesIO(raw)
        try:
            doc = cbor2.CBORDecoder(fp).decode()
        except Exception as exc:  # cbor2 raises several types on garbage
            raise _fail(f"not CBOR ({exc})") from exc
        if fp.tell() != len(raw):
            raise _fail(f"{len(raw) - fp.tell()} trailing bytes after the CBOR item")
        try:
            canonical = cbor2.dumps(doc, canonical=True)
        except Exception as exc:
            raise _fail(f"cannot re-encode ({exc})") from exc
        if canonical != raw:
            raise _fail("encoding is not canonical CBOR")
    elif isinstance(data, Mapping):
        doc = data
    else:
        raise _fail(f"expected bytes or a mapping, got {type(data).__name__}")

    if not isinstance(doc, Mapping):
        raise _fail("top level is not a map")
    head = _check_header(doc, need_count=False)
    if head.version == 1:
        if set(doc) != {"format", "version", "config", "key_counter", "generation", "entries"}:
            raise _fail("version 1 fields are format, version, config, key_counter, ...")
        cols = _columns_from_v1(doc["entries"])
    else:
        fields = {*_HEADER_FIELDS, "entry_columns"} | ({"holes"} if head.version >= 4 else set())
        if set(doc) != fields:
            raise _fail(f"fields must be exactly {sorted(fields)}")
        c, keys_u = doc["entry_columns"], None
        if head.version >= 4:
            c = _columns_from_v4(c, head.entries)
            keys_u = np.frombuffer(c["keys"], _U64)  # validated by _columns_from_v4
        cols = _columns_from_v2(c, head.entries, head.holes, keys_u)
    return DecodedMetadata(head.config, head.key_counter, head.generation, cols)


def _u64_column(c: Mapping[str, Any], name: str, n: int | None) -> np.ndarray:
    b = c[name]
    if type(b) is not bytes:
        raise _fail(f"column {name} is not a byte string")
    if len(b) % 8 or (n is not None and len(b) != 8 * n):
        want = "a multiple of 8" if n is None else str(8 * n)
        raise _fail(f"column {name} has {len(b)} bytes, expected {want}")
    return np.frombuffer(b, _U64)


def _increasing(a: np.ndarray) -> bool:
    """Strictly increasing (compared, not subtracted: no wrap-around on uint64)."""
    return len(a) < 2 or bool((a[1:] > a[:-1]).all())


def _rows_column(c: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    rows = _u64_column(c, name, None)
    if len(rows) and (int(rows[-1]) >= n or not _increasing(rows)):
        raise _fail(f"column {name} must hold strictly increasing row numbers below {n}")
    return rows.astype(np.int64)


def _small_column(c: Mapping[str, Any], name: str, n: int, top: int) -> np.ndarray:
    b = c[name]
    if type(b) is not bytes or len(b) != n:
        raise _fail(f"column {name} must be a byte string of {n} bytes")
    a = np.frombuffer(b, np.uint8)
    if n and int(a.max()) > top:
        raise _fail(f"column {name}: value {int(a.max())} out of range 0..{top}")
    return a.astype(np.int8)


def _keys_column(c: Mapping[str, Any], n: int) -> np.ndarray:
    """The ``keys`` column (u64): ``n`` strictly increasing keys below 2**63."""
    keys = _u64_column(c, "keys", n)
    if n and int(keys[-1]) >= 2**63:
        raise _fail("keys must be below 2**63")
    if not _increasing(keys):
        bad = int(np.argmin(keys[1:] > keys[:-1])) + 1
        raise _fail(f"entry {bad}: key {int(keys[bad])} is not greater than the previous key")
    return keys


def _keys_as_rows(keys: np.ndarray, c: Mapping[str, Any], name: str, n: int | None) -> np.ndarray:
    """Rows of the keys in column ``name`` (u64 each; ``n`` of them, or any number)."""
    named = _u64_column(c, name, n)
    rows, found = _key_rows(keys, named)
    if not found.all():
        bad = int(named[int(np.argmin(found))])
        raise _fail(f"column {name} names key {bad}, which no entry has")
    return rows


def _columns_from_v4(c: Any, n: int) -> dict[str, Any]:
    """Version 4's columns as the row-numbered columns of versions 2 and 3 (which
    :func:`_columns_from_v2` then validates, all but the keys checked here): keys become
    rows, sizes become ends."""
    if not isinstance(c, Mapping) or set(c) - {"index_keys", "index_holes"} != set(
        COLUMN_FIELDS_V4
    ):
        raise _fail(
            f"entry_columns must have exactly the columns {list(COLUMN_FIELDS_V4)} "
            "(and optionally index_keys and index_holes)"
        )
    keys = _keys_column(c, n)
    out = {k: v for k, v in c.items() if k in COLUMN_FIELDS or k == "index_holes"}
    for name, classic in (("expires_keys", "expires_rows"), ("overlay_keys", "overlay_rows")):
        rows = _keys_as_rows(keys, c, name, None)
        if not _increasing(rows):
            raise _fail(f"column {name} must hold strictly increasing keys")
        out[classic] = rows.astype(_U64).tobytes()
    sizes = c["metadata_sizes"]
    if type(sizes) is not bytes or len(sizes) != 4 * n:
        raise _fail(f"column metadata_sizes must be a byte string of {4 * n} bytes")
    sz = np.frombuffer(sizes, _U32).astype(np.int64)
    if n and int(sz.min()) < 1:
        raise _fail("column metadata_sizes: every entry's map is at least one byte")
    if type(c["metadata"]) is bytes and int(sz.sum()) != len(c["metadata"]):
        raise _fail("column metadata_sizes must add up to the length of the metadata column")
    out["metadata_ends"] = np.cumsum(sz).astype(_U64).tobytes()
    if "index_keys" in c:
        order = _keys_as_rows(keys, c, "index_keys", n)
        if n and not (np.bincount(order, minlength=n) == 1).all():
            raise _fail("column index_keys must name every entry exactly once")
        if np.array_equal(order, np.arange(n)):
            raise _fail("column index_keys is in key order (it must then be absent)")
        out["row_order"] = order.astype(_U32).tobytes()
    return out


def _columns_from_v2(
    c: Any, n: int, n_holes: int = 0, keys_u: np.ndarray | None = None
) -> MetadataColumns:
    if not isinstance(c, Mapping) or set(c) - {"row_order", "index_holes"} != set(COLUMN_FIELDS):
        raise _fail(
            f"entry_columns must have exactly the columns {list(COLUMN_FIELDS)} "
            "(and optionally row_order and index_holes)"
        )
    keys = (_keys_column(c, n) if keys_u is None else keys_u).astype(np.int64)
    targets = c["targets"]
    if type(targets) is not list or len(targets) != n:
        raise _fail(f"column targets must be an array of {n} ids")
    kinds = set(map(type, targets))
    if not kinds <= {str, int}:
        bad = next(t for t in targets if type(t) not in (str, int))
        raise _fail(f"target {bad!r} is not str or int")
    tg = np.empty(n, object)
    tg[:] = targets
    _check_unique(targets, keys)
    scope = _small_column(c, "scope", n, 2)
    tier = _small_column(c, "privacy_tier", n, 3)
    ingested = _u64_column(c, "ingested_at_ms", n)
    exp_rows = _rows_column(c, "expires_rows", n)
    exp_at = _u64_column(c, "expires_at", len(exp_rows))
    ov_rows = _rows_column(c, "overlay_rows", n)
    ovs = c["overlays"]
    if type(ovs) is not list or len(ovs) != len(ov_rows):
        raise _fail(f"column overlays must be an array of {len(ov_rows)} arrays")
    for o in ovs:
        if type(o) is not list or not o or not all(type(x) is str for x in o):
            raise _fail(f"overlays {o!r} must be a non-empty array of str")
    blob = c["metadata"]
    if type(blob) is not bytes:
        raise _fail("column metadata is not a byte string")
    ends = _u64_column(c, "metadata_ends", n)
    if n:
        if int(ends[-1]) != len(blob) or int(ends[0]) < 1:
            raise _fail("metadata_ends must end at the length of the metadata column")
        if not _increasing(ends):
            raise _fail("metadata_ends must be strictly increasing (one map per entry)")
        ends = ends.astype(np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        first = np.frombuffer(blob, np.uint8)[starts]
        if not ((first & 0xE0) == 0xA0).all():
            row = int(np.argmin((first & 0xE0) == 0xA0))
            raise _fail(f"entry {row}: metadata is not a CBOR map")
    elif blob:
        raise _fail("metadata column must be empty when there are no entries")
    return MetadataColumns(
        keys=keys,
        targets=tg,
        scope=scope,
        privacy_tier=tier,
        ingested_at_ms=ingested,
        expires_rows=exp_rows,
        expires_at=exp_at,
        overlay_rows=ov_rows,
        overlays=tuple(tuple(o) for o in ovs),
        metadata_ends=ends.astype(np.int64),
        metadata=blob,
        row_order=_row_order_column(c, n),
        holes=_holes_column(c, n, n_holes),
    )


def _row_order_column(c: Mapping[str, Any], n: int) -> np.ndarray | None:
    """The optional ``row_order`` column: a permutation of 0..n-1 that is not the identity
    (u32 little-endian, one per index position)."""
    if "row_order" not in c:
        return None
    b = c["row_order"]
    if type(b) is not bytes or len(b) != 4 * n:
        raise _fail(f"column row_order must be a byte string of {4 * n} bytes")
    ro = np.frombuffer(b, "<u4").astype(np.int64)
    if n and (int(ro.max()) >= n or not (np.bincount(ro, minlength=n) == 1).all()):
        raise _fail("column row_order is not a permutation of the entry rows")
    if np.array_equal(ro, np.arange(n)):
        raise _fail("column row_order is the identity (it must then be absent)")
    return ro


def _holes_column(c: Mapping[str, Any], n: int, n_holes: int) -> np.ndarray | None:
    """The ``index_holes`` column: ``n_holes`` strictly increasing positions below
    ``n + n_holes`` (u32 little-endian), present exactly when there are holes."""
    if "index_holes" not in c:
        if n_holes:
            raise _fail(f"the header counts {n_holes} holes but there is no index_holes column")
        return None
    b = c["index_holes"]
    if type(b) is not bytes or len(b) != 4 * n_holes or not n_holes:
        raise _fail(f"column index_holes must be a byte string of {4 * n_holes} bytes (> 0)")
    holes = np.frombuffer(b, "<u4").astype(np.int64)
    if int(holes[-1]) >= n + n_holes or not _increasing(holes):
        raise _fail(
            f"column index_holes must hold strictly increasing positions below {n + n_holes}"
        )
    return holes


def _check_unique(targets: list[Target], keys: np.ndarray) -> None:
    """Duplicate ids, found by sorting their hashes (exact comparison on a hash match)."""
    n = len(targets)
    if n < 2:
        return
    h = np.fromiter(map(hash, targets), np.int64, n)
    hs = np.sort(h)
    if not (hs[1:] == hs[:-1]).any():
        return
    order = np.argsort(h, kind="stable")  # equal hashes: find the rows, compare exactly
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1])
    seen: dict[Target, int] = {}
    for i in sorted(set(order[same].tolist()) | set(order[same + 1].tolist())):
        t = targets[i]
        if t in seen:
            raise _fail(
                f"snapshot contains duplicate id {t!r} (keys {int(keys[seen[t]])} and "
                f"{int(keys[i])})"
            )
        seen[t] = i


def _columns_from_v1(rows: Any) -> MetadataColumns:
    """Version 1 (one array per entry) converted to columns, validated as before."""
    if not isinstance(rows, list):
        raise _fail("entries is not a list")
    keys, targets, scopes, tiers, ingested, expires, overlays, metas = ([] for _ in range(8))
    prev = -1
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 8:
            raise _fail(f"entry {i} is not an 8-element array")
        key, target, scope, tier, expires_at, ing, ovl, meta = row
        if not _is_int(key) or key <= prev or key >= 2**63:
            raise _fail(f"entry {i}: key {key!r} is not an int greater than the previous key")
        prev = key
        if not (isinstance(target, str) or _is_int(target)):
            raise _fail(f"entry {i}: target {target!r} is not str or int")
        if not (_is_int(scope) and 0 <= scope <= 2):
            raise _fail(f"entry {i}: scope {scope!r} out of range")
        if not (_is_int(tier) and 0 <= tier <= 3):
            raise _fail(f"entry {i}: privacy tier {tier!r} out of range")
        if expires_at is not None and not (_is_int(expires_at) and 0 <= expires_at < 2**64):
            raise _fail(f"entry {i}: expires_at {expires_at!r} invalid")
        if not (_is_int(ing) and 0 <= ing < 2**64):
            raise _fail(f"entry {i}: ingested_at_ms {ing!r} invalid")
        if not isinstance(ovl, list) or not all(isinstance(o, str) for o in ovl):
            raise _fail(f"entry {i}: overlays must be a list of str")
        if not isinstance(meta, Mapping):
            raise _fail(f"entry {i}: metadata is not a map")
        try:
            meta = normalize_metadata(meta)
        except UnencodableMetadata as exc:
            raise _fail(f"entry {i}: {exc}") from exc
        keys.append(key)
        targets.append(target)
        scopes.append(scope)
        tiers.append(tier)
        ingested.append(ing)
        expires.append(expires_at)
        overlays.append(tuple(ovl))
        metas.append(encode_entry_metadata(meta))
    cols = MetadataColumns.build(
        np.asarray(keys, np.int64), targets, scopes, tiers, ingested, expires, overlays, metas
    )
    _check_unique(targets, cols.keys)
    return cols
