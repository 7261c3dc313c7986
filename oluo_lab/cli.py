"""The ``oluo-lab`` command line.

``oluo-lab demo`` runs the main job end to end on the bundled GloVe sample:
it builds an engine over 20,000 words, searches it, measures recall against
exact ground truth, commits two generations to a lab directory (showing what
the second one shares with the first), restores the head in a fresh engine,
checks that it answers exactly as the original did, and writes an HTML report
describing the lab (``<lab>/report/index.html``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GENERATION_1_NOTE = "20,000 GloVe words"
GENERATION_2_NOTE = "-200 rarest words, +200 held-out query words"


def run_demo(out: Path, echo=print, report: bool = True) -> int:
    """Run the demo into ``out``; returns a process exit code."""
    from . import datasets
    from .cas import MemoryStore, ingest, reassemble
    from .engine import OluoEngine
    from .notebook import engine_recall
    from .report import DEMO_WORDS, nearest_words
    from .snapshot import Lab, read_head

    if out.is_dir() and read_head(out) is not None:
        echo(f"{out} already holds a lab; pick an empty directory with --out")
        return 2
    data = datasets.glove_sample()
    echo(f"dataset: {data!r}")

    scratch = MemoryStore()  # the content id of the raw vectors, without keeping them
    raw_cid = ingest(data.base.tobytes(), scratch)
    if reassemble(raw_cid, scratch) != data.base.tobytes():
        echo("the raw vectors did not reassemble to the same bytes")
        return 1
    echo(f"raw vectors: content id {raw_cid.hex}")

    lab = Lab(out)
    words = [str(w) for w in data.base_words]
    engine = OluoEngine(data.dim, metric="cosine")
    engine.add(data.base, ids=words, metadata=[{"word": w} for w in words])
    gen1 = lab.commit(engine, note=GENERATION_1_NOTE)
    echo(f"\n{engine!r}")

    echo("\nnearest words (cosine distance):")
    echo(nearest_words(engine, data, DEMO_WORDS).to_string(index=False))

    recall = engine_recall(engine, data, k=10)
    echo(f"\nrecall@10 on {data.n_queries} held-out queries (id intersection): {recall:.4f}")

    removed = words[-200:]
    engine.delete(removed)
    new_words = [str(w) for w in data.query_words[:200]]
    engine.add(data.queries[:200], ids=new_words, metadata=[{"word": w} for w in new_words])
    gen2 = lab.commit(engine, note=GENERATION_2_NOTE)
    d = lab.diff(gen1, gen2, semantic=False)
    total = d.bytes_shared + d.bytes_added
    echo(
        f"\ngeneration {gen2.generation}: deleted {len(removed)} words, added {len(new_words)}; "
        f"{d.books_shared + d.books_added} books, {total:,} bytes, of which "
        f"{d.bytes_added:,} new ({d.bytes_added / total:.1%}) and {d.bytes_shared:,} shared "
        f"with generation {gen1.generation}"
    )

    restored = Lab(out).checkout(progress=False)
    same = engine.search(data.queries, k=10)
    again = restored.search(data.queries, k=10)
    identical = same.ids.tolist() == again.ids.tolist() and np.array_equal(
        same.scores, again.scores
    )
    echo(
        f"restored generation {restored.generation} from {gen2.cid.hex}: "
        f"answers identical = {identical}"
    )
    echo(f"\nstore: {lab.store.stats()!r}")
    echo(f"lab written to {out}")
    if not identical:
        return 1
    if report:
        from .report import write_report

        echo("\nwriting the report (verify, diff, recall of each generation, an ef sweep) ...")
        html_path, png_path = write_report(lab, data=data, restored_identical=identical)
        echo(f"report: {html_path}\nrecall/QPS plot: {png_path}")
    return 0


def _json_default(value):
    from .cas import CID

    if isinstance(value, CID):
        return value.hex
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _emit(args, payload, text: str) -> None:
    import json

    if args.json:
        print(json.dumps(payload, default=_json_default, sort_keys=True, indent=1))
    else:
        print(text)


def _manifest_dict(snap) -> dict:
    m = snap.manifest
    return {
        "manifest": snap.cid.hex,
        "generation": m.compact_generation,
        "parent": None if m.parent is None else m.parent.hex,
        "version": m.version,
        "entries": m.entries,
        "key_counter": m.key_counter,
        "index_cid": m.index_cid.hex,
        "index_size": m.index_size,
        "metadata_cid": m.metadata_cid.hex,
        "metadata_size": m.metadata_size,
        "index_config": dict(m.index_config),
        "chunker": dict(m.chunker),
        "note": m.note,
        "annotations": dict(m.annotations),
    }


def _cmd_log(args, lab) -> int:
    df = lab.log()
    _emit(
        args, df.to_dict(orient="records"), df.to_string(index=False) if len(df) else "(empty lab)"
    )
    return 0


def _cmd_show(args, lab) -> int:
    snap = lab.resolve(_ref(args.ref))
    info = _manifest_dict(snap)
    width = max(len(k) for k in info)
    _emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return 0


def _cmd_diff(args, lab) -> int:
    d = lab.diff(_ref(args.a), _ref(args.b), k=args.k, semantic=not args.no_semantic)
    payload = {
        "a": d.a,
        "b": d.b,
        "a_cid": d.a_cid,
        "b_cid": d.b_cid,
        "fields": {k: list(v) for k, v in d.fields.items()},
        "books": {"shared": d.books_shared, "added": d.books_added, "removed": d.books_removed},
        "bytes": {"shared": d.bytes_shared, "added": d.bytes_added, "removed": d.bytes_removed},
        "ids_added": list(d.ids_added),
        "ids_removed": list(d.ids_removed),
        "ids_changed_metadata": list(d.ids_changed_metadata),
        "ids_changed_vector": list(d.ids_changed_vector),
        "semantic": None if d.semantic is None else d.semantic.__dict__,
    }
    summary = d.summary()
    width = max(len(k) for k in summary)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in summary.items())
    if d.fields:
        text += "\n\nfield changes:\n" + "\n".join(
            f"  {k}: {a} -> {b}" for k, (a, b) in d.fields.items()
        )
    _emit(args, payload, text)
    return 0


def _cmd_verify(args, lab) -> int:
    report = lab.verify(sample=args.sample)
    payload = {
        "ok": report.ok,
        "generations_checked": list(report.generations_checked),
        "books_checked": report.books_checked,
        "bytes_checked": report.bytes_checked,
        "entries_searched": report.entries_searched,
        "unreachable_books": report.unreachable_books,
        "unreachable_bytes": report.unreachable_bytes,
        "problems": [p.__dict__ for p in report.problems],
    }
    text = repr(report)
    if report.problems:
        text += "\n" + report.to_frame().to_string(index=False)
    _emit(args, payload, text)
    return 0 if report.ok else 1


def _cmd_gc(args, lab) -> int:
    report = lab.gc(dry_run=not args.run, grace_s=args.grace, keep_last=args.keep_last)
    payload = {
        "dry_run": report.dry_run,
        "deleted_books": report.deleted_books,
        "deleted_bytes": report.deleted_bytes,
        "deleted_stored_bytes": report.deleted_stored_bytes,
        "kept_books": dict(report.kept_books),
        "kept_bytes": dict(report.kept_bytes),
        "young_books": report.young_books,
        "young_bytes": report.young_bytes,
    }
    _emit(args, payload, repr(report) + "\n" + report.to_frame().to_string(index=False))
    return 0


def _cmd_tag(args, lab) -> int:
    if args.name is None:
        tags = {name: cid.hex for name, cid in lab.tags().items()}
        _emit(args, tags, "\n".join(f"{n}  {c}" for n, c in tags.items()) or "(no tags)")
        return 0
    if args.delete:
        lab.untag(args.name)
        _emit(args, {"deleted": args.name}, f"deleted tag {args.name}")
        return 0
    snap = lab.tag(args.name, _ref(args.ref), force=args.force)
    _emit(
        args,
        {"tag": args.name, "manifest": snap.cid.hex, "generation": snap.generation},
        f"{args.name} -> generation {snap.generation} ({snap.cid.hex})",
    )
    return 0


def repack_lab(path: Path, bar=None):
    """Convert the directory store of a lab (``path/cas``), or a bare store directory, to a
    pack store in place (``oluo_lab.cas.convert_to_packs``), holding the lab's lock so no
    commit or gc runs meanwhile. Safe to run again after an interruption."""
    from .cas import convert_to_packs
    from .snapshot.durable import data_dir_lock

    path = Path(path)
    if (path / "cas").is_dir():
        with data_dir_lock(path):
            return convert_to_packs(path / "cas", bar=bar)
    return convert_to_packs(path, bar=bar)


def _cmd_repack(args) -> int:
    from ._progress import progress_bar

    with progress_bar(not args.json, desc="repack", unit=" books") as bar:
        report = repack_lab(args.dir, bar=bar)
    payload = {
        "books_packed": report.books_packed,
        "book_files_deleted": report.book_files_deleted,
        "switched": report.switched,
    }
    text = (
        f"{args.dir.name}: {report.books_packed} books packed, "
        f"{report.book_files_deleted} book files deleted"
        + ("" if report.switched or report.books_packed else " (already a pack store)")
    )
    _emit(args, payload, text)
    return 0


def _ref(text: str):
    return int(text) if text.isdigit() else text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oluo-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on the bundled GloVe sample")
    demo.add_argument("--out", type=Path, default=Path("oluo-demo"), help="output directory")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report")

    def lab_cmd(name: str, help_: str):
        p = sub.add_parser(name, help=help_)
        p.add_argument("dir", type=Path, help="lab directory")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    lab_cmd("log", "one row per generation, newest first")
    show = lab_cmd("show", "a generation's manifest")
    show.add_argument("ref", nargs="?", default="HEAD", help="generation, tag, CID or HEAD")
    diff = lab_cmd("diff", "what changed between two generations")
    diff.add_argument("a", help="generation, tag, CID")
    diff.add_argument("b", nargs="?", default="HEAD")
    diff.add_argument("--k", type=int, default=10)
    diff.add_argument("--no-semantic", action="store_true", help="skip the answer-level diff")
    verify = lab_cmd(
        "verify", "check every reachable book, manifest and index (exit 1 on problems)"
    )
    verify.add_argument("--sample", type=int, default=32, help="entries searched per generation")
    gc = lab_cmd("gc", "collect unreachable books (dry run unless --run)")
    gc.add_argument("--run", action="store_true", help="really delete")
    gc.add_argument(
        "--grace", type=float, default=3600.0, help="keep unreachable books younger than this (s)"
    )
    gc.add_argument(
        "--keep-last", type=int, default=None, help="retain only the newest N generations"
    )
    lab_cmd(
        "repack",
        "convert a lab's directory store (one file per book) to a pack store, in place",
    )
    tag = lab_cmd("tag", "list, set or delete tags (named checkpoints, kept by gc)")
    tag.add_argument("name", nargs="?")
    tag.add_argument("ref", nargs="?", default="HEAD")
    tag.add_argument("--delete", action="store_true")
    tag.add_argument("--force", action="store_true", help="move an existing tag")

    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.out, report=not args.no_report)
    from .cas import ContentError
    from .snapshot import OluoPersistError
    from .snapshot.lab import Lab

    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 2
    if args.command == "repack":
        try:
            return _cmd_repack(args)
        except (OluoPersistError, ContentError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    handler = {
        "log": _cmd_log,
        "show": _cmd_show,
        "diff": _cmd_diff,
        "verify": _cmd_verify,
        "gc": _cmd_gc,
        "tag": _cmd_tag,
    }[args.command]
    try:
        return handler(args, Lab(args.dir))
    except (OluoPersistError, ContentError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
