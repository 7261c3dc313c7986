"""The snapshot manifest: one small CAS book that names a commit.

A manifest binds the index payload, the metadata payload, the engine counters, the
engine's real configuration, the chunker parameters and its parent manifest, plus the
commit's note and its user namespaces. Its bytes are canonical CBOR (RFC 8949 §4.2.1
deterministic encoding), so the same state always gives the same manifest CID. It holds
no wall-clock time, sequence number or measured timing: those live in the refs log,
outside the content-addressed data. Layout: docs/FORMAT.md §3.2.

Two versions are read. Version 1 (what :func:`~oluo_lab.snapshot.persist_snapshot`
writes) carries free-form ``annotations``. Version 2 (what ``Lab.commit`` writes) adds
``index_digest`` (the blake3 of the index bytes: the index's content identity) and
replaces ``annotations`` by three namespaces: ``params`` (the user's experiment
parameters), ``metrics`` (the user's results) and ``evaluation`` (recall recorded at
commit on stored held-out queries, or null).

Snapshot layer: this module owns the manifest's encoding and validation
(:func:`check_note` and :func:`canonical_value` refuse or normalise what a manifest
cannot hold before anything is written), the parent rule (:func:`parent_admits`) and
fetching a manifest from a store (:func:`fetch_manifest`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
import numpy as np

from ..cas import CID, BookNotFound, BookStore
from .errors import ManifestSerde, SnapshotNotFound, UnsupportedVersion

#: format (docs/FORMAT.md §3.2): the manifest's ``format`` field.
MANIFEST_FORMAT = "oluo-snapshot-manifest"
#: format (docs/FORMAT.md §3.2): the version ``persist_snapshot`` writes (the dataclass default)
MANIFEST_VERSION = 1
#: format (docs/FORMAT.md §3.2): the version ``Lab.commit`` writes
COMMIT_MANIFEST_VERSION = 2
#: format (docs/FORMAT.md §3.2): the manifest versions this build reads
MANIFEST_VERSIONS = (1, 2)
_COMMON = frozenset(
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
    }
)
_FIELDS = {
    1: _COMMON | {"annotations"},
    2: _COMMON | {"index_digest", "params", "metrics", "evaluation"},
}

__all__ = [
    "COMMIT_MANIFEST_VERSION",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MANIFEST_VERSIONS",
    "SnapshotManifest",
    "canonical_value",
    "check_annotations",
    "check_note",
    "fetch_manifest",
    "parent_admits",
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


def canonical_value(value: Any, path: str = "params") -> Any:
    """``value`` as the plain data a manifest stores, or :class:`ManifestSerde` naming
    the offending path. Notebook values are normalised: numpy scalars and 0-d arrays
    become Python scalars, tuples become lists, mappings become dicts (str keys only),
    ``str`` subclasses become ``str``; non-finite floats are refused."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ManifestSerde(
                f"{path}: a {value.ndim}-d array cannot be stored; pass .tolist() if it is small"
            )
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | bytes):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestSerde(f"{path}: non-finite float {value!r} cannot be stored")
        return float(value)
    if isinstance(value, list | tuple):
        return [canonical_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, np.str_):
                key = str(key)
            if not isinstance(key, str):
                raise ManifestSerde(f"{path}: keys must be str, got {type(key).__name__}")
            out[key] = canonical_value(item, f"{path}.{key}")
        return out
    raise ManifestSerde(
        f"{path}: {type(value).__name__} cannot be stored (use None, bool, int, float, str, "
        "bytes, a list/tuple or a dict with str keys; numpy scalars are converted)"
    )


def check_note(note: Any, annotations: Any) -> None:
    """Refuse a note or annotations the manifest cannot hold *before* anything is written."""
    if not isinstance(note, str):
        raise ManifestSerde(f"manifest note must be str, got {type(note).__name__}")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestSerde(f"annotations must be a dict, got {type(annotations).__name__}")
    check_annotations(dict(annotations or {}))


def parent_admits(parent: SnapshotManifest, child: SnapshotManifest) -> bool:
    """The parent rule of a history: the parent's engine generation is below the
    child's, or equal when the child records the very same engine state (the same
    metadata payload: a commit that changed only its note, params, metrics or
    evaluation; its index is the parent's too, as no compaction ran in between)."""
    if parent.compact_generation < child.compact_generation:
        return True
    return (
        parent.compact_generation == child.compact_generation
        and parent.metadata_cid == child.metadata_cid
    )


def fetch_manifest(store: BookStore, cid: CID, role: str = "manifest") -> SnapshotManifest:
    """Fetch (hash-verified) and decode a manifest; a missing book is :class:`SnapshotNotFound`."""
    try:
        raw = store.get(cid)
    except BookNotFound as exc:
        raise SnapshotNotFound(cid.hex, f"{role} is not in the store") from exc
    return SnapshotManifest.from_bytes(raw, cid)


