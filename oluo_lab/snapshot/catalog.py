"""A read view of a lab's commits, and the ref grammar that names them.

Snapshot layer: reads refs (through a :class:`~oluo_lab.snapshot.refs.RefStore`) and
manifests (through a cache the Lab keeps: manifests are immutable), writes nothing.

The commits of a lab are the manifests reachable from a branch head or a tag along
``parent`` links. Each has (from the commit log) its number ``#n``, the branch it was
committed to, a time and measured timings; gc may have retired its payloads (pruned).

Refs (the same grammar in Python and on the command line, docs/FORMAT.md §3.8)::

    ref   := base ("~" [N])*          "~" alone is "~1": the first parent, N times
    base  := "HEAD"                   the head of the lab's current branch
           | "#" N                    the commit numbered N
           | branch | tag             an exact branch or tag name
           | hex                      a full 80-hex manifest CID, or a prefix (>= 4
                                      characters) of the commit id ``log`` shows (the
                                      digest hex) or of the full CID hex

Python also accepts an ``int`` (the same as ``"#n"``), a :class:`~oluo_lab.cas.CID` and a
``Snapshot``. Unknown refs raise :class:`UnknownRef` listing the branches and tags;
prefixes of several commits raise :class:`AmbiguousRef` listing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..cas import CID, ContentError
from . import refs_log
from .branches import DEFAULT_BRANCH
from .errors import AmbiguousRef, OluoPersistError, UnknownRef
from .head import Head
from .manifest import SnapshotManifest
from .refs import RefStore

__all__ = ["LabView", "commit_id", "parse_ref"]

_SUFFIX_RE = re.compile(r"~(\d*)")
_HEX_RE = re.compile(r"^[0-9a-f]{4,80}$")
_SEQ_RE = re.compile(r"^#(\d+)$")
MIN_PREFIX = 4


def commit_id(cid: CID) -> str:
    """The id ``log`` shows for a commit: the hex of its manifest's blake3 digest (the
    full CID hex without its 16-character header); ``cid.short`` is its first 12."""
    return cid.hex[16:]


def parse_ref(text: str) -> tuple[str, int]:
    """``(base, steps back)`` of a ref text; ``ValueError`` on a malformed suffix."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a ref is a non-empty string, got {text!r}")
    base, tilde, rest = text.partition("~")
    steps = 0
    if tilde:
        rest = "~" + rest
        pos = 0
        while pos < len(rest):
            m = _SUFFIX_RE.match(rest, pos)
            if m is None:
                raise ValueError(
                    f"bad ref {text!r}: after the name only '~' or '~N' may follow (N parents back)"
                )
            steps += int(m.group(1)) if m.group(1) else 1
            pos = m.end()
    if not base:
        raise ValueError(f"bad ref {text!r}: nothing before '~'")
    return base, steps


