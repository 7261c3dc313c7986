"""The snapshot manifest: one small CAS book that names a generation.

A manifest binds the index payload, the metadata payload, the engine
counters, the index configuration, the chunker parameters, its parent
manifest and optional user annotations. Its bytes are canonical CBOR
(RFC 8949 §4.2.1 deterministic encoding), so the same state always gives the
same manifest CID. It holds no wall-clock time: times live in the local
refs log, outside the content-addressed data. Layout: docs/FORMAT.md §3.

Snapshot layer: this module owns the manifest's encoding and validation
(:func:`check_note` refuses what a manifest cannot hold before anything is
written) and fetching a manifest from a store (:func:`fetch_manifest`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from ..cas import CID, BookNotFound, BookStore
from .errors import ManifestSerde, SnapshotNotFound, UnsupportedVersion

MANIFEST_FORMAT = "oluo-snapshot-manifest"
MANIFEST_VERSION = 1
_FIELDS = frozenset(
    {
        "format",
        "version",
        "index_cid",
        "metadata_cid",
        "key_counter",
        "compact_generation",
        "parent",
        "index_config",
        "chunker",
        "entries",
        "index_size",
        "metadata_size",
        "note",
        "annotations",
    }
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "SnapshotManifest",
    "check_annotations",
    "check_note",
    "fetch_manifest",
]


def check_annotations(value: Any, path: str = "annotations") -> None:
    """Refuse annotation values that cannot round-trip exactly through canonical CBOR."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestSerde(f"{path}: non-finite float {value!r} cannot be stored")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_annotations(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestSerde(f"{path}: keys must be str, got {type(key).__name__}")
            check_annotations(item, f"{path}.{key}")
        return
    raise ManifestSerde(
        f"{path}: {type(value).__name__} cannot be stored "
        "(use None, bool, int, float, str, bytes, list or dict with str keys)"
    )


def check_note(note: Any, annotations: Any) -> None:
    """Refuse a note or annotations the manifest cannot hold *before* anything is written."""
    if not isinstance(note, str):
        raise ManifestSerde(f"manifest note must be str, got {type(note).__name__}")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestSerde(f"annotations must be a dict, got {type(annotations).__name__}")
    check_annotations(dict(annotations or {}))


def fetch_manifest(store: BookStore, cid: CID, role: str = "manifest") -> SnapshotManifest:
    """Fetch (hash-verified) and decode a manifest; a missing book is :class:`SnapshotNotFound`."""
    try:
        raw = store.get(cid)
    except BookNotFound as exc:
        raise SnapshotNotFound(cid.hex, f"{role} is not in the store") from exc
    return SnapshotManifest.from_bytes(raw, cid)


