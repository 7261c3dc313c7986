"""Crash soak: SIGKILL Lab operations >= 1,000 times at random points, plus every fault point.

Usage: python bench/crash_soak.py [--random 1000] [--seed 1] [--json out.json]

Uses the same harness as tests/reliability/test_crash.py (fork server, fresh-process
checks): after each kill the lab must load as exactly the previous or the new state,
verify clean apart from unreachable books, and gc must leave nothing unreachable and no
temp file. Prints per-operation counts (trials, killed, completed, outcome seen). Any
violation stops the run with the trial named.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

import crash_harness as ch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=1000, help="random-delay kills (default 1000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args(argv)

    root = ch.scratch_root(Path(tempfile.mkdtemp(prefix="oluo-soak-")))
    t0 = time.monotonic()
    try:
        with ch.ForkServer() as server:
            ws = ch.prepare(root, server)
            det = []
            for op in ch.OPS:
                det += ch.run_deterministic(ws, server, op)
            t_det = time.monotonic() - t0
            rnd = ch.run_random(ws, server, args.random, seed=args.seed)
            t_all = time.monotonic() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {
        "deterministic": ch.summarise(det),
        "random": ch.summarise(rnd),
        "deterministic_trials": len(det),
        "random_trials": len(rnd),
        "seconds": round(t_all, 1),
        "deterministic_seconds": round(t_det, 1),
    }
    print(
        f"crash soak: {len(det)} fault-point kills + {len(rnd)} random kills in {t_all:.0f} s, all passed"
    )
    for kind in ("deterministic", "random"):
        for op, counts in out[kind].items():
            print(
                f"  {kind:13s} {op:8s} " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
