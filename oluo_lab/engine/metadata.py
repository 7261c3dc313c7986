"""Canonical metadata encoding of engine snapshots (docs/FORMAT.md, section ``engine``).

The metadata bytes of a :class:`~oluo_lab.engine.events.PersistSnapshot` are one
canonical CBOR item (RFC 8949 §4.2.3 "length-first" core deterministic order, as
written by ``cbor2.dumps(obj, canonical=True)``)::

    {"format": "oluo-engine-metadata", "version": 1,
     "config": {"dim", "metric", "M", "ef_construction", "ef_search", "faiss_version"},
     "key_counter": int, "generation": int,
     "entries": [[key, target, scope, privacy_tier, expires_at, ingested_at_ms,
                  overlays, metadata], ...],          # sorted by key
     "row_order": bytes}                              # version 2 only

Version 1: index position ``i`` holds the ``i``-th entry (ascending key order).
Version 2 (written only when that is not so, i.e. after the engine renumbered a
rebuilt index for cache locality): ``row_order`` is little-endian uint32, one per
index position, the position of that row's entry in ``entries``; a permutation
that is not the identity.

Caller metadata is restricted to values that CBOR round-trips exactly: None,
bool, int, float (not NaN), str, bytes, list, and dict with str keys. Tuples,
sets, NaN, non-str keys and arbitrary objects are rejected with
:class:`~oluo_lab.engine.errors.UnencodableMetadata` at ingest time. NumPy
scalars are converted to the equivalent Python value first.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from .errors import InvalidEvent, SnapshotDecodeError, UnencodableMetadata
from .events import EntryMetadata, PrivacyTier, Scope, Target

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "DecodedMetadata",
    "encode_metadata",
    "decode_metadata",
    "normalize_metadata",
    "normalize_target",
]

FORMAT_NAME = "oluo-engine-metadata"
FORMAT_VERSION = 2
#: versions the decoder accepts (1: index rows in key order, no ``row_order``)
FORMAT_VERSIONS = (1, 2)
_MAX_DEPTH = 64
CONFIG_FIELDS = ("dim", "metric", "M", "ef_construction", "ef_search", "faiss_version")


def normalize_target(t: Any) -> Target:
    """Return the caller id as a plain ``str`` or ``int`` (numpy scalars converted)."""
    if isinstance(t, (bool, np.bool_)):
        raise InvalidEvent(f"caller id must be str or int, got bool {t!r}")
    if isinstance(t, str):
        return str(t)
    if isinstance(t, (int, np.integer)):
        return int(t)
    raise InvalidEvent(f"caller id must be str or int, got {type(t).__name__} {t!r}")


def _norm(value: Any, path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise UnencodableMetadata(f"metadata nested deeper than {_MAX_DEPTH} at {path}")
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            raise UnencodableMetadata(f"metadata value at {path} is NaN (does not round-trip)")
        return f
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(value)
    if isinstance(value, list):
        return [_norm(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnencodableMetadata(
                    f"metadata key {k!r} at {path} is {type(k).__name__}; only str keys are allowed"
                )
            out[str(k)] = _norm(v, f"{path}.{k}", depth + 1)
        return out
    raise UnencodableMetadata(
        f"metadata value at {path} has type {type(value).__name__}; allowed: None, bool, int, "
        "float (not NaN), str, bytes, list, dict with str keys"
    )


def normalize_metadata(meta: Any) -> dict[str, Any]:
    """Validate caller metadata and return the exact value that will be stored."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise UnencodableMetadata(f"metadata must be a mapping, got {type(meta).__name__}")
    return _norm(meta, "metadata", 0)


@dataclass(frozen=True)
class DecodedMetadata:
    """The decoded content of metadata bytes.

    ``row_order`` (None: ascending key order) gives, for each index position, the
    position of its entry in ascending key order; :meth:`row_keys` applies it.
    """

    config: dict[str, Any]
    key_counter: int
    generation: int
    entries: dict[int, EntryMetadata]
    row_order: np.ndarray | None = None

    def row_keys(self) -> np.ndarray:
        """The key held at each index position (int64)."""
        keys = np.asarray(sorted(self.entries), np.int64)
        return keys if self.row_order is None else keys[self.row_order]

    def __repr__(self) -> str:
        return (
            f"DecodedMetadata(config={self.config!r}, key_counter={self.key_counter}, "
            f"generation={self.generation}, entries={len(self.entries)})"
        )


def _entry_row(key: int, e: EntryMetadata) -> list[Any]:
    return [
        int(key),
        e.target,
        int(e.scope),
        int(e.privacy_tier),
        e.expires_at,
        int(e.ingested_at_ms),
        list(e.overlays),
        dict(e.metadata),
    ]


def _row_order(sorted_keys: np.ndarray, row_keys: np.ndarray | None) -> np.ndarray | None:
    """Positions in ``sorted_keys`` of ``row_keys`` (None when they are the same array)."""
    if row_keys is None:
        return None
    row_keys = np.asarray(row_keys, np.int64)
    if len(row_keys) != len(sorted_keys):
        raise ValueError(f"row_keys has {len(row_keys)} keys for {len(sorted_keys)} entries")
    if np.array_equal(row_keys, sorted_keys):
        return None
    pos = np.searchsorted(sorted_keys, row_keys)
    ok = pos < len(sorted_keys)
    ok[ok] = sorted_keys[pos[ok]] == row_keys[ok]
    if not ok.all() or len(np.unique(pos)) != len(pos):
        raise ValueError("row_keys is not a permutation of the entry keys")
    return pos


