"""Every docs/FORMAT.md section the code cites exists (the doc's numbering moves)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sections() -> set[str]:
    found = set()
    for line in (ROOT / "docs" / "FORMAT.md").read_text().splitlines():
        m = re.match(r"#{2,3} (?:Appendix )?([0-9A-Z]+(?:\.[0-9]+)?)[.:]? ", line)
        if m:
            found.add(m.group(1))
    return found


def test_every_cited_format_section_exists():
    sections = _sections()
    assert {"1", "1.3", "3.3", "4.1", "A", "B.1"} <= sections  # the parser reads the doc
    cited = {}
    for path in sorted((ROOT / "oluo_lab").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"FORMAT\.md (?:section )?[0-9]", text), f"{path}: write §n"
        for ref in re.findall(r"FORMAT\.md §([0-9]+(?:\.[0-9]+)?)", text):
            cited.setdefault(ref, path.relative_to(ROOT))
        for ref in re.findall(r"FORMAT\.md[^.\n]*?Appendix ([A-Z](?:\.[0-9]+)?)", text):
            cited.setdefault(ref, path.relative_to(ROOT))
    assert len(cited) >= 8
    missing = {ref: str(where) for ref, where in cited.items() if ref not in sections}
    assert missing == {}
