"""The root of every exception oluo_lab raises, and the map of the tree under it.

A leaf module (it imports nothing of the package), so every layer derives its errors
from :class:`OluoError` without an import cycle. ``except oluo_lab.OluoError`` catches
anything the package raises on purpose; a builtin exception (``TypeError`` for a wrong
argument type, ``OSError`` from a path the caller gave) means a caller mistake the
package did not wrap.

Hierarchy (builtin second bases in brackets: such an error is also caught by the
builtin its caller may expect)::

    OluoError                           root (oluo_lab.OluoError)
    ├── ContentError                    oluo_lab.cas: store and DAG; .cid: CID | None
    │   ├── MalformedCID [ValueError]   text or bytes that are not a CID
    │   ├── BookNotFound
    │   ├── CorruptBook
    │   ├── BookTooLarge
    │   ├── MalformedBundle
    │   ├── DagDepthExceeded
    │   ├── DagSizeMismatch
    │   ├── UnsupportedChunker
    │   ├── StoreIOError [OSError]      an OS or object-store failure on a store file (.op, .name)
    │   └── CorruptStoreFile            a pack, trailer, index or marker that fails its checks
    ├── EngineErrorBase                 oluo_lab.engine (also oluo_lab.OluoEngineError)
    │   ├── EngineInputError [ValueError]   bad input; the engine state is unchanged
    │   │   ├── DimensionMismatch
    │   │   ├── InvalidVector
    │   │   ├── InvalidK
    │   │   ├── DuplicateIds
    │   │   ├── UnknownMetric
    │   │   ├── UnencodableMetadata
    │   │   ├── UnknownId [KeyError]
    │   │   └── InvalidEvent
    │   ├── EngineRestoreFailed
    │   │   └── SnapshotDecodeError
    │   ├── CompactCompleteFailed
    │   └── CompactionFailed
    ├── OluoPersistError                oluo_lab.snapshot: snapshots, labs, data directories
    │   ├── ManifestSerde
    │   ├── MetadataDeserialize
    │   ├── EngineRestoreError
    │   ├── UnsupportedVersion
    │   ├── SnapshotNotFound            .cid: the text that named the snapshot
    │   │   ├── UnknownRef              a ref naming no commit (.candidates)
    │   │   └── AmbiguousRef            an id prefix of several commits (.candidates)
    │   ├── HeadRegression
    │   │   └── HeadMoved               a commit would make a branch lose commits
    │   ├── NotALab                     a path opened as a lab is not one
    │   ├── CommitPruned                gc retired the commit's payloads
    │   ├── ParamConflict [ValueError]  a param contradicts the engine's setting
    │   ├── RefExists [ValueError]      a branch or tag name is taken
    │   ├── BadRefName [ValueError]     a branch or tag name outside the rules (.rule)
    │   ├── IndexCodecError             .cid: CID | None
    │   ├── UnsafeObjectStore           the object store ignores conditional writes
    │   └── PersistIOError              wraps the OSError (.cause)
    │       ├── LockTimeout
    │       └── ReadOnlyLab             a write asked of a lab this process cannot write
    ├── DatasetChecksumError            oluo_lab.datasets
    ├── ReportError [RuntimeError]      oluo_lab.report
    └── MissingAnswersError [ValueError]    oluo_lab.bench (ann-benchmarks export)

Not an exception: ``oluo_lab.EngineError`` is the engine's error *action*, the dataclass
``OluoEngine.handle`` returns in place of raising (its ``.error`` holds the
``EngineErrorBase`` instance). ``except oluo_lab.EngineError:`` therefore catches
nothing (Python raises ``TypeError`` when an exception is matched against it); catch
``oluo_lab.OluoEngineError`` for engine failures.

``.cid``: an error about a stored object names it. Where the object is known by its CID
(a book, a DAG root, an index record) ``.cid`` is that :class:`~oluo_lab.cas.CID` (or
``None`` when there is none to name). :class:`SnapshotNotFound` is raised for a name that
resolves to nothing as often as for a missing manifest (``"HEAD"`` of an empty lab, an
unknown tag, ``"#7"``), so its ``.cid`` is the text that named the snapshot: the
manifest's hex CID when the manifest is missing.
"""

from __future__ import annotations

__all__ = ["OluoError"]


class OluoError(Exception):
    """Root of every exception the package raises (the tree is in :mod:`oluo_lab.errors`)."""
