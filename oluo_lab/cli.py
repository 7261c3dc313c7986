"""The ``oluo-lab`` command line.

``oluo-lab demo`` runs the main job end to end on the bundled GloVe sample:
it builds an engine over 20,000 words, searches it, measures recall against
exact ground truth, persists two generations into a content-addressed store
(showing what the second one shares with the first), restores the head in a
fresh engine and checks that it answers exactly as the original did.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DEMO_WORDS = ("king", "paris", "computer", "music")


def _recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k by id intersection (the fraction of true neighbours found)."""
    k = truth.shape[1]
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def _generation_bytes(store, manifest_cid) -> tuple[set, int]:
    from .snapshot.history import generation_books

    books = generation_books(store, manifest_cid)
    return books, sum(c.size for c in books)


def _persist_all(engine, out: Path, store, note: str = "") -> int:
    """Persist every snapshot the engine has produced (queued ones first), in order."""
    from .snapshot import persist_snapshot

    snaps = engine.take_snapshots()
    last = engine.compact()
    if last is not None:
        snaps.append(last)
    for snap in snaps:
        base_path, gen = persist_snapshot(
            out,
            store,
            snap.index_bytes,
            snap.metadata_bytes,
            snap.key_counter,
            snap.generation,
            note=note,
        )
    engine.compact_complete(str(base_path), gen)
    return gen


def run_demo(out: Path, echo=print, report: bool = True) -> int:
    """Run the demo into ``out``; returns a process exit code."""
    from . import datasets
    from .cas import DirStore, ingest, reassemble
    from .engine import OluoEngine
    from .snapshot import load_snapshot, read_head

    out.mkdir(parents=True, exist_ok=True)
    if read_head(out) is not None:
        echo(f"{out} already holds a lab; pick an empty directory with --out")
        return 2
    data = datasets.glove_sample()
    echo(f"dataset: {data!r}")
    store = DirStore(out / "cas")

    raw_cid = ingest(data.base.tobytes(), store)
    assert reassemble(raw_cid, store) == data.base.tobytes()
    echo(f"raw vectors ingested as {raw_cid.hex}")

    words = [str(w) for w in data.base_words]
    engine = OluoEngine(data.dim, metric="cosine")
    engine.add(data.base, ids=words, metadata=[{"word": w} for w in words])
    gen = _persist_all(engine, out, store)
    echo(f"\n{engine!r}")

    index_of = {w: i for i, w in enumerate(words)}
    queries = np.stack([data.base[index_of[w]] for w in DEMO_WORDS])
    res = engine.search(queries, k=6)
    table = pd.DataFrame(
        {
            w: [f"{i} ({s:.3f})" for i, s in zip(res.ids[q][1:], res.scores[q][1:], strict=True)]
            for q, w in enumerate(DEMO_WORDS)
        }
    )
    echo("\nnearest words (cosine distance):")
    echo(table.to_string(index=False))

    truth = data.ground_truth(10)
    found = engine.search(data.queries, k=10)
    pos = np.vectorize(index_of.get, otypes=[np.int64])(found.ids)
    recall = _recall_at(pos, truth)
    echo(f"\nrecall@10 on {data.n_queries} held-out queries (id intersection): {recall:.4f}")

    gen1_books, gen1_bytes = _generation_bytes(store, read_head(out).cid)
    removed = words[-200:]
    engine.delete(removed)
    new_words = [str(w) for w in data.query_words[:200]]
    engine.add(data.queries[:200], ids=new_words, metadata=[{"word": w} for w in new_words])
    gen = _persist_all(engine, out, store, note="-200 words, +200 words")
    gen2_books, gen2_bytes = _generation_bytes(store, read_head(out).cid)
    new = sum(c.size for c in gen2_books - gen1_books)
    echo(
        f"\ngeneration {gen}: deleted {len(removed)} words, added {len(new_words)}; "
        f"{len(gen2_books)} books, {gen2_bytes:,} bytes, of which {new:,} new "
        f"({new / gen2_bytes:.1%}) and {gen2_bytes - new:,} shared with generation 1"
    )

    restored, _, rgen = load_snapshot(out, store)
    same = engine.search(data.queries, k=10)
    again = restored.search(data.queries, k=10)
    identical = same.ids.tolist() == again.ids.tolist() and np.array_equal(
        same.scores, again.scores
    )
    echo(
        f"restored generation {rgen} from {read_head(out).cid.hex}: answers identical = {identical}"
    )
    stats = store.stats()
    echo(f"\nstore: {stats!r}")
    echo(f"lab written to {out}")
    if not identical:
        return 1
    if report:
        from .report import ReportError, write_report

        echo("\nwriting the report (runs notebooks/01_quickstart.ipynb) ...")
        try:
            html_path, png_path = write_report(out / "report")
        except ReportError as exc:
            echo(f"report failed: {exc}")
            return 1
        echo(f"report: {html_path}\nrecall/latency plot: {png_path}")
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
    from ._html import fmt_bytes

    df = lab.log()
    shown = df.assign(**{c: df[c].map(fmt_bytes) for c in ("bytes", "new_bytes")})
    _emit(
        args,
        df.to_dict(orient="records"),
        shown.to_string(index=False) if len(df) else "(empty lab)",
    )
    return 0


def _cmd_show(args, lab) -> int:
    from ._html import fmt_bytes

    snap = lab.resolve(_ref(args.ref))
    info = _manifest_dict(snap)
    shown = {k: fmt_bytes(v) if k.endswith("_size") else v for k, v in info.items()}
    width = max(len(k) for k in info)
    _emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in shown.items()))
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
