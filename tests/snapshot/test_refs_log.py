"""The refs log's one reader and writer: tolerant parsing, record schema, helpers."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from oluo_lab.cas import CID
from oluo_lab.snapshot import PersistIOError, refs_log
from oluo_lab.snapshot.refs_log import REFS_LOG_NAME

A, B, C = (CID.for_book(bytes([i]) * 10) for i in range(3))


def _write(d, lines: list[bytes]) -> None:
    (d / REFS_LOG_NAME).write_bytes(b"".join(lines))


def _line(rec: dict) -> bytes:
    return (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode()


def test_records_skips_bad_lines_and_a_torn_last_line(tmp_path):
    good = [
        {"op": "persist", "generation": 1, "head": A.hex, "parent": None, "time": "t1"},
        {"op": "gc-retire", "retired": [A.hex], "time": "t2"},
        {"op": "repair", "generation": 1, "head": A.hex, "parent": None, "time": "t3"},
    ]
    torn = _line({"op": "persist", "generation": 2, "head": B.hex, "parent": A.hex})[:-20]
    _write(
        tmp_path,
        [
            _line(good[0]),
            b"not json at all\n",
            b"[1, 2, 3]\n",  # JSON, but not a record
            b'"a string"\n',
            b"\xff\xfe\x00 undecodable bytes\n",
            _line(good[1]),
            b"\n",
            _line(good[2]),
            torn,  # a crash mid-append: no newline, cut mid-record
        ],
    )
    assert refs_log.records(tmp_path) == good


def test_a_missing_log_is_empty_and_an_unreadable_one_is_a_typed_error(tmp_path):
    assert refs_log.records(tmp_path) == []
    assert refs_log.heads_for(tmp_path, 1) == []
    assert refs_log.retired(tmp_path) == set()
    with pytest.raises(PersistIOError, match=REFS_LOG_NAME):
        refs_log.records(tmp_path, missing_ok=False)
    (tmp_path / REFS_LOG_NAME).mkdir()  # exists, but cannot be read as a file
    with pytest.raises(PersistIOError, match=REFS_LOG_NAME):
        refs_log.records(tmp_path)
    assert refs_log.retired(tmp_path) == set()  # gc and verify still run


def test_append_writes_one_sorted_compact_line_per_record(tmp_path):
    refs_log.record_head_move(tmp_path, "persist", A, 1, None)
    refs_log.record_head_move(tmp_path, "persist", B, 2, A)
    refs_log.record_retired(tmp_path, [A])
    lines = (tmp_path / REFS_LOG_NAME).read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    recs = [json.loads(line) for line in lines]
    assert [_line(r) for r in recs] == lines  # sorted keys, no spaces, one newline
    assert recs[0] == {
        "op": "persist",
        "generation": 1,
        "head": A.hex,
        "parent": None,
        "time": recs[0]["time"],
    }
    assert recs[1]["parent"] == A.hex
    assert recs[2] == {"op": "gc-retire", "retired": [A.hex], "time": recs[2]["time"]}
    stamp = dt.datetime.fromisoformat(recs[0]["time"])
    assert stamp.utcoffset() == dt.timedelta(0) and stamp.microsecond == 0
    assert refs_log.records(tmp_path) == recs


def test_heads_for_is_newest_first_and_skips_malformed_head_moves(tmp_path):
    _write(
        tmp_path,
        [
            _line({"op": "persist", "generation": 1, "head": A.hex}),
            _line({"op": "persist", "generation": 2, "head": B.hex}),
            _line({"op": "repair", "generation": 1, "head": C.hex}),
            _line({"op": "persist", "generation": True, "head": B.hex}),  # bool is no generation
            _line({"op": "persist", "generation": "1", "head": B.hex}),
            _line({"op": "persist", "generation": 1, "head": "zz"}),
            _line({"op": "persist", "generation": 1}),
            _line({"op": "gc-retire", "retired": [B.hex]}),
        ],
    )
    assert refs_log.heads_for(tmp_path, 1) == [C, A]
    assert refs_log.heads_for(tmp_path, 2) == [B]
    assert refs_log.heads_for(tmp_path, 3) == []
    assert refs_log.head_moves(tmp_path) == [(1, A), (2, B), (1, C)]


def test_retired_unions_gc_records_and_keeps_entries_before_a_bad_one(tmp_path):
    _write(
        tmp_path,
        [
            _line({"op": "persist", "generation": 1, "head": C.hex}),
            _line({"op": "gc-retire", "retired": [A.hex]}),
            _line({"op": "gc-retire", "retired": [B.hex, "not a cid", C.hex]}),
            _line({"op": "gc-retire", "retired": C.hex}),  # not a list
        ],
    )
    assert refs_log.retired(tmp_path) == {A, B}


def test_a_record_appended_after_a_torn_line_is_readable(tmp_path):
    first = {"op": "persist", "generation": 1, "head": A.hex, "parent": None, "time": "t1"}
    torn = _line({"op": "persist", "generation": 2, "head": B.hex})[:-20]
    _write(tmp_path, [_line(first), torn])
    refs_log.record_head_move(tmp_path, "repair", A, 1, None)
    recs = refs_log.records(tmp_path)
    assert [r["op"] for r in recs] == ["persist", "repair"]
    assert refs_log.heads_for(tmp_path, 1) == [A, A]
    raw = (tmp_path / REFS_LOG_NAME).read_bytes()
    assert raw.startswith(_line(first) + torn + b"\n") and raw.endswith(b"\n")
    refs_log.record_retired(tmp_path, [B])  # after a whole line: no blank line inserted
    assert b"\n\n" not in (tmp_path / REFS_LOG_NAME).read_bytes()
