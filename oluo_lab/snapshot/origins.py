"""Which commit an engine object came from: the lineage a commit's parent is taken from.

Snapshot layer. ``Lab.checkout``, ``Lab.commit`` and ``load_snapshot`` note, for the
engine object they return or commit, the lab directory (or URL), the commit (manifest CID) whose
state the engine holds or descends from, and the branch it was taken from (None when
it was checked out by a ref that is not a branch name). The next ``Lab.commit`` of that
engine takes that commit as its parent, so an engine restored from any commit is
committed with its true parent, and an engine of no commit of the lab (a fresh build)
has none. The note lives beside the engine (a weak mapping: nothing is added to the
engine object, and it goes away with the engine).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cas import CID

__all__ = ["Origin", "origin_of", "remember"]


@dataclass(frozen=True)
class Origin:
    """The commit an engine holds (or descends from) in one lab."""

    lab: str  # the lab directory, resolved (or the lab's URL)
    cid: CID
    branch: str | None


_ORIGINS: weakref.WeakKeyDictionary[Any, Origin] = weakref.WeakKeyDictionary()


def _key(lab_dir: Path | str) -> str:
    text = str(lab_dir)
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")  # a lab on an object store: its URL
    return os.path.realpath(text[len("file://") :] if text.startswith("file://") else lab_dir)


def remember(engine: Any, lab_dir: Path | str, cid: CID, branch: str | None) -> None:
    """Note that ``engine`` holds the state of commit ``cid`` of the lab at ``lab_dir``."""
    _ORIGINS[engine] = Origin(_key(lab_dir), cid, branch)


def origin_of(engine: Any, lab_dir: Path | str) -> Origin | None:
    """The commit of the lab at ``lab_dir`` that ``engine`` descends from, or None (an
    engine built from scratch, or one that came from another lab)."""
    origin = _ORIGINS.get(engine)
    if origin is None or origin.lab != _key(lab_dir):
        return None
    return origin
