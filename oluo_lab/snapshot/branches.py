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
from .errors import ManifestSerde
from .head import Head

BRANCHES_NAME = "oluo_branches.json"
BRANCHES_VERSION = 1
DEFAULT_BRANCH = "main"
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+@/-]{0,127}$")

__all__ = [
    "BRANCHES_NAME",
    "DEFAULT_BRANCH",
    "check_branch_name",
    "read_branches",
    "write_branches",
]


def check_branch_name(name: object) -> str:
    """``name`` when it is a valid branch name, else a ``ValueError`` stating the rule.

    Letters, digits and ``. _ = , + @ / -``, starting with a letter or digit, at most
    128 characters; not ``HEAD``, no ``..``, not ending in ``/`` or ``.``. The ref
    grammar's operators (``~``, ``#``, ``^``, spaces) can never occur in a name.
    """
    if (
        not isinstance(name, str)
        or not _BRANCH_RE.match(name)
        or name.upper() == "HEAD"
        or ".." in name
        or name.endswith(("/", "."))
    ):
        raise ValueError(
            f"bad branch name {name!r}: start with a letter or digit; then letters, digits "
            "and . _ = , + @ / -; at most 128 characters; not HEAD, no '..'"
        )
    return name


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
