"""The head file ``oluo_head.json``: which manifest is the current generation.

Snapshot layer (a data-directory file; docs/FORMAT.md §3.4). This module is the one
reader and the one writer of the head file: a persist moves the head through
:func:`write_head` as its last step, and ``Lab.repair_head`` does the same to recover.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import _io
from ..cas import CID
from .durable import atomic_write
from .errors import ManifestSerde, PersistIOError, UnsupportedVersion

#: format (docs/FORMAT.md §3.1): the head file's name in a data directory.
HEAD_NAME = "oluo_head.json"
#: format (docs/FORMAT.md §3.4): the head file version written and the only one read.
HEAD_VERSION = 1

__all__ = ["HEAD_NAME", "HEAD_VERSION", "Head", "read_head", "write_head"]


@dataclass(frozen=True)
class Head:
    """The decoded head file."""

    cid: CID
    generation: int

    def to_bytes(self) -> bytes:
        doc = {"generation": self.generation, "head": self.cid.hex, "version": HEAD_VERSION}
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def read_head(data_dir: Path | str) -> Head | None:
    """Read and validate ``oluo_head.json``; ``None`` when there is none (a fresh start)."""
    path = Path(data_dir) / HEAD_NAME
    try:
        raw = _io.read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PersistIOError(f"cannot read {HEAD_NAME}", exc) from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestSerde(
            f"{path} is not valid JSON ({exc}); recover with Lab(...).repair_head()"
        ) from exc
    if not isinstance(doc, dict):
        raise ManifestSerde(f"{path}: expected a JSON object, got {type(doc).__name__}")
    if "version" not in doc:
        raise ManifestSerde(f"{path}: no 'version' field")
    if doc["version"] != HEAD_VERSION:
        raise UnsupportedVersion(doc["version"], "head", (HEAD_VERSION,))
    text = doc.get("head")
    if not isinstance(text, str):
        raise ManifestSerde(f"{path}: 'head' must be a CID string")
    try:
        cid = CID.parse(text)
    except ValueError as exc:
        raise ManifestSerde(f"{path}: 'head' is not a valid CID: {exc}") from exc
    generation = doc.get("generation")
    if generation is None:
        generation = -1  # a head without a generation: learnt from the manifest
    elif not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ManifestSerde(f"{path}: 'generation' must be a non-negative int, got {generation!r}")
    return Head(cid, generation)


def write_head(data_dir: Path | str, head: Head) -> None:
    """Point the head file at ``head``, atomically and durably (hold ``data_dir_lock``).

    Raises :class:`PersistIOError` on failure; the previous head file is then untouched.
    """
    atomic_write(Path(data_dir) / HEAD_NAME, head.to_bytes())
