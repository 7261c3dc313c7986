"""Typed errors of the snapshot layer (their names are part of the public API).

Content failures (a missing or corrupt book, a malformed DAG) are *not* wrapped:
they surface as the CAS's own ``ContentError`` subclasses, which name the CID. The root
:class:`OluoPersistError` sits under :class:`oluo_lab.errors.OluoError` (the whole tree is
drawn there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import OluoError

if TYPE_CHECKING:
    from ..cas import CID

__all__ = [
    "AmbiguousRef",
    "BadRefName",
    "CommitPruned",
    "EngineRestoreError",
    "HeadMoved",
    "HeadRegression",
    "IndexCodecError",
    "LockTimeout",
    "ManifestSerde",
    "MetadataDeserialize",
    "NotALab",
    "OluoPersistError",
    "ParamConflict",
    "PersistIOError",
    "ReadOnlyLab",
    "RefExists",
    "SnapshotNotFound",
    "UnknownRef",
    "UnsafeObjectStore",
    "UnsupportedVersion",
]


class OluoPersistError(OluoError):
    """Base class of every snapshot-layer failure."""


class ManifestSerde(OluoPersistError):
    """A head file or manifest could not be encoded or decoded."""


class MetadataDeserialize(OluoPersistError):
    """The metadata payload of a snapshot could not be decoded."""


class EngineRestoreError(OluoPersistError):
    """The engine refused to restore from the snapshot's payloads."""


class UnsupportedVersion(OluoPersistError):
    """A head file or manifest carries a format version this build cannot read.

    ``readable``: the versions this build reads (the format module's constant), named in
    the message."""

    def __init__(
        self, version: object, what: str = "manifest", readable: tuple[int, ...] = ()
    ) -> None:
        self.version = version
        self.what = what
        self.readable = tuple(readable)
        reads = ""
        if self.readable:
            plural = "s" if len(self.readable) > 1 else ""
            reads = f" (this build reads version{plural} {', '.join(map(str, self.readable))})"
        super().__init__(f"unsupported {what} version {version!r}{reads}")


class SnapshotNotFound(OluoPersistError):
    """The manifest a head or reference names is not in the store, or a reference names
    no snapshot.

    ``.cid`` is the *text* that named the snapshot (a ``str``, as the public API promises):
    the manifest's hex CID when a manifest is missing, else the reference itself
    (``"HEAD"`` of an empty lab, a tag or ``"#7"`` that names nothing)."""

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


class ReadOnlyLab(PersistIOError):
    """An operation that must write was asked of a lab this process cannot write (a
    read-only mount, a directory without write permission, read-only credentials);
    raised before anything is written. ``.path`` is the lab, ``.operation`` what needed
    to write. Everything that only reads works on such a lab."""

    def __init__(self, path: object, operation: str, cause: OSError | None = None) -> None:
        self.path = path
        self.operation = operation
        super().__init__(
            f"cannot {operation}: the lab {path} is read-only for this process "
            "(reading, checking out, log, verify and gc dry runs work; writing does not)",
            cause,
        )


class BadRefName(OluoPersistError, ValueError):
    """A branch or tag name outside the rules (``.name`` is the name as given, ``.rule``
    the rule it breaks); names never address anything outside the lab."""

    def __init__(self, kind: str, name: object, rule: str) -> None:
        self.kind = kind
        self.name = name
        self.rule = rule
        super().__init__(f"bad {kind} name {name!r}: {rule}")


class IndexCodecError(OluoPersistError):
    """An index record (oluo_lab.snapshot.index_codec) that cannot be decoded: a malformed
    record, a patch that does not apply, a delta chain over the bound, or an output whose
    length or blake3 digest differs from the record's. ``.cid`` is the offending record's
    CID (``None`` when the bytes have none yet)."""

    def __init__(self, message: str, cid: CID | None = None) -> None:
        self.cid = cid
        super().__init__(f"index record {cid.hex}: {message}" if cid is not None else message)


