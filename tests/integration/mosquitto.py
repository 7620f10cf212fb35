"""A real mosquitto broker for integration tests, on a free loopback port, restartable on the same port.

Use the `mosquitto` fixture (import it into the test module or a conftest), or `with Mosquitto() as broker:`.
`Mosquitto(secure=BrokerUsers(...))` runs it as a square's broker is meant to run: the repository's
scripts/mosquitto/laadplein.conf, the access list `laadplein broker-acl` writes, a password per device
(hashed by mosquitto_passwd) and, with `tls=True`, TLS with a certificate made for the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.cli.broker import write_passwords
from drivers.mqtt.acl import acl_text, broker_users
from tests.certs import self_signed
from tests.integration.ports import free_port

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD_BIN = "/usr/bin/mosquitto_passwd"
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "scripts" / "mosquitto" / "laadplein.conf"
# The shipped config's settings: for the whole broker, and for each of its listeners (taken from its
# first); its listeners' addresses and its file paths are the machine's own.
_GLOBAL_KEYS = ("per_listener_settings", "allow_anonymous")
_LISTENER_KEYS = ("use_username_as_clientid",)


@dataclass
class BrokerUsers:
    """A square's broker users: the access list for `root` and `bays` ((bay id, has a sensor)), a password each."""

    root: str
    bays: list[tuple[str, bool]]
    gateway_user: str = "laadplein"
    tls: bool = False
    passwords: dict[str, str] = field(default_factory=dict)  # filled in when the broker is set up
    ca_file: Path | None = None  # with tls: the CA (the broker's self-signed certificate) clients check

    @property
    def users(self) -> list[str]:
        return broker_users(self.bays, self.gateway_user)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA), and its key, as PEM files in `folder`."""
    return self_signed(folder / "broker.pem", folder / "broker-key.pem")


class Mosquitto:
    """One mosquitto process without persistence: a restart loses every retained message, as on a real gateway."""

    host = "127.0.0.1"

    def __init__(
        self, port: int | None = None, *, binary: str = MOSQUITTO_BIN, workdir: Path | None = None,
        secure: BrokerUsers | None = None,
    ) -> None:
        self.binary = binary
        self.secure = secure
        self.port = port or free_port(self.host)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _secure_lines(self, secure: BrokerUsers) -> list[str]:
        """The shipped config's settings, this test's files, and the users' passwords hashed by mosquitto_passwd."""
        shipped = [line.split() for line in SHIPPED_CONF.read_text().splitlines() if line.strip() and not line.startswith("#")]
        first = next(i for i, words in enumerate(shipped) if words[0] == "listener")
        second = next((i for i, words in enumerate(shipped) if words[0] == "listener" and i > first), len(shipped))
        lines = [" ".join(words) for words in shipped[:first] if words[0] in _GLOBAL_KEYS]
        per_listener = [" ".join(words) for words in shipped[first:second] if words[0] in _LISTENER_KEYS]
        assert len(lines) == len(_GLOBAL_KEYS), f"{SHIPPED_CONF} lost one of {_GLOBAL_KEYS}"
        assert len(per_listener) == len(_LISTENER_KEYS), f"{SHIPPED_CONF}'s first listener lost one of {_LISTENER_KEYS}"
        acl_path, passwd_path = self.workdir / "laadplein.acl", self.workdir / "laadplein.passwd"
        acl_path.write_text(acl_text(secure.root, secure.bays, secure.gateway_user))
        if not secure.passwords:
            plain = self.workdir / "passwords.txt"
            plain.unlink(missing_ok=True)
            secure.passwords = write_passwords(plain, secure.users)
            shutil.copy(plain, passwd_path)
            subprocess.run([MOSQUITTO_PASSWD_BIN, "-U", str(passwd_path)], check=True, capture_output=True, timeout=30)
        lines += [f"password_file {passwd_path}", f"acl_file {acl_path}", f"listener {self.port} {self.host}", *per_listener]
        if secure.tls:
            certs = self.workdir / "certs"
            cert, key = (certs / "broker.pem", certs / "broker-key.pem") if certs.exists() else make_certificate(certs)
            secure.ca_file = cert
            lines += [f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        return lines

    def _write_conf(self) -> None:
        head = self._secure_lines(self.secure) if self.secure is not None else [
            f"listener {self.port} {self.host}", "allow_anonymous true"]
        lines = [
            *head,
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
