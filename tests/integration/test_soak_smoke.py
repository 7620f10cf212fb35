"""The soak bench in small: a minute and a half of the busy square with a fault every 20 s.

Runs `bench/soak.py` as a script, as a technician would, and checks that it comes to its
figures: every fault accounted for, no session lost, the grid, memory and light figures printed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.harness import REPO

pytestmark = pytest.mark.integration


def figure(pattern: str, text: str) -> re.Match:
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"no line matching {pattern!r} in:\n{text}"
    return found


@pytest.mark.timeout(240)
def test_a_short_soak_runs_its_faults_and_loses_no_session():
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "1.5", "--fault-every-s", "20", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=220, check=False,
    )
    out = run.stdout
    print(out)
    assert run.returncode in (0, 1), f"the soak did not come to its figures (exit {run.returncode}):\n{out}\n{run.stderr[-3000:]}"
    injected = int(figure(r"^faults: (\d+) injected, \d+ survived$", out).group(1))
    assert injected >= 3, out
    assert len(re.findall(r"^\[\d\d:\d\d\] fault \d+/\d+ ", out, re.MULTILINE)) == injected, out
    confirmed, found, lost = map(int, figure(r"^sessions: confirmed (\d+) / found (\d+) / lost (\d+)", out).groups())
    assert confirmed > 0, "no car charged: the soak measured nothing"
    assert (found, lost) == (confirmed, 0), out
    figure(r"^grid-limit overshoots \(draw above 80 A for longer than [\d.]+ s\): \d+ ", out)
    figure(r"^daemon memory \(RSS of pid \d+, .*\): [\d.]+ MB -> [\d.]+ MB, growth [-+][\d.]+ %", out)
    figure(r"^light commands published: [1-9]\d* ", out)
    figure(r"^daemon log WARNING\+: \d+ lines", out)
    verdicts = re.findall(r"^verdict: (.+): (PASS|FAIL)$", out, re.MULTILINE)
    assert [v[0].split(" ")[0] for v in verdicts] == ["grid-limit", "sessions", "daemon", "faults"], out
    assert (run.returncode == 0) == all(ok == "PASS" for _, ok in verdicts), out
