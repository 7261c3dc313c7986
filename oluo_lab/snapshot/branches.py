"""The branches file ``oluo_branches.json``: the heads of every branch but ``main``.

Snapshot layer (a data-directory file; docs/FORMAT.md §3.1, §3.6). This module is the one
reader and writer of the file and owns the branch-name rule. The default branch
``main`` is not in it: its head is the head file ``oluo_head.json`` (:mod:`.head`), so
``persist_snapshot`` / ``load_snapshot`` keep their contract. The file is
``{"branches": {name: {"generation": g, "head": manifest-hex}}, "version": 1}`` with
sorted keys, replaced atomically; callers that read, change and write it hold
``data_dir_lock`` across the three steps (:class:`~oluo_lab.snapshot.refs.LocalRefs`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .._faults import fault_point
from ..cas import CID
from .durable import read_table, write_table
from .errors import BadRefName, ManifestSerde, RefExists
from .head import Head

BRANCHES_NAME = "oluo_branches.json"
BRANCHES_VERSION = 1
DEFAULT_BRANCH = "main"
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+@/-]{0,127}$")

__all__ = [
    "BRANCHES_NAME",
    "DEFAULT_BRANCH",
    "check_branch_name",
    "check_ref_name",
    "check_unique_name",
    "read_branches",
    "write_branches",
]


#: names no ref may have, whatever their case (``HEAD`` is the ref grammar's own)
RESERVED_NAMES = frozenset({"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD"})


def check_ref_name(kind: str, name: object, pattern: re.Pattern[str], chars: str) -> str:
    """``name`` when it is a valid ``kind`` (branch or tag) name, else :class:`BadRefName`
    naming the rule it breaks. Besides ``pattern`` (which ``chars`` describes), the rules
    of ``git check-ref-format`` that can still apply: no empty component (``//``), no
    component starting with ``.`` or ending in ``.lock``, no ``..``, no ``@{``, not
    ending in ``/`` or ``.``, and not a reserved name. A name is never a path: it cannot
    start with ``/`` or ``-``, or hold a control character, a space or ``\\``."""
    if not isinstance(name, str):
        raise BadRefName(kind, name, f"a {kind} name is a str, not {type(name).__name__}")
    if not name:
        raise BadRefName(kind, name, "empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadRefName(kind, name, "control characters are not allowed")
    if not pattern.match(name):
        raise BadRefName(kind, name, chars)
    parts = name.split("/")
    if name.endswith(("/", ".")) or "" in parts:
        raise BadRefName(kind, name, "no empty component ('//'), not ending in '/' or '.'")
    if ".." in name or "@{" in name:
        raise BadRefName(kind, name, "no '..' and no '@{'")
    if any(p.startswith(".") or p.endswith(".lock") for p in parts):
        raise BadRefName(kind, name, "no component starting with '.' or ending in '.lock'")
    if name.upper() in RESERVED_NAMES or name == "@":
        raise BadRefName(kind, name, f"reserved ({', '.join(sorted(RESERVED_NAMES))}, '@')")
    return name


def check_branch_name(name: object) -> str:
    """``name`` when it is a valid branch name, else :class:`BadRefName` (a ``ValueError``)
    stating the rule.

    Letters, digits and ``. _ = , + @ / -``, starting with a letter or digit, at most
    128 characters; and the rules of :func:`check_ref_name`. The ref grammar's operators
    (``~``, ``#``, ``^``, spaces) can never occur in a name.
    """
    return check_ref_name(
        "branch",
        name,
        _BRANCH_RE,
        "start with a letter or digit; then letters, digits and . _ = , + @ / -; "
        "at most 128 characters",
    )


def check_unique_name(kind: str, name: str, taken: dict[str, str]) -> None:
    """Refuse a new ``kind`` name that differs only in case from a taken one (``taken``:
    name -> what it is, ``"branch"`` or ``"tag"``): on a case-insensitive filesystem or
    object store the two would address the same thing. :class:`RefExists` names it."""
    folded = name.casefold()
    for other, what in sorted(taken.items()):
        if other != name and other.casefold() == folded:
            raise RefExists(
                name,
                f"{kind} name {name!r} differs only in case from the {what} {other!r}; "
                "on a case-insensitive filesystem they would collide: choose another name",
            )


def read_branches(data_dir: Path | str) -> dict[str, Head]:
    """name -> head of every branch in the file (not ``main``), sorted by name; ``{}``
    when there is no file. A damaged file is :class:`ManifestSerde` naming it (gc must
    not sweep without knowing every branch); an unreadable one :class:`PersistIOError`."""
    path = Path(data_dir) / BRANCHES_NAME
    table = read_table(path, "branches", BRANCHES_VERSION)
    out: dict[str, Head] = {}
    for name, ref in sorted((table or {}).items()):
        try:
            generation = ref["generation"]
            if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
                raise ValueError(f"generation {generation!r}")
            out[str(name)] = Head(CID.parse(ref["head"]), generation)
        except (ValueError, TypeError, KeyError) as exc:
            raise ManifestSerde(f"{path}: bad head of branch {name!r} ({exc})") from exc
    return out


def write_branches(data_dir: Path | str, branches: Mapping[str, Head]) -> None:
    """Replace the branches file with ``branches``, atomically and durably."""
    table = {
        name: {"generation": head.generation, "head": head.cid.hex}
        for name, head in sorted(branches.items())
    }
    write_table(Path(data_dir) / BRANCHES_NAME, "branches", table, BRANCHES_VERSION)
    fault_point("refs.branches_written")
