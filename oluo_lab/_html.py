"""Small pure functions that build the HTML reprs of every oluo_lab object.

A leaf module (standard library only) that any layer may import. The output is
meant to read well where CSS is stripped (GitHub's notebook viewer): semantic
``<table>``s with captions, ``<details>`` for long parts, inline SVG with
attribute styling (no ``style`` blocks) for small charts, and always the numbers
as text beside a chart. Everything is byte-deterministic: no ids, no times,
floats formatted with fixed precision.
"""

from __future__ import annotations

import html as _std_html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "CELL_CHARS",
    "COLORS",
    "Raw",
    "byte_unit",
    "details",
    "escape",
    "fmt_bytes",
    "fmt_num",
    "kv_table",
    "short_cid",
    "shorten",
    "shortened_cell",
    "svg_bar",
    "table",
]

#: Fill colours of the stacked bars: shared (reused) bytes, new bytes, removed bytes.
COLORS = {"shared": "#9e9e9e", "new": "#1f77b4", "removed": "#d62728", "other": "#ff7f0e"}


class Raw(str):
    """A string that is already HTML: table cells and bodies insert it verbatim."""

    __slots__ = ()


def escape(value: Any) -> str:
    """HTML-escaped text of ``value`` (a :class:`Raw` passes through unchanged)."""
    if isinstance(value, Raw):
        return str(value)
    return _std_html.escape(fmt_num(value) if isinstance(value, float) else str(value))


def fmt_num(value: Any, digits: int = 4) -> str:
    """Deterministic text for a number: ints as is, floats with ``digits`` significant digits."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def byte_unit(n: float) -> tuple[str, int]:
    """The binary unit :func:`fmt_bytes` writes ``n`` bytes in, and its size in bytes:
    ``("B", 1)`` below 1 KiB, else the largest of KiB..TiB that keeps the value >= 1."""
    scale, unit = 1, "B"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if abs(n) < scale * 1024:
            break
        scale, unit = scale * 1024, name
    return unit, scale


def fmt_bytes(n: int) -> str:
    """Bytes for humans, binary units, fixed precision: ``"1.50 MiB"``; ``"512 B"``.
    The one way every display and text repr of oluo_lab writes a size (exact byte counts
    stay in DataFrames and JSON)."""
    n = int(n)
    unit, scale = byte_unit(n)
    return f"{n} B" if scale == 1 else f"{n / scale:.2f} {unit}"


#: Longest text a table cell shows before it is shortened: pandas' default
#: ``display.max_colwidth``, so a table here and a DataFrame shown beside it cut alike.
CELL_CHARS = 50

#: Longest text kept in a shortened cell's ``title`` (its hover text).
TITLE_CHARS = 1000


def shorten(text: str, width: int | None = CELL_CHARS) -> str:
    """``text`` as pandas shows a cell in a DataFrame's HTML under ``display.max_colwidth
    = width``: a value of ``width`` characters or more becomes its first ``width - 4``
    and ``"..."`` (pandas pads the cell with a space, then cuts it to ``width``).
    ``width=None`` keeps the text whole."""
    if width is None or len(text) < width:
        return text
    return text[: max(width - 4, 0)] + "..."


def shortened_cell(value: Any, width: int | None = CELL_CHARS) -> Any:
    """A table cell for ``value`` that never grows wider than ``width`` characters: the
    text as :func:`shorten` cuts it, with the whole text (up to ``TITLE_CHARS``) as the
    hover ``title``. Short values pass through unchanged."""
    text = fmt_num(value) if isinstance(value, float) else str(value)
    short = shorten(text, width)
    if short == text:
        return value
    return Raw(f'<span title="{escape(text[:TITLE_CHARS])}">{escape(short)}</span>')


def short_cid(cid: Any, full: bool = True) -> Raw:
    """A CID shown short (12 hex digits of its digest) with the full hex in ``title``.

    ``cid`` is anything with ``.short`` and ``.hex`` (a CID) or an 80-character hex
    string (its digest starts at character 16); None renders as an em dash.
    """
    if cid is None:
        return Raw("—")
    if hasattr(cid, "short") and hasattr(cid, "hex"):
        short, hx = str(cid.short), str(cid.hex)
    else:
        hx = str(cid)
        short = hx[16:28] if len(hx) == 80 else hx[:12]
    if not full:
        return Raw(f"<code>{escape(short)}…</code>")
    return Raw(f'<code title="{escape(hx)}">{escape(short)}…</code>')


def _cells(tag: str, row: Iterable[Any]) -> str:
    return "".join(f"<{tag}>{escape(c)}</{tag}>" for c in row)


def table(
    caption: str | None,
    header: Sequence[Any] | None,
    rows: Iterable[Sequence[Any]],
    *,
    row_headers: bool = False,
) -> Raw:
    """A plain ``<table>``: optional caption, a header row, body rows (cells escaped
    unless :class:`Raw`). With ``row_headers`` the first cell of each row is a ``<th>``."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    if header:
        out.append(f"<thead><tr>{_cells('th', header)}</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        row = list(row)
        if row_headers and row:
            out.append(f"<tr><th>{escape(row[0])}</th>{_cells('td', row[1:])}</tr>")
        else:
            out.append(f"<tr>{_cells('td', row)}</tr>")
    out.append("</tbody></table>")
    return Raw("".join(out))


def kv_table(caption: str | None, pairs: Iterable[tuple[Any, Any]]) -> Raw:
    """A two-column table of ``name: value`` rows, names as row headers."""
    return table(caption, None, ([k, v] for k, v in pairs), row_headers=True)


def details(summary: str, body: str, open: bool = False) -> Raw:  # noqa: A002 - HTML name
    """A collapsible ``<details>`` block (``summary`` is text, ``body`` HTML or text)."""
    attr = " open" if open else ""
    return Raw(f"<details{attr}><summary>{escape(summary)}</summary>{escape(body)}</details>")


def svg_bar(
    parts: Sequence[tuple[str, float, str]],
    width: int = 240,
    height: int = 14,
    total: float | None = None,
    fmt: Callable[[Any], str] = fmt_num,
) -> Raw:
    """A stacked horizontal bar: ``parts`` are ``(label, value, colour)`` left to right.

    ``total`` sets the full width's value (default: the sum), so bars of several rows
    can share one scale. Each segment carries a ``<title>`` (its label and value) and
    the whole bar an ``aria-label`` (values written with ``fmt``); callers still print
    the numbers as text beside it.
    """
    values = [max(0.0, float(v)) for _, v, _ in parts]
    scale_total = float(total) if total else sum(values)
    label = ", ".join(f"{name} {fmt(v)}" for (name, _, _), v in zip(parts, values, strict=True))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    ]
    x = 0.0
    for (name, _, colour), v in zip(parts, values, strict=True):
        w = width * v / scale_total if scale_total > 0 else 0.0
        if w <= 0:
            continue
        out.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{escape(colour)}">'
            f"<title>{escape(name)}: {escape(fmt(v))}</title></rect>"
        )
        x += w
    if x < width:
        out.append(
            f'<rect x="{x:.2f}" y="0" width="{width - x:.2f}" height="{height}" '
            'fill="none" stroke="#cccccc" stroke-width="0.5"/>'
        )
    out.append("</svg>")
    return Raw("".join(out))
