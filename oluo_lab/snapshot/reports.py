"""Result objects of ``Lab.diff``, ``Lab.verify`` and ``Lab.gc``.

Each is a frozen dataclass with a short deterministic ``__repr__``, a
``to_frame()`` for pandas users and a plain-HTML ``_repr_html_`` (no CSS, no
paths, no times), so notebook output is byte-reproducible.

Snapshot layer: plain result data, built by :mod:`.diff`, :mod:`.verify` and :mod:`.gc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._html import COLORS, Raw, details, fmt_bytes, kv_table, short_cid, svg_bar, table
from ..cas import SweepReport

__all__ = ["GcReport", "ManifestDiff", "Problem", "SemanticDiff", "VerifyReport"]


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
    commits_checked: int = 0  # commits whose payloads were checked (generations can repeat)

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
            f"VerifyReport({state}, warnings={warn}, commits={self.commits_checked}, "
            f"generations={len(self.generations_checked)}, "
            f"books={self.books_checked}, entries_searched={self.entries_searched}, "
            f"unreachable_books={self.unreachable_books})"
        )

    def _repr_html_(self) -> str:
        state = "clean" if self.ok else f"{len(self.errors)} error(s)"
        warn = len(self.problems) - len(self.errors)
        out = kv_table(
            f"verify: {state}, {warn} warning(s)",
            [
                ("commits checked", self.commits_checked),
                ("generations checked", ", ".join(map(str, self.generations_checked)) or "none"),
                ("books re-hashed", self.books_checked),
                ("bytes re-hashed", fmt_bytes(self.bytes_checked)),
                ("entries searched for themselves", self.entries_searched),
                ("unreachable books", self.unreachable_books),
                ("unreachable bytes", fmt_bytes(self.unreachable_bytes)),
            ],
        )
        if not self.problems:
            return out
        rows = [
            [
                p.severity,
                p.kind,
                short_cid(p.where) if len(p.where) == 80 else p.where,
                "" if p.generation is None else p.generation,
                p.message,
            ]
            for p in self.problems
        ]
        header = ["severity", "kind", "where", "generation", "message"]
        out += table(f"problems ({len(rows)})", header, rows[:10])
        if len(rows) > 10:
            out += details(f"{len(rows) - 10} more problems", table(None, header, rows[10:]))
        return Raw(out)


@dataclass(frozen=True)
class GcReport:
    """Outcome of ``Lab.gc``: what was (or, dry, would be) deleted and what was kept, why.

    ``store``: what the store's sweep did (a pack store: packs written by repacking,
    packs deleted, unreferenced packs kept for the grace period). On an object store gc
    is two-phase: ``tombstoned_books`` were marked for deletion now and
    ``pending_books`` earlier, both deleted by a later gc once tombstoned for the grace
    period; ``deleted_*`` count only the books actually removed."""

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
    store: SweepReport | None = None
    tombstoned_books: int = 0
    pending_books: int = 0

    @property
    def two_phase(self) -> bool:
        return bool(self.tombstoned_books or self.pending_books)

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
        if self.two_phase:
            rows.append({"reason": "tombstoned now", "books": self.tombstoned_books, "bytes": None})
            rows.append(
                {
                    "reason": "tombstoned, within grace period",
                    "books": self.pending_books,
                    "bytes": None,
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
        tombs = (
            f", {self.tombstoned_books} tombstoned, {self.pending_books} pending"
            if self.two_phase
            else ""
        )
        packs = ""
        if self.store is not None and (self.store.packs_written or self.store.packs_deleted):
            verb2 = "would write" if self.dry_run else "wrote"
            packs = (
                f"; packs: {verb2} {self.store.packs_written}, "
                f"{'would delete' if self.dry_run else 'deleted'} {self.store.packs_deleted}"
            )
        return (
            f"GcReport({verb} {self.deleted_books} books / {fmt_bytes(self.deleted_bytes)}, "
            f"kept {kept} books, {self.young_books} unreachable within grace{tombs}{packs})"
        )

    def _repr_html_(self) -> str:
        verb = "dry run: would delete" if self.dry_run else "deleted"
        rows = [
            [reason, self.kept_books[reason], fmt_bytes(self.kept_bytes[reason])]
            for reason in self.kept_books
        ]
        rows.append(
            ["unreachable, within grace period", self.young_books, fmt_bytes(self.young_bytes)]
        )
        if self.two_phase:
            rows.append(["tombstoned now", self.tombstoned_books, ""])
            rows.append(["tombstoned, within grace period", self.pending_books, ""])
        rows.append([verb, self.deleted_books, fmt_bytes(self.deleted_bytes)])
        out = table(
            f"gc ({'dry run' if self.dry_run else 'run'}, grace {self.grace_s:g} s)",
            ["books kept or deleted, by reason", "books", "bytes"],
            rows,
        )
        extra = [
            (
                "stored bytes freed" if not self.dry_run else "stored bytes to free",
                fmt_bytes(self.deleted_stored_bytes),
            )
        ]
        if self.temp_files_removed:
            extra.append(("temp files removed", self.temp_files_removed))
        sweep = self.store
        if sweep is not None and (sweep.packs_written or sweep.packs_deleted or sweep.packs_young):
            would = "to " if self.dry_run else ""
            extra.append((f"packs {would}write (repacked live books)", sweep.packs_written))
            extra.append((f"packs {would}delete", sweep.packs_deleted))
            extra.append(("unreferenced packs within grace period", sweep.packs_young))
            extra.append(
                (
                    "pack bytes freed" if not self.dry_run else "pack bytes to free",
                    fmt_bytes(sweep.freed_bytes),
                )
            )
        return Raw(out + kv_table(None, extra))


@dataclass(frozen=True)
class SemanticDiff:
    """What changed in the answers: recall of each side against its own exact ground truth,
    and how much the two sides' neighbour sets overlap, on one fixed query set.
    ``source`` says where the queries came from."""

    k: int
    n_queries: int
    recall_a: float
    recall_b: float
    overlap: float
    source: str = ""

    def __repr__(self) -> str:
        src = ", fallback queries" if self.source.startswith("fallback") else ""
        return (
            f"SemanticDiff(k={self.k}, queries={self.n_queries}, recall_a={self.recall_a:.4f}, "
            f"recall_b={self.recall_b:.4f}, overlap={self.overlap:.4f}{src})"
        )

    def _repr_html_(self) -> str:
        src = f" ({self.source})" if self.source else ""
        return table(
            f"answers on {self.n_queries} fixed queries{src}, k={self.k}",
            ["", "a", "b"],
            [
                [
                    f"recall@{self.k} vs own exact search",
                    f"{self.recall_a:.4f}",
                    f"{self.recall_b:.4f}",
                ],
                [f"neighbour overlap@{self.k} (a vs b)", f"{self.overlap:.4f}", ""],
            ],
            row_headers=True,
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
    a_label: str = ""  # the commits' names (#n) when known
    b_label: str = ""

    @property
    def new_bytes(self) -> int:
        """Bytes generation b wrote that generation a does not have."""
        return self.bytes_added

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.a_label or self.b_label:
            out["commits"] = f"{self.a_label} -> {self.b_label}"
        out |= {
            "generations": f"{self.a} -> {self.b}",
            "fields changed": ", ".join(self.fields) or "none",
            "books shared / added / removed": f"{self.books_shared} / {self.books_added} / {self.books_removed}",
            "bytes shared / added / removed": (
                f"{fmt_bytes(self.bytes_shared)} / {fmt_bytes(self.bytes_added)} / "
                f"{fmt_bytes(self.bytes_removed)}"
            ),
            "ids added / removed / metadata changed / vector changed": (
                f"{len(self.ids_added)} / {len(self.ids_removed)} / "
                f"{len(self.ids_changed_metadata)} / {len(self.ids_changed_vector)}"
            ),
        }
        if self.semantic is not None:
            s = self.semantic
            out[f"recall@{s.k} a / b"] = f"{s.recall_a:.4f} / {s.recall_b:.4f}"
            out[f"neighbour overlap@{s.k}"] = f"{s.overlap:.4f}"
            if s.source:
                out["queries"] = s.source
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"value": self.summary()})

    def __repr__(self) -> str:
        sem = "" if self.semantic is None else f", {self.semantic!r}"
        return (
            f"ManifestDiff({self.a} -> {self.b}, fields={sorted(self.fields)}, "
            f"books +{self.books_added}/-{self.books_removed}/={self.books_shared}, "
            f"new={fmt_bytes(self.bytes_added)}, "
            f"ids +{len(self.ids_added)}/-{len(self.ids_removed)}"
            f"/~{len(self.ids_changed_metadata)}{sem})"
        )

    def _repr_html_(self) -> str:
        """Fields, bytes (with a shared/new/removed bar), entries (first ids shown, the
        rest in ``<details>``) and the semantic diff, each a small table."""
        out = kv_table(
            f"diff: {self.a_label} -> {self.b_label} (generation {self.a} -> {self.b})"
            if self.a_label or self.b_label
            else f"diff: generation {self.a} -> {self.b}",
            [("a", short_cid(self.a_cid)), ("b", short_cid(self.b_cid))],
        )
        if self.fields:
            out += table(
                f"manifest fields changed ({len(self.fields)})",
                ["field", "a", "b"],
                [[k, _field_text(a), _field_text(b)] for k, (a, b) in self.fields.items()],
            )
        else:
            out += Raw("<p>manifest fields: no change</p>")
        bar = svg_bar(
            [
                ("shared", self.bytes_shared, COLORS["shared"]),
                ("added", self.bytes_added, COLORS["new"]),
                ("removed", self.bytes_removed, COLORS["removed"]),
            ],
            width=240,
            fmt=lambda v: fmt_bytes(int(v)),
        )
        out += table(
            "books and bytes (shared | added | removed)",
            ["", "books", "bytes", ""],
            [
                ["shared", self.books_shared, fmt_bytes(self.bytes_shared), bar],
                ["added in b", self.books_added, fmt_bytes(self.bytes_added), ""],
                ["removed from a", self.books_removed, fmt_bytes(self.bytes_removed), ""],
            ],
            row_headers=True,
        )
        groups = [
            ("added", self.ids_added),
            ("removed", self.ids_removed),
            ("metadata changed", self.ids_changed_metadata),
            ("vector changed", self.ids_changed_vector),
        ]
        out += table(
            "entries",
            ["", "count", f"first {_IDS_SHOWN} ids"],
            [[name, len(ids), _ids_text(ids[:_IDS_SHOWN])] for name, ids in groups],
            row_headers=True,
        )
        for name, ids in groups:
            if len(ids) > _IDS_SHOWN:
                out += details(f"all {len(ids)} ids {name}", _ids_text(ids))
        if self.semantic is not None:
            out += Raw(self.semantic._repr_html_())
        return Raw(out)


_IDS_SHOWN = 10


def _ids_text(ids: tuple[Any, ...]) -> str:
    return ", ".join(str(t) for t in ids)


def _field_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {value[k]!r}" for k in sorted(value)) + "}"
    return str(value)