@dataclass(frozen=True)
class SnapshotManifest:
    """One commit's manifest (see docs/FORMAT.md §3.2 for the byte layout).

    ``compact_generation`` is the engine's compaction generation (engine detail: a
    commit that changes only its note or params keeps it). Version 1 manifests carry
    ``annotations``; version 2 ones ``index_digest``, ``params``, ``metrics`` and
    ``evaluation`` instead (the other version's fields stay empty)."""

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
    index_digest: bytes | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] | None = None

    def _doc(self) -> dict[str, Any]:
        if self.version not in MANIFEST_VERSIONS:
            raise ManifestSerde(f"manifest version must be one of {MANIFEST_VERSIONS}")
        for name in ("key_counter", "compact_generation", "entries", "index_size", "metadata_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ManifestSerde(
                    f"manifest field {name} must be a non-negative int, got {value!r}"
                )
        if not isinstance(self.note, str):
            raise ManifestSerde(f"manifest note must be str, got {type(self.note).__name__}")
        check_annotations(dict(self.index_config), "index_config")
        check_annotations(dict(self.chunker), "chunker")
        doc: dict[str, Any] = {
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
        }
        if self.version == 1:
            if self.params or self.metrics or self.evaluation is not None or self.index_digest:
                raise ManifestSerde("a version 1 manifest has no params, metrics or evaluation")
            check_annotations(dict(self.annotations))
            doc["annotations"] = dict(self.annotations)
            return doc
        if self.annotations:
            raise ManifestSerde("a version 2 manifest keeps user values in params and metrics")
        digest = self.index_digest
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ManifestSerde("manifest field index_digest must be 32 bytes (blake3)")
        check_annotations(dict(self.params), "params")
        check_annotations(dict(self.metrics), "metrics")
        if self.evaluation is not None:
            check_annotations(dict(self.evaluation), "evaluation")
        doc["index_digest"] = digest
        doc["params"] = dict(self.params)
        doc["metrics"] = dict(self.metrics)
        doc["evaluation"] = None if self.evaluation is None else dict(self.evaluation)
        return doc

    def to_bytes(self) -> bytes:
        """Canonical CBOR encoding; raises :class:`ManifestSerde` on unencodable fields."""
        doc = self._doc()
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
        if isinstance(version, bool) or version not in MANIFEST_VERSIONS:
            raise UnsupportedVersion(version, "manifest", MANIFEST_VERSIONS)
        fields = _FIELDS[version]
        if set(doc) != fields:
            missing = sorted(fields - set(doc))
            extra = sorted(str(k) for k in set(doc) - fields)
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

        maps = ("index_config", "chunker", "annotations", "params", "metrics")
        for name in maps:
            if name in doc and not isinstance(doc[name], dict):
                raise ManifestSerde(f"{where}: field {name} must be a map")
        if not isinstance(doc["note"], str):
            raise ManifestSerde(f"{where}: field note must be text")
        extra: dict[str, Any] = {}
        if version == 2:
            digest = doc["index_digest"]
            if not isinstance(digest, bytes) or len(digest) != 32:
                raise ManifestSerde(f"{where}: field index_digest must be 32 bytes")
            evaluation = doc["evaluation"]
            if evaluation is not None and not isinstance(evaluation, dict):
                raise ManifestSerde(f"{where}: field evaluation must be a map or null")
            extra = {
                "index_digest": digest,
                "params": doc["params"],
                "metrics": doc["metrics"],
                "evaluation": evaluation,
            }
        else:
            extra = {"annotations": doc["annotations"]}
        try:
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
                version=version,
                **extra,
            )
            canonical = manifest.to_bytes()
        except ManifestSerde as exc:
            raise ManifestSerde(f"{where}: {exc}") from exc
        if canonical != bytes(data):
            raise ManifestSerde(f"{where}: bytes are not in canonical form")
        return manifest

    def __repr__(self) -> str:
        parent = "None" if self.parent is None else self.parent.short
        return (
            f"SnapshotManifest(generation={self.compact_generation}, entries={self.entries}, "
            f"index={self.index_cid.short}, metadata={self.metadata_cid.short}, parent={parent})"
        )

    @property
    def user_values(self) -> dict[str, Mapping[str, Any]]:
        """The user namespaces present: ``params``/``metrics`` (version 2) or
        ``annotations`` (version 1), each only when non-empty."""
        spaces = {"annotations": self.annotations, "params": self.params, "metrics": self.metrics}
        return {name: values for name, values in spaces.items() if values}

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
    short CIDs with the full hex in a title and in a closed ``<details>``; the index and
    metadata sizes are their payloads' logical sizes (what the root CID reaches)."""
    from .._html import Raw, details, fmt_bytes, kv_table, short_cid

    rows: list[tuple[str, Any]] = [("generation", m.compact_generation)]
    if cid is not None:
        rows.append(("manifest", short_cid(cid)))
    rows += [
        ("parent", short_cid(m.parent)),
        ("entries", m.entries),
        ("key counter", m.key_counter),
        ("index", Raw(f"{short_cid(m.index_cid)} {fmt_bytes(m.index_size)}")),
        ("metadata", Raw(f"{short_cid(m.metadata_cid)} {fmt_bytes(m.metadata_size)}")),
        ("index config", _value_text(dict(m.index_config))),
        ("chunker", _value_text(dict(m.chunker))),
        ("note", m.note),
        ("format version", m.version),
    ]
    if m.index_digest is not None:
        rows.insert(
            -1, ("index digest (blake3)", Raw(f"<code>{m.index_digest.hex()[:16]}…</code>"))
        )
    out = kv_table(caption, rows)
    for name, values in m.user_values.items():
        out += kv_table(name, [(k, _value_text(values[k])) for k in sorted(values)])
    if m.evaluation:
        out += kv_table("evaluation", evaluation_rows(m.evaluation))
    cids = [("index", m.index_cid), ("metadata", m.metadata_cid), ("parent", m.parent)]
    if cid is not None:
        cids.insert(0, ("manifest", cid))
    full = kv_table(None, [(k, Raw(f"<code>{c.hex}</code>")) for k, c in cids if c is not None])
    return Raw(out + details("full CIDs", full))


def evaluation_rows(evaluation: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Display rows of a manifest's recorded evaluation (deterministic text)."""
    k = evaluation.get("k")
    rows: list[tuple[str, Any]] = [
        ("queries", f"{evaluation.get('n_queries')} held-out queries"),
        ("k", k),
    ]
    for ef, recall in evaluation.get("recall", []):
        rows.append((f"recall@{k}, ef_search={ef}", f"{recall:.4f}"))
    return rows
