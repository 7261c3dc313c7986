"""The tags file ``oluo_tags.json``: named checkpoints (tags double as gc pins).

Snapshot layer (a data-directory file; docs/FORMAT.md 3.1). This module is the one
reader and writer of the file and owns the tag-name rule. The file is
``{"tags": {name: manifest-hex}, "version": 1}``, replaced atomically; callers that
read, change and write it hold ``data_dir_lock`` across the three steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from .._faults import fault_point
from ..cas import CID
from .durable import atomic_write
from .errors import ManifestSerde, PersistIOError

TAGS_NAME = "oluo_tags.json"
TAGS_VERSION = 1
_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

__all__ = ["TAGS_NAME", "TAGS_VERSION", "check_tag_name", "read_tags", "write_tags"]


def check_tag_name(name: object) -> None:
    """Refuse a tag name outside the rule with a ``ValueError`` that states the rule."""
    if not isinstance(name, str) or not _TAG_RE.match(name) or name.upper() == "HEAD":
        raise ValueError(
            f"bad tag name {name!r}: start with a letter; letters, digits, '.', '_', '-'; "
            "at most 64 characters; not HEAD"
        )


def read_tags(data_dir: Path | str) -> dict[str, CID]:
    """name -> manifest CID, sorted by name; ``{}`` when there is no tags file.

    A damaged file is :class:`ManifestSerde` naming it (never silently empty: gc must
    not sweep without knowing the pins); an unreadable one is :class:`PersistIOError`."""
    path = Path(data_dir) / TAGS_NAME
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ManifestSerde(f"{path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise PersistIOError(f"cannot read {path}", exc) from exc
    if (
        not isinstance(doc, dict)
        or doc.get("version") != TAGS_VERSION
        or not isinstance(doc.get("tags"), dict)
    ):
        raise ManifestSerde(f"{path}: expected {{'version': 1, 'tags': {{...}}}}")
    try:
        return {str(k): CID.parse(v) for k, v in sorted(doc["tags"].items())}
    except (ValueError, TypeError) as exc:
        raise ManifestSerde(f"{path}: bad tag target ({exc})") from exc


def write_tags(data_dir: Path | str, tags: Mapping[str, CID]) -> None:
    """Replace the tags file with ``tags``, atomically and durably."""
    doc = {"tags": {k: v.hex for k, v in sorted(tags.items())}, "version": TAGS_VERSION}
    atomic_write(
        Path(data_dir) / TAGS_NAME, (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    )
    fault_point("lab.tags_written")
