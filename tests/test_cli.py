"""The main job: ``oluo-lab demo`` on the bundled sample."""

from __future__ import annotations

import subprocess
import sys

from oluo_lab.cli import GENERATION_1_NOTE, GENERATION_2_NOTE, main
from oluo_lab.snapshot import Lab, load_snapshot, read_head


def test_demo_runs_end_to_end(demo_run):
    out, text = demo_run.lab, demo_run.text
    assert demo_run.code == 0
    assert (out / "report" / "index.html").is_file()
    assert (out / "report" / "recall_qps.png").stat().st_size > 1000
    assert "answers identical = True" in text
    assert "queen" in text  # king's neighbours come from the real GloVe vectors
    recall = float(text.split("(id intersection): ")[1].split()[0])
    assert recall >= 0.95
    head = read_head(out)
    assert head is not None and head.generation == 2
    assert f"(generation 2, {head.cid.hex}): answers identical" in text
    from oluo_lab.cas import open_store

    engine, _, gen = load_snapshot(out, open_store(out / "cas"))
    assert gen == 2 and len(engine) == 20_000
    assert "king" in engine and "baths" in engine  # a query word added in generation 2


def test_demo_lab_holds_only_its_generations(demo_run):
    """The lab holds the two generations and nothing unreachable (the raw-vector ingest
    that shows content ids runs in memory), with the notes the report shows."""
    lab = Lab(demo_run.lab)
    log = lab.log()
    assert log["generation"].tolist() == [2, 1]
    assert log["note"].tolist() == [GENERATION_2_NOTE, GENERATION_1_NOTE]
    report = lab.verify(progress=False)
    assert report.ok and report.unreachable_books == 0


def test_demo_refuses_a_directory_that_already_holds_a_lab(demo_run, capsys):
    before = sorted(p.name for p in demo_run.lab.iterdir())
    assert main(["demo", "--out", str(demo_run.lab)]) == 2
    assert "already holds a lab" in capsys.readouterr().out
    assert sorted(p.name for p in demo_run.lab.iterdir()) == before


def test_console_entry_point_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "oluo_lab.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "demo" in proc.stdout
