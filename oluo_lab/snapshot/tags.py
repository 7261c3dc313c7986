"""The tags file ``oluo_tags.json``: named checkpoints (tags double as gc pins).

Snapshot layer (a data-directory file; docs/FORMAT.md §3.1). This module is the one
reader and writer of the file and owns the tag-name rule. The file is
``{"tags": {name: manifest-hex}, "version": 1}``, replaced atomically; callers that
read, change and write it hold ``data_dir_lock`` across the three steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .._faults import fault_point
from ..cas import CID
from .branches import check_ref_name
from .durable import read_table, write_table
from .errors import ManifestSerde

#: format (docs/FORMAT.md §3.1): the tags file's name in a data directory.
TAGS_NAME = "oluo_tags.json"
#: format (docs/FORMAT.md §3.1): the tags file version written and the only one read.
TAGS_VERSION = 1
#: format (docs/FORMAT.md §3.1): the names a tag may have (besides never ``HEAD``).
_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

__all__ = ["TAGS_NAME", "TAGS_VERSION", "check_tag_name", "read_tags", "write_tags"]


def check_tag_name(name: object) -> None:
    """Refuse a tag name outside the rule with :class:`BadRefName` (a ``ValueError``) that
    states the rule: a letter, then letters, digits, ``.``, ``_``, ``-``, at most 64
    characters, and the rules of :func:`~oluo_lab.snapshot.branches.check_ref_name`."""
    check_ref_name(
        "tag",
        name,
        _TAG_RE,
        "start with a letter; letters, digits, '.', '_', '-'; at most 64 characters",
    )


def read_tags(data_dir: Path | str) -> dict[str, CID]:
    """name -> manifest CID, sorted by name; ``{}`` when there is no tags file.

    A damaged file is :class:`ManifestSerde` naming it (never silently empty: gc must
    not sweep without knowing the pins); an unreadable one is :class:`PersistIOError`."""
    path = Path(data_dir) / TAGS_NAME
    table = read_table(path, "tags", TAGS_VERSION)
    if table is None:
        return {}
    try:
        return {str(k): CID.parse(v) for k, v in sorted(table.items())}
    except (ValueError, TypeError) as exc:
        raise ManifestSerde(f"{path}: bad tag target ({exc})") from exc


def write_tags(data_dir: Path | str, tags: Mapping[str, CID]) -> None:
    """Replace the tags file with ``tags``, atomically and durably."""
    table = {k: v.hex for k, v in sorted(tags.items())}
    write_table(Path(data_dir) / TAGS_NAME, "tags", table, TAGS_VERSION)
    fault_point("lab.tags_written")
