"""Typed errors of the engine (engine layer).

Every failure the engine reports is one of these classes. Bad input raises (or,
through ``handle()``, is reported as an :class:`~oluo_lab.engine.events.EngineError`
action carrying) an :class:`EngineInputError` subclass, and the engine state is
left exactly as it was: validation always happens before any mutation.
"""

from __future__ import annotations

__all__ = [
    "EngineErrorBase",
    "EngineInputError",
    "DimensionMismatch",
    "InvalidVector",
    "InvalidK",
    "DuplicateIds",
    "UnknownMetric",
    "UnencodableMetadata",
    "UnknownId",
    "InvalidEvent",
    "EngineRestoreFailed",
    "SnapshotDecodeError",
    "CompactCompleteFailed",
    "CompactionFailed",
]


class EngineErrorBase(Exception):
    """Root of every engine error (input, restore and swap failures)."""


class EngineInputError(EngineErrorBase, ValueError):
    """Bad input to the engine; the engine state is unchanged."""


class DimensionMismatch(EngineInputError):
    """A vector batch does not have the engine's dimension (or byte width for hamming)."""


class InvalidVector(EngineInputError):
    """Wrong dtype, NaN/inf components, or a zero vector under the cosine metric."""


class InvalidK(EngineInputError):
    """``k`` (or ``ef``) is not a positive integer."""


class DuplicateIds(EngineInputError):
    """The same caller id appears twice in one batch."""


class UnknownMetric(EngineInputError):
    """The metric is not one of cosine, l2, ip, hamming."""


class UnencodableMetadata(EngineInputError):
    """Caller metadata cannot be encoded canonically or would not round-trip exactly."""


class UnknownId(EngineInputError, KeyError):
    """A delete named a caller id that has no live entry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class InvalidEvent(EngineInputError):
    """An event field has the wrong type or value (scope, decision, now_ms, ...)."""


class EngineRestoreFailed(EngineErrorBase):
    """``from_snapshot`` could not rebuild an engine (corrupt index, mismatched config, ...)."""


class SnapshotDecodeError(EngineRestoreFailed):
    """The metadata bytes of a snapshot are not a valid oluo-engine-metadata document."""


class CompactCompleteFailed(EngineErrorBase):
    """A CompactComplete file could not be loaded or does not hold the current base."""


class CompactionFailed(EngineErrorBase):
    """Building or serialising the next base failed; the engine state is unchanged."""