@dataclass(frozen=True)
class SnapshotManifest:
    """One generation's manifest (see docs/FORMAT.md §3 for the byte layout)."""

    index_cid: CID
    metadata_cid: CID
    key_counter: int
    compact_generation: int
    parent: CID | None = None
    index_config: Mapping[str, Any] = field(default_factory=dict)
    chunker: Mapping[str, int] = field(default_factory=dict)
    entries: int = 0
    index_size: int = 0
    metadata_size: int = 0
    note: str = ""
    annotations: Mapping[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_bytes(self) -> bytes:
        """Canonical CBOR encoding; raises :class:`ManifestSerde` on unencodable fields."""
        for name in ("key_counter", "compact_generation", "entries", "index_size", "metadata_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ManifestSerde(
                    f"manifest field {name} must be a non-negative int, got {value!r}"
                )
        if not isinstance(self.note, str):
            raise ManifestSerde(f"manifest note must be str, got {type(self.note).__name__}")
        check_annotations(dict(self.annotations))
        check_annotations(dict(self.index_config), "index_config")
        check_annotations(dict(self.chunker), "chunker")
        doc = {
            "format": MANIFEST_FORMAT,
            "version": self.version,
            "index_cid": bytes(self.index_cid),
            "metadata_cid": bytes(self.metadata_cid),
            "key_counter": self.key_counter,
            "compact_generation": self.compact_generation,
            "parent": None if self.parent is None else bytes(self.parent),
            "index_config": dict(self.index_config),
            "chunker": dict(self.chunker),
            "entries": self.entries,
            "index_size": self.index_size,
            "metadata_size": self.metadata_size,
            "note": self.note,
            "annotations": dict(self.annotations),
        }
        try:
            return cbor2.dumps(doc, canonical=True)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise ManifestSerde(f"cannot encode manifest: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes, cid: CID | None = None) -> SnapshotManifest:
        """Decode and validate a manifest; errors name the manifest CID when given."""
        where = f"manifest {cid}" if cid is not None else "manifest"
        try:
            doc = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several unrelated types on garbage
            raise ManifestSerde(f"{where}: not valid CBOR ({exc})") from exc
        if not isinstance(doc, dict):
            raise ManifestSerde(f"{where}: top level is {type(doc).__name__}, expected a map")
        if doc.get("format") != MANIFEST_FORMAT:
            raise ManifestSerde(
                f"{where}: format tag {doc.get('format')!r} is not {MANIFEST_FORMAT!r}"
            )
        version = doc.get("version")
        if version != MANIFEST_VERSION:
            raise UnsupportedVersion(version, "manifest")
        if set(doc) != _FIELDS:
            missing = sorted(_FIELDS - set(doc))
            extra = sorted(str(k) for k in set(doc) - _FIELDS)
            raise ManifestSerde(f"{where}: missing fields {missing}, unknown fields {extra}")

        def cid_field(name: str, optional: bool = False) -> CID | None:
            raw = doc[name]
            if raw is None and optional:
                return None
            if not isinstance(raw, bytes):
                raise ManifestSerde(f"{where}: field {name} is not a binary CID")
            try:
                return CID.from_bytes(raw)
            except ValueError as exc:
                raise ManifestSerde(f"{where}: field {name}: {exc}") from exc

        def int_field(name: str) -> int:
            value = doc[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ManifestSerde(
                    f"{where}: field {name} must be a non-negative int, got {value!r}"
                )
            return value

        for name in ("index_config", "chunker", "annotations"):
            if not isinstance(doc[name], dict):
                raise ManifestSerde(f"{where}: field {name} must be a map")
        if not isinstance(doc["note"], str):
            raise ManifestSerde(f"{where}: field note must be text")
        manifest = cls(
            index_cid=cid_field("index_cid"),
            metadata_cid=cid_field("metadata_cid"),
            key_counter=int_field("key_counter"),
            compact_generation=int_field("compact_generation"),
            parent=cid_field("parent", optional=True),
            index_config=doc["index_config"],
            chunker=doc["chunker"],
            entries=int_field("entries"),
            index_size=int_field("index_size"),
            metadata_size=int_field("metadata_size"),
            note=doc["note"],
            annotations=doc["annotations"],
            version=version,
        )
        if manifest.to_bytes() != bytes(data):
            raise ManifestSerde(f"{where}: bytes are not in canonical form")
        return manifest

    def __repr__(self) -> str:
        parent = "None" if self.parent is None else self.parent.short
        return (
            f"SnapshotManifest(generation={self.compact_generation}, entries={self.entries}, "
            f"index={self.index_cid.short}, metadata={self.metadata_cid.short}, parent={parent})"
        )

    def _repr_html_(self) -> str:
        return manifest_html(self, f"SnapshotManifest (generation {self.compact_generation})")


def _value_text(value: Any) -> str:
    """Deterministic text of a manifest value (maps with sorted keys)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value_text(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return repr(value) if isinstance(value, str | bytes) else str(value)


def manifest_html(m: SnapshotManifest, caption: str, cid: CID | None = None) -> str:
    """The HTML table of a manifest (shared by SnapshotManifest and Snapshot reprs):
    short CIDs with the full hex in a title and in a closed ``<details>``."""
    from .._html import Raw, details, kv_table, short_cid

    rows: list[tuple[str, Any]] = [("generation", m.compact_generation)]
    if cid is not None:
        rows.append(("manifest", short_cid(cid)))
    rows += [
        ("parent", short_cid(m.parent)),
        ("entries", m.entries),
        ("key counter", m.key_counter),
        ("index", Raw(f"{short_cid(m.index_cid)} {m.index_size} B")),
        ("metadata", Raw(f"{short_cid(m.metadata_cid)} {m.metadata_size} B")),
        ("index config", _value_text(dict(m.index_config))),
        ("chunker", _value_text(dict(m.chunker))),
        ("note", m.note),
        ("format version", m.version),
    ]
    out = kv_table(caption, rows)
    if m.annotations:
        out += kv_table(
            "annotations", [(k, _value_text(m.annotations[k])) for k in sorted(m.annotations)]
        )
    cids = [("index", m.index_cid), ("metadata", m.metadata_cid), ("parent", m.parent)]
    if cid is not None:
        cids.insert(0, ("manifest", cid))
    full = kv_table(None, [(k, Raw(f"<code>{c.hex}</code>")) for k, c in cids if c is not None])
    return Raw(out + details("full CIDs", full))