class NotALab(OluoPersistError):
    """A path opened as a lab is not one (nothing was created there). ``.path`` names it."""

    def __init__(self, path: object, detail: str = "") -> None:
        self.path = path
        super().__init__(
            f"{path} is not a lab"
            + (f" ({detail})" if detail else "")
            + "; create one with Lab(path)"
        )


class HeadMoved(HeadRegression):
    """A commit would not extend the branch head it found (``.found``), so the head would
    lose commits: the branch moved since the engine was checked out, or the engine
    descends from another commit (``.expected``, None for an engine of no commit of this
    lab). ``.branch`` names the branch; nothing was written and the engine is unchanged.
    ``.raced``: the head moved while this writer was moving it (an object store: another
    writer won the race; ``.found`` is the winner's commit). A subclass of
    :class:`HeadRegression` (a head never moves backwards)."""

    raced = False

    def __init__(
        self,
        branch: str,
        found: object,
        expected: object,
        message: str,
        *,
        current: int = -1,
        attempted: int = -1,
    ) -> None:
        self.branch = branch
        self.found = found
        self.expected = expected
        self.current = current
        self.attempted = attempted
        OluoPersistError.__init__(self, message)


class CommitPruned(OluoPersistError):
    """The commit's payloads were retired by ``gc`` (its manifest stays in the log).
    ``.cid`` (hex), ``.seq`` (its ``#n`` or None) and ``.when`` (the gc's time or None)."""

    def __init__(self, cid: str, seq: int | None, when: str | None) -> None:
        self.cid = cid
        self.seq = seq
        self.when = when
        name = f"#{seq} ({cid[16:28]})" if seq is not None else cid[16:28]
        at = f" at {when}" if when else ""
        super().__init__(
            f"commit {name} was pruned: gc retired its payloads{at} (gc --keep-last); "
            "its manifest, params and metrics remain in the log, but it cannot be checked "
            "out or diffed"
        )


class ParamConflict(OluoPersistError, ValueError):
    """A user param names an engine setting with another value than the engine's
    (``.name``, ``.given``, ``.actual``); nothing was written and the engine is unchanged."""

    def __init__(self, name: str, given: object, actual: object, setting: str) -> None:
        self.name = name
        self.given = given
        self.actual = actual
        super().__init__(
            f"param {name}={given!r} contradicts the engine, whose {setting} is {actual!r}: "
            "the engine's real configuration is recorded from the engine itself; drop the "
            f"param or build the engine with {setting}={given!r}"
        )


class UnknownRef(SnapshotNotFound):
    """A ref names no commit; ``.ref`` is the text, ``.candidates`` names that exist."""

    def __init__(self, ref: str, detail: str, candidates: list[str] | None = None) -> None:
        self.ref = ref
        self.candidates = list(candidates or [])
        self.cid = ref
        known = f"; known refs: {', '.join(self.candidates)}" if self.candidates else ""
        OluoPersistError.__init__(self, f"no commit named {ref!r}: {detail}{known}")


class AmbiguousRef(SnapshotNotFound):
    """A ref (an id prefix) matches several commits, listed in ``.candidates``."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.ref = ref
        self.candidates = list(candidates)
        self.cid = ref
        OluoPersistError.__init__(
            self,
            f"ref {ref!r} is ambiguous: it is a prefix of {len(candidates)} commit ids "
            f"({', '.join(candidates)}); give more characters",
        )


class RefExists(OluoPersistError, ValueError):
    """A branch or tag name is taken (``.name``); the message says how to move it."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class UnsafeObjectStore(OluoPersistError):
    """The object store a lab lives on failed the conditional-write self-test (``.reason``):
    two writers could both win the same ref, so writes are refused (nothing was written).
    Open the lab with ``single_writer=True`` if no other process ever writes to it."""

    def __init__(self, lab: str, reason: str) -> None:
        self.lab = lab
        self.reason = reason
        super().__init__(
            f"refusing to write to {lab}: {reason}, so concurrent commits could overwrite "
            "each other. Use a server that honours If-None-Match, or open the lab with "
            "single_writer=True if no other process writes to it"
        )
