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
    from ._html import fmt_bytes
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

    lab = Lab(out, parents=True)
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
        f"\ncommit {gen2.label} (generation {gen2.generation}): deleted {len(removed)} words, "
        f"added {len(new_words)}; {d.books_shared + d.books_added} books, {fmt_bytes(total)}, "
        f"of which {fmt_bytes(d.bytes_added)} new ({d.bytes_added / total:.1%}) and "
        f"{fmt_bytes(d.bytes_shared)} shared with commit {gen1.label}"
    )

    restored = Lab(out).checkout(progress=False)
    same = engine.search(data.queries, k=10)
    again = restored.search(data.queries, k=10)
    identical = same.ids.tolist() == again.ids.tolist() and np.array_equal(
        same.scores, again.scores
    )
    echo(
        f"restored commit {gen2.label} (generation {restored.generation}, {gen2.cid.hex}): "
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
        return None if np.isnan(value) else float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _plain(value):
    """JSON-ready ``value``: NaN and pandas' missing values become None (``null``)."""
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _emit(args, payload, text: str) -> None:
    import json

    if args.json:
        print(json.dumps(_plain(payload), default=_json_default, sort_keys=True, indent=1))
    else:
        print(text)


def _when(text) -> str:
    """A log time for people: ``2025-03-01 14:05`` (UTC)."""
    if not isinstance(text, str):
        return ""
    return text.replace("T", " ")[:16]


def _commit_info(lab, snap) -> dict:
    """The fields every command uses for a commit (JSON: exact values, full ids)."""
    return {
        "#": snap.seq,
        "commit": snap.id,
        "cid": snap.cid.hex,
        "branch": snap.branch,
        "generation": snap.generation,
    }


def _manifest_dict(lab, snap) -> dict:
    m = snap.manifest
    view = lab.view()
    ev = None
    if m.evaluation:
        ev = {
            "queries": m.evaluation["queries"].hex(),
            "truth": m.evaluation["truth"].hex(),
            "n_queries": m.evaluation["n_queries"],
            "k": m.evaluation["k"],
            "metric": m.evaluation["metric"],
            "recall": {str(ef): r for ef, r in m.evaluation["recall"]},
        }
    return {
        **_commit_info(lab, snap),
        "tags": view.tags_at(snap.cid),
        "parent": None if m.parent is None else m.parent.hex[16:],
        "time": snap.time,
        "state": snap.state,
        "version": m.version,
        "entries": m.entries,
        "key_counter": m.key_counter,
        "index_cid": m.index_cid.hex,
        "index_digest": snap.index_digest,
        "index_size": m.index_size,
        "metadata_cid": m.metadata_cid.hex,
        "metadata_size": m.metadata_size,
        "index_config": dict(m.index_config),
        "chunker": dict(m.chunker),
        "note": m.note,
        "params": dict(m.params),
        "metrics": dict(m.metrics),
        "annotations": dict(m.annotations) if m.version == 1 else None,
        "evaluation": ev,
        "timings": dict(snap.timings) or None,
    }


def _table_text(df, empty: str) -> str:
    """A table for people: sizes in binary units, times to the minute, no index."""
    from ._html import fmt_bytes

    if df.empty:
        return empty
    shown = df.copy()
    for col in ("bytes", "new_bytes"):
        if col in shown.columns:
            shown[col] = shown[col].map(lambda v: fmt_bytes(int(v)))
    if "time" in shown.columns:
        shown["time"] = shown["time"].map(_when)
    if "#" in shown.columns:
        shown["#"] = shown["#"].map(lambda v: "" if v is None or v != v else f"#{v}")
    shown = shown.astype(object).where(shown.notna(), "")
    return shown.to_string(index=False)


def _rows(lab, df) -> list[dict]:
    """JSON rows of a log/runs/branches table: full commit ids (as every command's JSON
    gives them), tags as lists, the manifest CID."""
    view = lab.view()
    full = {c.short: c for c in view.reachable()}
    out = []
    for rec in df.to_dict(orient="records"):
        cid = full.get(rec.get("commit"))
        row = dict(rec)
        if cid is not None:
            row["commit"] = cid.hex[16:]
            row["cid"] = cid.hex
            if "parent" in row:
                parent = view.manifest(cid).parent
                row["parent"] = None if parent is None else parent.hex[16:]
        if "tags" in row:
            row["tags"] = [] if not row["tags"] else row["tags"].split(", ")
        out.append(row)
    return out


def _cmd_log(args, lab) -> int:
    df = lab.log(args.branch)
    _emit(args, _rows(lab, df), _table_text(df, "(empty lab)"))
    return 0


def _cmd_runs(args, lab) -> int:
    df = lab.runs(args.branch, args.query, timings=args.timings)
    if args.csv:
        rows = _rows(lab, df)
        import pandas as pd

        frame = pd.DataFrame(rows, columns=[*df.columns, "cid"])
        frame["tags"] = frame["tags"].map(lambda t: " ".join(t) if t else "")
        print(frame.to_csv(index=False), end="")
        return 0
    _emit(args, _rows(lab, df), _table_text(df, "(no runs)"))
    return 0


def _cmd_show(args, lab) -> int:
    from ._html import fmt_bytes

    snap = lab.resolve(_ref(args.ref))
    info = _manifest_dict(lab, snap)
    shown = {
        k: fmt_bytes(v) if k.endswith("_size") else _when(v) if k == "time" else v
        for k, v in info.items()
        if v not in (None, {}, [])
    }
    if info["evaluation"]:
        ev = info["evaluation"]
        points = ", ".join(f"ef_search={ef}: {r:.4f}" for ef, r in ev["recall"].items())
        shown["evaluation"] = f"recall@{ev['k']} on {ev['n_queries']} queries: {points}"
    if info["timings"]:
        points = ", ".join(
            f"ef_search={p['ef_search']}: {p['qps']:,.0f}" for p in info["timings"]["points"]
        )
        shown["timings"] = f"queries per second (measured at commit): {points}"
    width = max(len(k) for k in shown)
    _emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in shown.items()))
    return 0