def encode_metadata(
    config: Mapping[str, Any],
    key_counter: int,
    generation: int,
    entries: Mapping[int, EntryMetadata],
    row_keys: np.ndarray | None = None,
) -> bytes:
    """Encode the metadata table canonically (entries sorted by key; deterministic bytes).

    ``row_keys``: the key at each index position, when the index is not in ascending
    key order (the engine renumbers rebuilt indexes); written as version 2's
    ``row_order``. Key order (or None) writes version 1, byte for byte as before.
    """
    order = sorted(entries)
    doc = {
        "format": FORMAT_NAME,
        "version": 1,
        "config": {k: config[k] for k in CONFIG_FIELDS},
        "key_counter": int(key_counter),
        "generation": int(generation),
        "entries": [_entry_row(k, entries[k]) for k in order],
    }
    pos = _row_order(np.asarray(order, np.int64), row_keys)
    if pos is not None:
        doc["version"] = 2
        doc["row_order"] = pos.astype("<u4").tobytes()
    return cbor2.dumps(doc, canonical=True)


def _fail(msg: str) -> SnapshotDecodeError:
    return SnapshotDecodeError(f"invalid engine metadata: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def decode_metadata(data: bytes | bytearray | memoryview | Mapping[str, Any]) -> DecodedMetadata:
    """Decode (and fully validate) metadata bytes, or an already-decoded CBOR document.

    Bytes must be exactly one canonical CBOR item: trailing bytes or a
    non-canonical encoding are rejected, so one logical state has one encoding.
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
    if doc.get("format") != FORMAT_NAME:
        raise _fail(f"format is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if version not in FORMAT_VERSIONS or isinstance(version, bool):
        raise _fail(f"unsupported version {version!r}")
    fields = {"format", "version", "config", "key_counter", "generation", "entries"}
    if version == 2:
        fields.add("row_order")
    missing = fields - set(doc)
    if missing:
        raise _fail(f"missing fields {sorted(missing)}")
    extra = set(doc) - fields
    if extra:
        raise _fail(f"unknown fields {sorted(map(str, extra))} in version {version}")
    config = doc["config"]
    if not isinstance(config, Mapping) or set(config) != set(CONFIG_FIELDS):
        raise _fail(f"config must have exactly the fields {list(CONFIG_FIELDS)}")
    kc, gen = doc["key_counter"], doc["generation"]
    if not (_is_int(kc) and kc >= 0 and _is_int(gen) and gen >= 0):
        raise _fail("key_counter and generation must be non-negative ints")
    rows = doc["entries"]
    if not isinstance(rows, list):
        raise _fail("entries is not a list")
    entries: dict[int, EntryMetadata] = {}
    prev = -1
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 8:
            raise _fail(f"entry {i} is not an 8-element array")
        key, target, scope, tier, expires_at, ingested, overlays, meta = row
        if not _is_int(key) or key <= prev:
            raise _fail(f"entry {i}: key {key!r} is not an int greater than the previous key")
        prev = key
        if not (isinstance(target, str) or _is_int(target)):
            raise _fail(f"entry {i}: target {target!r} is not str or int")
        if not (_is_int(scope) and 0 <= scope <= 2):
            raise _fail(f"entry {i}: scope {scope!r} out of range")
        if not (_is_int(tier) and 0 <= tier <= 3):
            raise _fail(f"entry {i}: privacy tier {tier!r} out of range")
        if expires_at is not None and not (_is_int(expires_at) and expires_at >= 0):
            raise _fail(f"entry {i}: expires_at {expires_at!r} invalid")
        if not (_is_int(ingested) and ingested >= 0):
            raise _fail(f"entry {i}: ingested_at_ms {ingested!r} invalid")
        if not isinstance(overlays, list) or not all(isinstance(o, str) for o in overlays):
            raise _fail(f"entry {i}: overlays must be a list of str")
        if not isinstance(meta, Mapping):
            raise _fail(f"entry {i}: metadata is not a map")
        try:
            meta = normalize_metadata(meta)
        except UnencodableMetadata as exc:
            raise _fail(f"entry {i}: {exc}") from exc
        entries[key] = EntryMetadata(
            target=target,
            metadata=meta,
            privacy_tier=PrivacyTier(tier),
            expires_at=expires_at,
            ingested_at_ms=ingested,
            scope=Scope(scope),
            overlays=tuple(overlays),
        )
    row_order = None
    if version == 2:
        raw_order = doc["row_order"]
        n = len(entries)
        if not isinstance(raw_order, bytes) or len(raw_order) != 4 * n:
            raise _fail(f"row_order must be {4 * n} bytes (uint32 per entry)")
        row_order = np.frombuffer(raw_order, "<u4").astype(np.int64)
        if n and (row_order.max() >= n or (np.bincount(row_order, minlength=n) != 1).any()):
            raise _fail("row_order is not a permutation of the entries")
        if (row_order == np.arange(n)).all():
            raise _fail("row_order is the identity (that state is written as version 1)")
    return DecodedMetadata(dict(config), kc, gen, entries, row_order)
