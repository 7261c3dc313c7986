"""The shipped store suite (``oluo_lab.testing.store``) proves a store written elsewhere.

``SqliteStore`` below stands for a third-party backend: it uses only the public
``BookStore`` contract, and runs the same conformance suite as the package's own stores.
A store that breaks the contract must fail it, run from a directory outside this
repository; and ``import oluo_lab`` must not pull in pytest to offer the suite.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from oluo_lab.cas import CID, BookNotFound, BookStore, StoreStats
from oluo_lab.testing.store import StoreConformance

REPO = Path(__file__).resolve().parents[2]


class SqliteStore(BookStore):
    """Books as rows of one SQLite table, uncompressed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = sqlite3.connect(os.fspath(path), check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS books"
            " (cid BLOB PRIMARY KEY, data BLOB NOT NULL, written REAL NOT NULL)"
        )

    def _store(self, cid: CID, data) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO books VALUES (?, ?, ?)", (cid.raw, bytes(data), time.time())
            )

    def _load(self, cid: CID) -> bytes:
        row = self.db.execute("SELECT data FROM books WHERE cid = ?", (cid.raw,)).fetchone()
        if row is None:
            raise BookNotFound(cid)
        return row[0]

    def _has(self, cid: CID) -> bool:
        return (
            self.db.execute("SELECT 1 FROM books WHERE cid = ?", (cid.raw,)).fetchone() is not None
        )

    def _delete(self, cid: CID) -> None:
        with self.db:
            gone = self.db.execute("DELETE FROM books WHERE cid = ?", (cid.raw,)).rowcount
        if not gone:
            raise BookNotFound(cid)

    def _iter_unsorted(self) -> list[CID]:
        return [CID.from_bytes(r[0]) for r in self.db.execute("SELECT cid FROM books")]

    def _stat(self, cid: CID) -> tuple[int, float]:
        row = self.db.execute(
            "SELECT length(data), written FROM books WHERE cid = ?", (cid.raw,)
        ).fetchone()
        if row is None:
            raise BookNotFound(cid)
        return row[0], row[1]

    def stats(self) -> StoreStats:
        cids = self._iter_unsorted()
        (stored,) = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM books").fetchone()
        return StoreStats(
            books=len(cids), logical_bytes=sum(c.size for c in cids), stored_bytes=stored
        )

    def __repr__(self) -> str:
        return f"SqliteStore(books={len(self)})"


def sqlite_corrupt(store: SqliteStore, cid: CID, how: str) -> None:
    db, key = store.db, cid.raw
    (data,) = db.execute("SELECT data FROM books WHERE cid = ?", (key,)).fetchone()
    if how == "flip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x01
        data = bytes(b)
    elif how == "truncate":
        data = data[:-1]
    elif how == "swap":
        (data,) = db.execute("SELECT data FROM books WHERE cid != ? LIMIT 1", (key,)).fetchone()
    with db:
        if how == "delete":
            db.execute("DELETE FROM books WHERE cid = ?", (key,))
        else:
            db.execute("UPDATE books SET data = ? WHERE cid = ?", (data, key))


class TestSqliteStore(StoreConformance):
    def make_store(self, tmp_path):
        return SqliteStore(tmp_path / "books.sqlite")

    def corrupt(self, store, cid, how):
        sqlite_corrupt(store, cid, how)


BROKEN = textwrap.dedent(
    """
    import test_cas_store_suite as third_party

    from oluo_lab.cas import CID
    from oluo_lab.testing.store import StoreConformance


    class ForgivingDeleteStore(third_party.SqliteStore):
        # Breaks the contract: deleting an absent book must raise BookNotFound.
        def _delete(self, cid: CID) -> None:
            with self.db:
                self.db.execute("DELETE FROM books WHERE cid = ?", (cid.raw,))


    class TestForgivingDeleteStore(StoreConformance):
        def make_store(self, tmp_path):
            return ForgivingDeleteStore(tmp_path / "books.sqlite")

        def corrupt(self, store, cid, how):
            third_party.sqlite_corrupt(store, cid, how)
    """
)


def test_the_suite_fails_a_store_that_breaks_the_contract(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "test_broken_store.py").write_text(BROKEN)
    report = tmp_path / "report.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         f"--junitxml={report}", "test_broken_store.py"],
        cwd=outside, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cases = list(ET.parse(report).getroot().iter("testcase"))
    failed = sorted(c.get("name") for c in cases if c.find("failure") is not None)
    assert failed == ["test_delete"], proc.stdout
    ran = {c.get("name").split("[")[0] for c in cases}
    assert ran == {name for name in dir(StoreConformance) if name.startswith("test_")}


def test_importing_the_package_does_not_import_pytest():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import oluo_lab, oluo_lab.testing\n"
        "oluo_lab.testing.assert_recall\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))\n"
        "print(oluo_lab.testing.store.StoreConformance.__name__, 'pytest' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "StoreConformance True"]  # loaded when named
