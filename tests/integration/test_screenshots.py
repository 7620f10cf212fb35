"""`scripts/screenshots.py` still makes the README's pictures of the console: run as a maintainer runs it."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import time

import pytest

from config.loader import load_config
from controller.cli.demo import example_config_path
from tests.integration.harness import REPO

pytestmark = pytest.mark.integration


def test_screenshots_script_writes_both_consoles_as_svg(tmp_path):
    out = tmp_path / "img"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scripts.screenshots", "--out", str(out), "--timeout-s", "150"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    bay_ids = [b.id for b in load_config(example_config_path()).bays]
    for name in ("console-80x24.svg", "console-120x40.svg"):
        path = out / name
        assert f"wrote {path}" in done.stdout, done.stdout
        svg = path.read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>"), svg[:200]
        shown = html.unescape(svg).replace("\N{NO-BREAK SPACE}", " ")  # rich writes every space as &#160;
        assert "laadplein console" in shown
        for bay_id in bay_ids:
            assert re.search(rf"\b{bay_id}\b", shown), f"{name}: no bay {bay_id}"
        assert re.search(r"\bBLUE\b", shown) and re.search(r"\bGREEN\b", shown), name
        assert "Charging" in shown, name
    assert took < 200, f"the screenshots took {took:.0f} s"
