"""Typed errors of the snapshot layer (their names are part of the public API).

Content failures (a missing or corrupt book, a malformed DAG) are *not* wrapped:
they surface as the CAS's own ``ContentError`` subclasses, which name the CID.
"""

from __future__ import annotations

__all__ = [
    "EngineRestoreError",
    "HeadRegression",
    "IndexCodecError",
    "LockTimeout",
    "ManifestSerde",
    "MetadataDeserialize",
    "OluoPersistError",
    "PersistIOError",
    "SnapshotNotFound",
    "UnsupportedVersion",
]


class OluoPersistError(Exception):
    """Base class of every snapshot-layer failure."""


class ManifestSerde(OluoPersistError):
    """A head file or manifest could not be encoded or decoded."""


class MetadataDeserialize(OluoPersistError):
    """The metadata payload of a snapshot could not be decoded."""


class EngineRestoreError(OluoPersistError):
    """The engine refused to restore from the snapshot's payloads."""


class UnsupportedVersion(OluoPersistError):
    """A head file or manifest carries a format version this build cannot read."""

    def __init__(self, version: object, what: str = "manifest") -> None:
        self.version = version
        self.what = what
        super().__init__(f"unsupported {what} version {version!r} (this build reads version 1)")


class SnapshotNotFound(OluoPersistError):
    """The manifest a head or reference names is not in the store."""

    def __init__(self, cid: str, detail: str = "") -> None:
        self.cid = cid
        super().__init__(f"snapshot manifest {cid} not found" + (f": {detail}" if detail else ""))


class PersistIOError(OluoPersistError):
    """An operating-system failure while reading or writing snapshot files."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        self.cause = cause
        super().__init__(message if cause is None else f"{message}: {cause}")


class HeadRegression(OluoPersistError):
    """A persist would move the head to a generation not above the current one."""

    def __init__(self, current: int, attempted: int) -> None:
        self.current = current
        self.attempted = attempted
        super().__init__(
            f"refusing to move the head from generation {current} to generation {attempted}: "
            "the head never moves backwards (use Lab.checkout to read an older generation)"
        )


class LockTimeout(PersistIOError):
    """Another process held the data directory's lock for too long."""


class IndexCodecError(OluoPersistError):
    """An index record (oluo_lab.snapshot.index_codec) that cannot be decoded: a malformed
    record, a patch that does not apply, a delta chain over the bound, or an output whose
    length or blake3 digest differs from the record's. ``.cid`` is the offending record CID."""

    def __init__(self, message: str, cid: object = None) -> None:
        self.cid = cid
        hexed = getattr(cid, "hex", None)
        super().__init__(f"index record {hexed}: {message}" if hexed else message)
