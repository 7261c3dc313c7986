"""Result objects of ``Lab.diff``, ``Lab.verify`` and ``Lab.gc``.

Each is a frozen dataclass with a short deterministic ``__repr__``, a
``to_frame()`` for pandas users and a plain-HTML ``_repr_html_`` (no CSS, no
paths, no times), so notebook output is byte-reproducible.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GcReport", "ManifestDiff", "Problem", "SemanticDiff", "VerifyReport"]


def _table(caption: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


@dataclass(frozen=True)
class Problem:
    """One finding of ``verify``: what is wrong, and the CID or file it concerns."""

    severity: str  # "error" or "warning"
    kind: str
    where: str  # CID hex or file name
    generation: int | None
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of ``Lab.verify``; truthy when no error was found."""

    generations_checked: tuple[int, ...]
    books_checked: int
    bytes_checked: int
    entries_searched: int
    problems: tuple[Problem, ...]
    unreachable_books: int
    unreachable_bytes: int

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def ok(self) -> bool:
        return not self.errors

    def __bool__(self) -> bool:
        return self.ok

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(
            [p.__dict__ for p in self.problems],
            columns=["severity", "kind", "where", "generation", "message"],
        )

    def __repr__(self) -> str:
        state = "clean" if self.ok else f"{len(self.errors)} error(s)"
        warn = len(self.problems) - len(self.errors)
        return (
            f"VerifyReport({state}, warnings={warn}, generations={len(self.generations_checked)}, "
            f"books={self.books_checked}, entries_searched={self.entries_searched}, "
            f"unreachable_books={self.unreachable_books})"
        )

    def _repr_html_(self) -> str:
        summary = _table(
            "verify: " + ("clean" if self.ok else f"{len(self.errors)} error(s)"),
            [
                "generations",
                "books",
                "bytes",
                "entries searched",
                "unreachable books",
                "unreachable bytes",
            ],
            [
                [
                    ", ".join(map(str, self.generations_checked)),
                    self.books_checked,
                    self.bytes_checked,
                    self.entries_searched,
                    self.unreachable_books,
                    self.unreachable_bytes,
                ]
            ],
        )
        if not self.problems:
            return summary
        rows = [
            [p.severity, p.kind, p.where, "" if p.generation is None else p.generation, p.message]
            for p in self.problems
        ]
        return summary + _table(
            "problems", ["severity", "kind", "where", "generation", "message"], rows
        )


@dataclass(frozen=True)
class GcReport:
    """Outcome of ``Lab.gc``: what was (or, dry, would be) deleted and what was kept, why."""

    dry_run: bool
    deleted_books: int
    deleted_bytes: int
    deleted_stored_bytes: int
    kept_books: Mapping[str, int]
    kept_bytes: Mapping[str, int]
    young_books: int
    young_bytes: int
    grace_s: float
    temp_files_removed: int = 0

    def to_frame(self):
        import pandas as pd

        rows = [
            {"reason": r, "books": self.kept_books[r], "bytes": self.kept_bytes[r]}
            for r in self.kept_books
        ]
        rows.append(
            {
                "reason": "unreachable, within grace period",
                "books": self.young_books,
                "bytes": self.young_bytes,
            }
        )
        rows.append(
            {
                "reason": "deleted" if not self.dry_run else "would delete",
                "books": self.deleted_books,
                "bytes": self.deleted_bytes,
            }
        )
        return pd.DataFrame(rows, columns=["reason", "books", "bytes"])

    def __repr__(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        kept = sum(self.kept_books.values())
        return (
            f"GcReport({verb} {self.deleted_books} books / {self.deleted_bytes} bytes, "
            f"kept {kept} books, {self.young_books} unreachable within grace)"
        )

    def _repr_html_(self) -> str:
        df = self.to_frame()
        verb = "dry run" if self.dry_run else "run"
        return _table(
            f"gc ({verb}, grace {self.grace_s:g} s)", list(df.columns), df.values.tolist()
        )


@dataclass(frozen=True)
class SemanticDiff:
    """What changed in the answers: recall of each side against its own exact ground truth,
    and how much the two sides' neighbour sets overlap, on one fixed query set."""

    k: int
    n_queries: int
    recall_a: float
    recall_b: float
    overlap: float

    def __repr__(self) -> str:
        return (
            f"SemanticDiff(k={self.k}, queries={self.n_queries}, recall_a={self.recall_a:.4f}, "
            f"recall_b={self.recall_b:.4f}, overlap={self.overlap:.4f})"
        )


@dataclass(frozen=True)
class ManifestDiff:
    """Differences between two generations, from disk bytes to search answers."""

    a: int
    b: int
    a_cid: str
    b_cid: str
    fields: Mapping[str, tuple[Any, Any]]
    books_shared: int
    books_added: int
    books_removed: int
    bytes_shared: int
    bytes_added: int
    bytes_removed: int
    ids_added: tuple[Any, ...]
    ids_removed: tuple[Any, ...]
    ids_changed_metadata: tuple[Any, ...]
    ids_changed_vector: tuple[Any, ...] = ()
    semantic: SemanticDiff | None = None
    _extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def new_bytes(self) -> int:
        """Bytes generation b wrote that generation a does not have."""
        return self.bytes_added

    def summary(self) -> dict[str, Any]:
        out = {
            "generations": f"{self.a} -> {self.b}",
            "fields changed": ", ".join(self.fields) or "none",
            "books shared / added / removed": f"{self.books_shared} / {self.books_added} / {self.books_removed}",
            "bytes shared / added / removed": f"{self.bytes_shared} / {self.bytes_added} / {self.bytes_removed}",
            "ids added / removed / metadata changed / vector changed": (
                f"{len(self.ids_added)} / {len(self.ids_removed)} / "
                f"{len(self.ids_changed_metadata)} / {len(self.ids_changed_vector)}"
            ),
        }
        if self.semantic is not None:
            s = self.semantic
            out[f"recall@{s.k} a / b"] = f"{s.recall_a:.4f} / {s.recall_b:.4f}"
            out[f"neighbour overlap@{s.k}"] = f"{s.overlap:.4f}"
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"value": self.summary()})

    def __repr__(self) -> str:
        sem = "" if self.semantic is None else f", {self.semantic!r}"
        return (
            f"ManifestDiff({self.a} -> {self.b}, fields={sorted(self.fields)}, "
            f"books +{self.books_added}/-{self.books_removed}/={self.books_shared}, "
            f"new_bytes={self.bytes_added}, ids +{len(self.ids_added)}/-{len(self.ids_removed)}"
            f"/~{len(self.ids_changed_metadata)}{sem})"
        )

    def _repr_html_(self) -> str:
        rows = [[k, v] for k, v in self.summary().items()]
        out = _table(f"diff {self.a} -> {self.b}", ["", ""], rows)
        if self.fields:
            out += _table(
                "field changes",
                ["field", "a", "b"],
                [[k, a, b] for k, (a, b) in self.fields.items()],
            )
        return out
