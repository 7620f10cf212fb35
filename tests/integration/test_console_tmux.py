"""`laadplein console` in a real 80x24 terminal (tmux) against the real daemon, broker and simulated chargers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.integration.harness import REPO, Daemon, chargers, square_toml
from tests.integration.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)"),
]

TARGET = "console"


class Tmux:
    """One tmux server of our own (its own socket), so a technician's own tmux is never touched."""

    def __init__(self) -> None:
        self.socket = f"laadplein-test-{os.getpid()}-{time.monotonic_ns()}"

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, command: str, *, width: int, height: int) -> None:
        self.run("new-session", "-d", "-s", TARGET, "-x", str(width), "-y", str(height), "-c", str(REPO), command)

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", TARGET)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", TARGET, *keys)

    async def wait(self, predicate, timeout_s: float, what: str) -> str:
        """The pane's text once `predicate(text)` holds; fails with the last screen after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = await asyncio.to_thread(self.pane)
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not on the screen within {timeout_s} s; the screen:\n{text}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("kill-server")


def b01_charging_current(text: str) -> float | None:
    """B01's current from its block (its third line, "Charging 16.0/- A"), when it is blue."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        col = line.find("B01 BLUE")
        if col >= 0 and i + 2 < len(lines):
            m = re.match(r"Charging (\d+\.\d)/", lines[i + 2][col:])
            return float(m.group(1)) if m else None
    return None


async def test_console_follows_a_car_loses_the_daemon_and_resumes(tmp_path, mosquitto):
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=2)
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    tmux = Tmux()
    try:
        await asyncio.to_thread(d.start)
        console = f"{shlex.quote(sys.executable)} -m controller.cli console --api http://127.0.0.1:{api_port}"
        console += f" --token-file {shlex.quote(str(d.token_file))}"
        tmux.start(f"{console}; echo console-exit=$?; sleep 60", width=80, height=24)
        async with chargers(d, "CP01", "CP02") as sims:
            screen = await tmux.wait(lambda s: "B01 GREEN" in s and "● connected" in s, 10, "B01 green, connected")
            assert "B04" in screen and "Grid L1" in screen

            t0 = time.monotonic()
            await sims["CP01"].plug_in(1)
            screen = await tmux.wait(lambda s: "B01 BLUE" in s, 2.0, "B01 blue within 2 s of plugging in")
            left_s = max(0.1, t0 + 2.0 - time.monotonic())
            screen = await tmux.wait(lambda s: (b01_charging_current(s) or 0) > 0, left_s,
                                     "B01 charging with a current within 2 s of plugging in")
            assert all(len(line) <= 80 for line in screen.split("\n")) and len(screen.rstrip("\n").split("\n")) <= 24

            await asyncio.to_thread(d.kill)
            screen = await tmux.wait(lambda s: "reconnecting" in s, 3, "the reconnecting banner")
            assert f"not reachable at http://127.0.0.1:{api_port}" in screen
            assert "B01 BLUE" in screen, "the last screen stays, dimmed, under the banner"

            await asyncio.to_thread(d.start)
            await tmux.wait(lambda s: "reconnecting" not in s and "● connected" in s and "B01" in s and "B04" in s,
                            5, "the console resumed")

        tmux.keys("?")
        await tmux.wait(lambda s: "only electric vehicles" in s, 3, "the help")
        tmux.keys("?")
        await tmux.wait(lambda s: "only electric vehicles" not in s, 3, "the help hidden again")
        tmux.keys("q")
        screen = await tmux.wait(lambda s: "console-exit=" in s, 5, "the console's exit")
        assert "console-exit=0" in screen
    finally:
        tmux.kill()
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