def _cmd_compare(args, lab) -> int:
    df = lab.compare(*(_ref(r) for r in args.refs))
    payload = {
        "columns": list(df.columns),
        "fields": {field: dict(zip(df.columns, row, strict=True)) for field, row in df.iterrows()},
    }
    shown = df.astype(object).where(df.notna(), "")
    _emit(args, payload, shown.to_string())
    return 0


def _cmd_branch(args, lab) -> int:
    def listing():
        df = lab.branches()
        return _rows(lab, df), _table_text(df, "(no branches)")

    return _named_ref(args, lab, "branch", listing, lab.delete_branch, lab.branch)


def _named_ref(args, lab, kind: str, listing, delete, move) -> int:
    """``tag`` and ``branch``: list (no name), ``--delete`` NAME, or point NAME at REF."""
    if args.name is None:
        payload, text = listing()
        _emit(args, payload, text)
        return 0
    if args.delete:
        delete(args.name)
        _emit(args, {"deleted": args.name}, f"deleted {kind} {args.name}")
        return 0
    snap = move(args.name, _ref(args.ref), force=args.force)
    info = {kind: args.name, **_commit_info(lab, snap)}
    _emit(args, info, f"{args.name} -> {snap.label} ({snap.short}, generation {snap.generation})")
    return 0


def _cmd_diff(args, lab) -> int:
    from ._html import fmt_bytes

    d = lab.diff(_ref(args.a), _ref(args.b), k=args.k, semantic=not args.no_semantic)
    a, b = lab.resolve(_cid(d.a_cid)), lab.resolve(_cid(d.b_cid))
    payload = {
        "a": _commit_info(lab, a),
        "b": _commit_info(lab, b),
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
    summary["bytes shared / added / removed"] = (
        f"{fmt_bytes(d.bytes_shared)} / {fmt_bytes(d.bytes_added)} / {fmt_bytes(d.bytes_removed)}"
    )
    width = max(len(k) for k in summary)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in summary.items())
    if d.fields:
        text += "\n\nfield changes:\n" + "\n".join(
            f"  {k}: {a} -> {b}" for k, (a, b) in d.fields.items()
        )
    _emit(args, payload, text)
    return 0


def _cid(text: str):
    from .cas import CID

    return CID.parse(text)


def _cmd_verify(args, lab) -> int:
    report = lab.verify(sample=args.sample)
    payload = {
        "ok": report.ok,
        "commits_checked": report.commits_checked,
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
    from ._html import fmt_bytes

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
    frame = report.to_frame()
    frame["bytes"] = frame["bytes"].map(lambda v: fmt_bytes(int(v)))
    _emit(args, payload, repr(report) + "\n" + frame.to_string(index=False))
    return 0


def _cmd_tag(args, lab) -> int:
    def listing():
        tags = {name: cid.hex for name, cid in lab.tags().items()}
        return tags, "\n".join(f"{n}  {c}" for n, c in tags.items()) or "(no tags)"

    return _named_ref(args, lab, "tag", listing, lab.untag, lab.tag)


def repack_lab(path: Path, bar=None):
    """Convert the directory store of a lab (``path/cas``), or a bare store directory, to a
    pack store in place (``oluo_lab.cas.convert_to_packs``), holding the lab's lock so no
    commit or gc runs meanwhile. Safe to run again after an interruption."""
    from .cas import convert_to_packs
    from .snapshot.durable import data_dir_lock, require_writable

    path = Path(path)
    require_writable(path / "cas" if (path / "cas").is_dir() else path, "repack")
    if (path / "cas").is_dir():
        with data_dir_lock(path):
            return convert_to_packs(path / "cas", bar=bar)
    return convert_to_packs(path, bar=bar)


def _cmd_repack(args, lab) -> int:
    from ._progress import progress_bar

    with progress_bar(not args.json, desc="repack", unit=" books") as bar:
        report = repack_lab(lab.path, bar=bar)
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


def _store_options(items: Sequence[str]) -> dict:
    """``KEY=VALUE`` object-store options (``true``/``false`` become booleans)."""
    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"an option is KEY=VALUE, got {item!r}")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def _ref(text: str):
    """A ref from the command line: a bare number N is ``#N``; the rest as in Python."""
    return int(text) if text.isdigit() else text


