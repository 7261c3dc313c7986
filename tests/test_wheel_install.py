"""``pip install oluo-lab`` (a wheel, no source checkout) runs ``oluo-lab demo``.

Builds the wheel offline with the build backend, installs it without dependencies into
a fresh virtual environment that sees this interpreter's packages (numpy, faiss, ...),
and runs the demo's console script from a directory outside the repository. The
package, its bundled data and the report must all come from the wheel: the test
asserts that the venv imports ``oluo_lab`` and finds the GloVe sample under the venv
(the editable install's path to a checkout sits later on ``sys.path``, and a wheel
without its data would fail the demo).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from oluo_lab.snapshot import read_head

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="the build backend (dev extra) is not installed")
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        cwd=dist,
    )
    (built,) = dist.glob("oluo_lab-*.whl")
    return built


def test_wheel_ships_the_package_and_its_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "oluo_lab/cli.py",
        "oluo_lab/report.py",
        "oluo_lab/_data/glove-6b-50d-sample/SHA256SUMS",
        "oluo_lab/_data/glove-6b-50d-sample/base.npy",
    ):
        assert needed in names
    assert not any(n.startswith(("notebooks/", "tests/", "data/")) for n in names)


def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        tmp_path,
    )
    python = venv / "bin" / "python"
    # pip itself comes from the system site-packages the venv sees; it installs into the venv
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            "-q",
            str(wheel),
        ],
        tmp_path,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "OLUO_LAB_DATA", "PYTHONHOME", "PYTHONSAFEPATH")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"

    where = _run(
        [
            str(python),
            "-c",
            "import oluo_lab, oluo_lab.datasets as d; print(oluo_lab.__file__); print(d.sample_dir())",
        ],
        work,
        env,
    ).stdout.split("\n")
    site = venv.resolve()
    assert Path(where[0]).resolve().is_relative_to(site), where[0]
    assert Path(where[1]).resolve().is_relative_to(site), where[1]

    demo = _run([str(venv / "bin" / "oluo-lab"), "demo"], work, env)
    assert "answers identical = True" in demo.stdout
    lab = work / "oluo-demo"
    head = read_head(lab)
    assert head is not None and head.generation == 2
    page = (lab / "report" / "index.html").read_text(encoding="utf-8")
    assert head.cid.hex in page
    assert (lab / "report" / "recall_qps.png").stat().st_size > 1000
    for path in (str(ROOT), str(work), str(tmp_path)):
        assert path not in page
    # nothing on stderr but progress bars: no warnings, no kernel chatter
    noise = [
        line
        for line in demo.stderr.replace("\r", "\n").splitlines()
        if line.strip() and "|" not in line
    ]
    assert noise == [], noise
    assert "warning" not in demo.stderr.lower()
