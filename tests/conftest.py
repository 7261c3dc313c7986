"""Fixtures shared across test directories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class DemoRun:
    """One ``oluo-lab demo`` run: its lab directory, printed text and exit code."""

    lab: Path
    text: str
    code: int

    @property
    def report(self) -> Path:
        return self.lab / "report"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """The demo, run once per session (with its report) into a fresh ``oluo-demo``."""
    from oluo_lab.cli import run_demo

    lab = tmp_path_factory.mktemp("demo") / "oluo-demo"
    lines: list[str] = []
    code = run_demo(lab, echo=lines.append)
    return DemoRun(lab, "\n".join(lines), code)


@pytest.fixture(scope="session")
def s3():
    """One moto S3 server on 127.0.0.1 (ephemeral port) for the whole session, with a
    bucket; ``s3.url(name)`` gives each test its own prefix. Stopped at the end."""
    from oluo_lab.testing.s3 import MotoS3

    with MotoS3() as server:
        yield server
