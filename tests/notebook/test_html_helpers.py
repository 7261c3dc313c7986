"""The leaf HTML helpers: escaping, tables, details, bars, short CIDs."""

from __future__ import annotations

import re

from oluo_lab._html import (
    Raw,
    details,
    escape,
    fmt_bytes,
    fmt_num,
    kv_table,
    short_cid,
    svg_bar,
    table,
)
from oluo_lab.cas import CID


def test_escape_and_raw():
    assert escape("<a & b>") == "&lt;a &amp; b&gt;"
    assert escape(Raw("<b>x</b>")) == "<b>x</b>"
    assert escape(0.123456789) == "0.1235"
    cell = table("c<", ["h"], [["<x>"], [Raw("<i>y</i>")]])
    assert "<caption>c&lt;</caption>" in cell and "<td>&lt;x&gt;</td>" in cell
    assert "<td><i>y</i></td>" in cell
    assert (
        kv_table(None, [("k", 1)]) == "<table><tbody><tr><th>k</th><td>1</td></tr></tbody></table>"
    )
    assert details("s", "<b>") == "<details><summary>s</summary>&lt;b&gt;</details>"


def test_number_formats():
    assert fmt_num(3) == "3" and fmt_num(0.5) == "0.5" and fmt_num(123456.7) == "123457"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.50 KiB"
    assert fmt_bytes(5 * 1024**3) == "5.00 GiB"


def test_short_cid_keeps_full_hex_in_title():
    cid = CID.for_book(b"abc")
    html = short_cid(cid)
    assert html == f'<code title="{cid.hex}">{cid.short}…</code>'
    assert short_cid(cid.hex) == html  # the 80-char text form gives the same short id
    assert short_cid(None) == "—"


def test_svg_bar_widths_are_proportional_and_scaled():
    svg = svg_bar([("shared", 30, "#999"), ("new", 10, "#00f")], width=200)
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', svg)]
    assert widths == [150.0, 50.0]
    half = svg_bar([("new", 10, "#00f")], width=200, total=40)
    assert 'width="50.00"' in half and 'fill="none"' in half  # the rest is an empty frame
    assert svg_bar([("a", 1, "#000")]) == svg_bar([("a", 1, "#000")])
    assert "<title>shared: 30</title>" in svg
