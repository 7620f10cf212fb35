"""The processes of a tzi-OCTT run: the suite's checkout and its Python, a mosquitto, the daemon, and
one pytest run per case."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from scripts.octt.plan import SUITE_COMMIT, SUITE_URL, Outcome, case_file

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class RigError(Exception):
    """The run could not be set up; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "laadplein" / "octt"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], **kw) -> None:
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")


def checkout(given: Path | None) -> Path:
    """The suite's checkout: the one given, or a clone of SUITE_URL at SUITE_COMMIT in the cache."""
    if given is not None:
        if not (given / "1.6" / "trigger.py").is_file() or not (given / "2.0.1" / "trigger.py").is_file():
            raise RigError(f"{given} is not a tzi-OCTT checkout (no 1.6/trigger.py and 2.0.1/trigger.py)")
        return given.resolve()
    target = cache_dir() / "tzi-OCTT"
    if not (target / ".git").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "--quiet", SUITE_URL, str(target)])
    head = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
    if head != SUITE_COMMIT:
        _run(["git", "-C", str(target), "fetch", "--quiet", "origin"])
        _run(["git", "-C", str(target), "checkout", "--quiet", SUITE_COMMIT])
    return target


def suite_python(suite: Path, given: Path | None) -> Path:
    """A Python with the suite's requirements (it needs websockets 13, whose client API the gateway's
    newer websockets no longer has): the one given, or a venv in the cache made for its requirements."""
    if given is not None:
        return given
    requirements = suite / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = cache_dir() / f"venv-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        _run([sys.executable, "-m", "venv", "--clear", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], timeout=900)
        (venv / ".complete").touch()
    return python


class Mosquitto:
    """A mosquitto on a free loopback port, no persistence, anonymous (as the integration tests run it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(binary, os.X_OK):
            raise RigError("mosquitto is not installed: apt-get install mosquitto")
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _wait_port(self.port, self.proc, "mosquitto", self.workdir / "mosquitto.log")
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.proc)


class Gateway:
    """`laadplein run` on the square's config, until it is healthy; its token read from the file it made."""

    def __init__(self, folder: Path, config_text: str, api_port: int) -> None:
        self.folder = folder
        self.config = folder / "square.toml"
        self.config.write_text(config_text)
        self.log = folder / "daemon.log"
        self.api_port = api_port
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def __enter__(self) -> Self:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "run", "--config", str(self.config)],
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RigError(f"the gateway exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/health", timeout=1) as resp:
                    if resp.status == 200:
                        self.token = (self.folder / "api-token").read_text().strip()
                        return self
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.2)
        _stop(self.proc)
        raise RigError(f"the gateway was not healthy within 30 s:\n{_tail(self.log)}")

    def __exit__(self, *exc: object) -> None:
        _stop(self.proc)


def run_case(python: Path, suite: Path, case: str, env: dict[str, str], record: Path, timeout_s: float) -> list[Outcome]:
    """One case in its own pytest run (a hung case cannot hold up the others); its items' outcomes."""
    record.unlink(missing_ok=True)
    run_env = dict(os.environ, **env, OCTT_RECORD=str(record),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")])))
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider", "-p", "octt_record",
           str(case_file(case))]
    try:
        done = subprocess.run(cmd, check=False, cwd=suite, env=run_env, capture_output=True, text=True, timeout=timeout_s)
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    except subprocess.TimeoutExpired:
        tail = [f"no result within {timeout_s:g} s"]
    lines = record.read_text().splitlines() if record.exists() else []
    outcomes = [Outcome(case=case, **json.loads(line)) for line in lines]
    return outcomes or [Outcome(case=case, item=case, outcome="error", message=tail[0])]


def _wait_port(port: int, proc: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RigError(f"{name} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    _stop(proc)
    raise RigError(f"{name} did not listen on {port} within 10 s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
