"""Headless Chromium for the browser check: rendered-DOM measurements and screenshots.

``check_page`` loads a copy of an HTML file with ``page_check.js`` injected, lets
Chromium lay it out and run the script on the load event, and reads the script's JSON
findings back out of ``--dump-dom``. All network lookups fail at once (the pages must
stand alone), and every run gets a fresh, throwaway profile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK_JS = HERE / "page_check.js"
_RESULT = re.compile(
    r'<script type="application/json" id="oluo-page-check">(.*?)</script>', re.DOTALL
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    # the pages must stand alone: any host name fails to resolve, at once
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: ``$OLUO_LAB_CHROMIUM`` or the first on PATH."""
    env = os.environ.get("OLUO_LAB_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(chromium: str, args: list[str], timeout: float = 120.0) -> str:
    with tempfile.TemporaryDirectory(prefix="oluo-chromium-") as profile:
        proc = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def check_page(chromium: str, html: Path, width: int = 1280, height: int = 900) -> dict:
    """Findings of ``page_check.js`` for ``html`` rendered in a ``width`` x ``height`` window.

    The instrumented copy is written beside ``html`` (so relative image links resolve)
    and removed afterwards.
    """
    page = html.read_text(encoding="utf-8")
    script = f"<script>\n{CHECK_JS.read_text(encoding='utf-8')}\n</script>"
    at = page.rfind("</body>")
    page = page[:at] + script + page[at:] if at >= 0 else page + script
    probe = html.with_name(f".{html.stem}.page-check.html")
    probe.write_text(page, encoding="utf-8")
    try:
        dom = _run(
            chromium,
            [
                f"--window-size={width},{height}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.as_uri(),
            ],
        )
    finally:
        probe.unlink(missing_ok=True)
    found = _RESULT.search(dom)
    if found is None:
        raise RuntimeError(f"the page check did not run on {html.name} (no findings in the DOM)")
    return json.loads(found.group(1))


def screenshot(chromium: str, html: Path, png: Path, width: int = 1280, height: int = 900) -> Path:
    """A ``width`` x ``height`` screenshot of ``html`` (pass the page's scroll height for
    all of it)."""
    _run(
        chromium,
        [
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"--screenshot={png}",
            html.as_uri(),
        ],
    )
    return png
