"""The main job: ``oluo-lab demo`` on the bundled sample."""

from __future__ import annotations

import subprocess
import sys

from oluo_lab.cli import main
from oluo_lab.snapshot import load_snapshot, read_head


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (out / "report" / "quickstart.html").is_file()
    assert (out / "report" / "recall_qps.png").stat().st_size > 1000
    html = (out / "report" / "quickstart.html").read_text()
    assert str(tmp_path) not in html  # no absolute paths in the report
    assert "answers identical = True" in text
    assert "queen" in text  # king's neighbours come from the real GloVe vectors
    recall = float(text.split("(id intersection): ")[1].split()[0])
    assert recall >= 0.95
    head = read_head(out)
    assert head is not None and head.generation == 2
    from oluo_lab.cas import DirStore

    engine, _, gen = load_snapshot(out, DirStore(out / "cas"))
    assert gen == 2 and len(engine) == 20_000
    assert "king" in engine and "baths" in engine  # a query word added in generation 2


def test_demo_refuses_a_directory_that_already_holds_a_lab(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-report"]) == 0
    assert main(["demo", "--out", str(out), "--no-report"]) == 2
    assert "already holds a lab" in capsys.readouterr().out


def test_console_entry_point_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "oluo_lab.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "demo" in proc.stdout