@dataclass
class LabView:
    """Refs, commit log and reachable commits of a lab at one moment."""

    branches: dict[str, Head]
    tags: dict[str, CID]
    records: list[dict]
    manifest: Callable[[CID], SnapshotManifest]
    numbered: dict[CID, refs_log.CommitRecord] = field(init=False)
    by_seq: dict[int, CID] = field(init=False)
    retired: dict[CID, str | None] = field(init=False)
    _reachable: list[CID] | None = field(default=None, init=False)

    @classmethod
    def read(cls, refs: RefStore, manifest: Callable[[CID], SnapshotManifest]) -> LabView:
        return cls(refs.branches(), refs.tags(), refs.records(), manifest)

    def __post_init__(self) -> None:
        self.numbered, _ = refs_log.commits(self.records)
        self.by_seq = {rec.seq: cid for cid, rec in self.numbered.items()}
        self.retired = refs_log.retired_times(None, self.records)

    # ------------------------------------------------------------------ walking
    def ancestry(self, cid: CID | None) -> Iterator[CID]:
        """``cid`` and its ancestors, newest first (first-parent chain)."""
        while cid is not None:
            yield cid
            cid = self.manifest(cid).parent

    def is_ancestor(self, older: CID, newer: CID) -> bool:
        """Is ``older`` ``newer`` or one of its ancestors?"""
        return any(c == older for c in self.ancestry(newer))

    def roots(self) -> list[CID]:
        """Branch heads then tagged commits (each once)."""
        out: list[CID] = []
        for cid in [h.cid for h in self.branches.values()] + list(self.tags.values()):
            if cid not in out:
                out.append(cid)
        return out

    def reachable(self) -> list[CID]:
        """Every commit reachable from a branch or tag, newest first: by number; a
        commit the log does not number (its record was lost) sorts just after the newest
        numbered commit of its own history, children before parents."""
        if self._reachable is None:
            order: dict[CID, tuple[int, int]] = {}
            for root in self.roots():
                chain = []
                for cid in self.ancestry(root):
                    if cid in order:
                        break
                    chain.append(cid)
                below = order.get(self.manifest(chain[-1]).parent) if chain else None
                seq, depth = below if below is not None else (0, 0)
                for cid in reversed(chain):
                    depth += 1
                    seq = self.seq_of(cid) or seq
                    order[cid] = (seq, depth)
            self._reachable = sorted(order, key=lambda c: (-order[c][0], -order[c][1]))
        return self._reachable

    def seq_of(self, cid: CID) -> int | None:
        rec = self.numbered.get(cid)
        return None if rec is None else rec.seq

    def label(self, cid: CID) -> str:
        """``#n`` when the commit is numbered, else its short id."""
        seq = self.seq_of(cid)
        return f"#{seq}" if seq is not None else cid.short

    def branches_at(self, cid: CID) -> list[str]:
        return [name for name, head in self.branches.items() if head.cid == cid]

    def tags_at(self, cid: CID) -> list[str]:
        return [name for name, c in self.tags.items() if c == cid]

    # ------------------------------------------------------------------ refs
    def resolve(
        self, ref: str | int | CID, current: str = DEFAULT_BRANCH
    ) -> tuple[CID, str | None]:
        """The commit ``ref`` names and, when it names a branch head by the branch's
        name (or ``HEAD``), that branch."""
        if isinstance(ref, CID):
            self.manifest(ref)  # SnapshotNotFound naming it when absent
            return ref, None
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise TypeError(f"a ref is a str, an int or a CID, not {type(ref).__name__}")
        if isinstance(ref, int):
            ref = f"#{ref}"
        base, steps = parse_ref(ref)
        cid, branch = self._base(base, current, ref)
        if steps:
            chain = self.ancestry(cid)
            walked = [c for _, c in zip(range(steps + 1), chain, strict=False)]
            if len(walked) <= steps:
                raise UnknownRef(
                    ref, f"{base} has only {len(walked) - 1} commit(s) before it", self._names()
                )
            return walked[steps], None
        return cid, branch

    def _present(self, cid: CID) -> bool:
        """Is the commit's manifest readable (reachable or not)?"""
        try:
            self.manifest(cid)
        except (OluoPersistError, ContentError):
            return False
        return True

    def _names(self) -> list[str]:
        names = list(self.branches) + [t for t in self.tags if t not in self.branches]
        shown = names[:12]
        if len(names) > len(shown):
            shown.append(f"... {len(names) - len(shown)} more")
        return shown

    def _base(self, base: str, current: str, ref: str) -> tuple[CID, str | None]:
        if base.upper() == "HEAD":
            head = self.branches.get(current)
            if head is None:
                raise UnknownRef(ref, f"branch {current!r} has no commits yet", self._names())
            return head.cid, current
        m = _SEQ_RE.match(base)
        if m:
            seq = int(m.group(1))
            cid = self.by_seq.get(seq)
            if cid is None:
                last = max(self.by_seq, default=0)
                raise UnknownRef(ref, f"no commit #{seq} (the newest is #{last})")
            if cid not in self.reachable() and not self._present(cid):
                raise UnknownRef(
                    ref,
                    f"commit #{seq} is gone: it is on no branch or tag (its branch was "
                    "deleted and gc collected it, or the commit never completed)",
                )
            return cid, None
        if base in self.branches:
            return self.branches[base].cid, base
        if base in self.tags:
            return self.tags[base], None
        text = base.lower()
        if len(text) == 80 and _HEX_RE.match(text):
            cid = CID.parse(text)
            self.manifest(cid)
            return cid, None
        if _HEX_RE.match(text):
            known = list(self.reachable())
            seen = set(known)
            known += [c for c in self.numbered if c not in seen]
            hits = [
                c
                for c in known
                if (commit_id(c).startswith(text) or c.hex.startswith(text)) and self._present(c)
            ]
            if len(hits) == 1:
                return hits[0], None
            if len(hits) > 1:
                raise AmbiguousRef(ref, [f"{self.label(c)} {commit_id(c)[:16]}" for c in hits])
        hint = " (commit numbers are written #n)" if base.isdigit() else ""
        raise UnknownRef(
            ref, f"no branch, tag, #number or commit id by that name{hint}", self._names()
        )