_REF_HELP = (
    "a commit: HEAD, HEAD~2, a branch (m32, m32~1), a tag, #7 (or 7), or a unique prefix "
    "of the commit id log shows"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 verify found problems,
    2 bad input or an error, printed as one ``error:`` line)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that left shows here, not as a warning at exit
        return code
    except BrokenPipeError:  # `oluo-lab log DIR | head`: the reader left; exit quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    from . import __version__
    from .cas import DEFAULT_GC_GRACE_S

    parser = argparse.ArgumentParser(prog="oluo-lab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"oluo-lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the end-to-end demo on the bundled GloVe sample")
    demo.add_argument("--out", type=Path, default=Path("oluo-demo"), help="output directory")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report")

    def lab_cmd(name: str, help_: str, urls: bool = True):
        p = sub.add_parser(name, help=help_, description=help_)
        if urls:
            p.add_argument(
                "dir",
                help="the lab directory, or a lab URL such as s3://bucket/prefix "
                "(never created by this command)",
            )
            p.add_argument(
                "-o",
                "--option",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="an object-store option (endpoint=..., region=..., allow_http=true; "
                "credentials best from the AWS_* environment variables); repeatable",
            )
        else:
            p.add_argument(
                "dir", type=Path, help="the lab directory (never created by this command)"
            )
        p.add_argument(
            "--json", action="store_true", help="machine-readable output (null for absent values)"
        )
        return p

    log = lab_cmd("log", "one row per commit, newest first")
    log.add_argument("--branch", default=None, help="only the history of this branch")
    runs = lab_cmd("runs", "the runs table: config, params, metrics and recall per commit")
    runs.add_argument("--branch", default=None, help="only the history of this branch")
    runs.add_argument("--query", default=None, help='a pandas query, e.g. "`params.M` >= 16"')
    runs.add_argument(
        "--timings", action="store_true", help="add QPS and latency measured at commit"
    )
    runs.add_argument("--csv", action="store_true", help="CSV output")
    show = lab_cmd("show", "a commit's manifest, params, metrics and evaluation")
    show.add_argument("ref", nargs="?", default="HEAD", help=_REF_HELP)
    compare = lab_cmd("compare", "params, metrics and recall of commits side by side")
    compare.add_argument("refs", nargs="+", metavar="REF", help=_REF_HELP + " (two or more)")
    diff = lab_cmd("diff", "what changed between two commits")
    diff.add_argument("a", help=_REF_HELP)
    diff.add_argument("b", nargs="?", default="HEAD", help=_REF_HELP + " (default HEAD)")
    diff.add_argument(
        "--k", type=int, default=None, help="neighbours per query (default: the evaluation's, 10)"
    )
    diff.add_argument("--no-semantic", action="store_true", help="skip the answer-level diff")
    verify = lab_cmd(
        "verify", "check every reachable book, manifest and index (exit 1 on problems)"
    )
    verify.add_argument("--sample", type=int, default=32, help="entries searched per commit")
    gc = lab_cmd("gc", "collect unreachable books (dry run unless --run)")
    gc.add_argument("--run", action="store_true", help="really delete")
    gc.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GC_GRACE_S,
        help="keep unreachable books younger than this (s)",
    )
    gc.add_argument(
        "--keep-last",
        type=int,
        default=None,
        help="keep the payloads of only the newest N commits of each branch",
    )
    lab_cmd(
        "repack",
        "convert a lab's directory store (one file per book) to a pack store, in place",
        urls=False,
    )
    tag = lab_cmd("tag", "list, set or delete tags (named checkpoints, kept by gc)")
    tag.add_argument("name", nargs="?", help="the tag (none: list the tags)")
    tag.add_argument("ref", nargs="?", default="HEAD", help=_REF_HELP + " (default HEAD)")
    tag.add_argument("--delete", action="store_true", help="delete the tag")
    tag.add_argument("--force", action="store_true", help="move an existing tag")
    branch = lab_cmd("branch", "list, create or delete branches")
    branch.add_argument("name", nargs="?", help="the branch (none: list the branches)")
    branch.add_argument("ref", nargs="?", default="HEAD", help=_REF_HELP + " (default HEAD)")
    branch.add_argument("--delete", action="store_true", help="delete the branch")
    branch.add_argument("--force", action="store_true", help="move an existing branch")

    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.out, report=not args.no_report)
    from .cas import ContentError
    from .snapshot import OluoPersistError
    from .snapshot.lab import Lab

    handler = {
        "log": _cmd_log,
        "runs": _cmd_runs,
        "show": _cmd_show,
        "compare": _cmd_compare,
        "diff": _cmd_diff,
        "verify": _cmd_verify,
        "gc": _cmd_gc,
        "tag": _cmd_tag,
        "branch": _cmd_branch,
        "repack": _cmd_repack,
    }[args.command]
    try:
        return handler(args, Lab.open(args.dir, **_store_options(getattr(args, "option", []))))
    except (OluoPersistError, ContentError, ValueError, KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
