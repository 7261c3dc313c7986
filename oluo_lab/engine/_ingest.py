"""Validation and normalisation of event fields, above all of an Ingest batch (engine layer).

:func:`normalize_ingest` turns an :class:`~oluo_lab.engine.events.Ingest` event into an
:class:`IngestBatch` of plain per-entry values (caller ids as ``str``/``int``, caller
maps as the exact values that will be stored, scope and tier codes, expiry times), or
raises the :class:`~oluo_lab.engine.errors.EngineInputError` that names the problem.
It reads nothing of the engine and changes nothing: the engine plans and applies the
batch only after it has passed. The value rules for caller metadata (what CBOR
round-trips exactly) are also what a snapshot's decoder checks stored maps against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DuplicateIds, InvalidEvent, UnencodableMetadata
from .events import (
    IndexFull,
    IndexLightweight,
    Ingest,
    IngestDecision,
    PrivacyTier,
    Reject,
    Scope,
    Target,
)

__all__ = [
    "U64_MAX",
    "IngestBatch",
    "check_uint",
    "is_int",
    "normalize_ingest",
    "normalize_metadata",
    "normalize_target",
    "to_scope",
    "to_tier",
]

#: Largest time (ms) an entry can carry: times are stored as unsigned 64-bit ints.
U64_MAX = 2**64 - 1
#: Deepest nesting of lists and maps accepted in caller metadata.
MAX_DEPTH = 64


def is_int(x: Any) -> bool:
    """An int or NumPy integer, but not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_uint(name: str, value: Any) -> int:
    """``value`` as a non-negative int (InvalidEvent naming ``name`` otherwise)."""
    if not is_int(value) or int(value) < 0:
        raise InvalidEvent(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def to_scope(value: Any) -> Scope:
    """``value`` as a Scope (InvalidEvent when it names none)."""
    try:
        return Scope(value)
    except (ValueError, TypeError):
        raise InvalidEvent(f"unknown scope {value!r}") from None


def to_tier(value: Any) -> PrivacyTier:
    """``value`` as a PrivacyTier (InvalidEvent when it names none)."""
    try:
        return PrivacyTier(value)
    except (ValueError, TypeError):
        raise InvalidEvent(f"unknown privacy tier {value!r}") from None


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
    if depth > MAX_DEPTH:
        raise UnencodableMetadata(f"metadata nested deeper than {MAX_DEPTH} at {path}")
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


@dataclass(slots=True)
class IngestBatch:
    """An Ingest event's per-entry values, validated (entry ``i`` = vector row ``i``).

    ``metas`` and ``overlays`` are None when the event gives none, ``expires_at`` when
    its decision is one IndexFull (the common cases: nothing is stored for them).
    """

    targets: list[Target]
    metas: list[dict[str, Any]] | None
    decisions: list[IngestDecision]
    scope_codes: list[int]
    tier_codes: list[int]
    #: expiry time (ms, saturating) of each lightweight entry, None for the others
    expires_at: list[int | None] | None
    overlays: list[tuple[str, ...]] | None
    now: int


_DECISIONS = (Reject, IndexFull, IndexLightweight)


def normalize_ingest(ev: Ingest, n: int, single: bool) -> IngestBatch:
    """Validate every field of ``ev`` for ``n`` vectors (``single``: given as one 1-D
    vector, so ``targets`` and ``overlays`` may be one value)."""
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
    now = check_uint("now_ms", ev.now_ms)
    if now > U64_MAX:
        raise InvalidEvent(f"now_ms must fit in an unsigned 64-bit int, got {now}")
    if ev.metadata is None:
        metas = None
    else:
        metas_raw = _per_entry(
            "metadata", ev.metadata, n, lambda v: v is None or isinstance(v, Mapping)
        )
        metas = [normalize_metadata(m) for m in metas_raw]
    decisions = _per_entry("decision", ev.decision, n, lambda v: isinstance(v, _DECISIONS))
    for d in decisions:
        if not isinstance(d, _DECISIONS):
            raise InvalidEvent(f"unknown ingest decision {d!r}")
        if isinstance(d, IndexLightweight):
            check_uint("ttl_secs", d.ttl_secs)
    expires_at = None
    if not isinstance(ev.decision, IndexFull):  # (one IndexFull: nothing expires)
        expires_at = [
            min(now + int(d.ttl_secs) * 1000, U64_MAX) if isinstance(d, IndexLightweight) else None
            for d in decisions
        ]
    # scope and tier codes (one value for the whole batch, the common case: validated once)
    if is_int(ev.scope):
        scope_codes = [int(to_scope(ev.scope))] * n
    else:
        scope_codes = [int(to_scope(s)) for s in _per_entry("scope", ev.scope, n, is_int)]
    if is_int(ev.privacy_tier):
        tier_codes = [int(to_tier(ev.privacy_tier))] * n
    else:
        tier_codes = [
            int(to_tier(t)) for t in _per_entry("privacy_tier", ev.privacy_tier, n, is_int)
        ]
    overlays = None if ev.overlays is None else _overlays(ev.overlays, n, single)
    return IngestBatch(
        targets, metas, decisions, scope_codes, tier_codes, expires_at, overlays, now
    )


def _overlays(ov: Any, n: int, single: bool) -> list[tuple[str, ...]]:
    """One tuple of provenance ids (str) per entry."""
    if single and isinstance(ov, Sequence) and all(isinstance(o, str) for o in ov):
        ov = [ov]
    if isinstance(ov, (str, bytes)) or not isinstance(ov, Iterable):
        raise InvalidEvent("overlays must be a sequence (one sequence of str per entry)")
    ov = list(ov)
    if len(ov) != n:
        raise InvalidEvent(f"overlays has {len(ov)} items for {n} vectors")
    out = []
    for o in ov:
        if isinstance(o, str) or not isinstance(o, Iterable):
            raise InvalidEvent(f"overlays of one entry must be a sequence of str, got {o!r}")
        o = tuple(o)
        if not all(isinstance(x, str) for x in o):
            raise InvalidEvent(f"overlay ids must be str, got {o!r}")
        out.append(tuple(str(x) for x in o))
    return out
