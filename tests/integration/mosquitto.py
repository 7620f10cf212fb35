"""A real mosquitto broker for integration tests, on a free loopback port, restartable on the same port.

Use the `mosquitto` fixture (import it into the test module or a conftest), or `with Mosquitto() as broker:`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ports import free_port

MOSQUITTO_BIN = "/usr/sbin/mosquitto"


class Mosquitto:
    """One mosquitto process without persistence: a restart loses every retained message, as on a real gateway."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, *, binary: str = MOSQUITTO_BIN, workdir: Path | None = None) -> None:
        self.binary = binary
        self.port = port or free_port(self.host)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to a user that may not exist here
        self.conf_path.write_text("\n".join(lines) + "\n")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout_s: float = 5.0) -> None:
        """Start on self.port and return once it accepts TCP connections."""
        if self.running:
            return
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            found = shutil.which("mosquitto")
            pytest.fail(
                f"mosquitto is not installed at {self.binary}"
                + (f" (there is one at {found})" if found else "")
                + ": the MQTT integration tests need a real broker; install it with `apt-get install mosquitto`",
                pytrace=False,
            )
        self._write_conf()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self._proc.returncode} at start:\n{self.log_tail()}", pytrace=False)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not accept connections on port {self.port} within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop it (SIGTERM, then SIGKILL); the port stays reserved for start()."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def kill(self, timeout_s: float = 5.0) -> None:
        """Kill it without a word (SIGKILL: no clean disconnects, retained messages gone without
        persistence), as a crash or a power cut would; the port stays reserved for start()."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout_s)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started broker; stopped after the test."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir()
    with broker:
        yield broker
