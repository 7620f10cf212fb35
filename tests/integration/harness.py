"""Test harness: the real daemon as a process, an MQTT watcher, and a square config on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

REPO = Path(__file__).resolve().parents[2]


def square_toml(
    *,
    ocpp_port: int,
    api_port: int,
    mqtt_port: int,
    chargers: int = 2,
    connectors: int = 2,
    sensors: bool = True,
    password: str | None = None,
    signage: dict | None = None,
    extra: str = "",
    token_file: str | None = None,
    auth: str = "free",
    grid_limit_a: float = 80,
    control: str = "period_s = 0.2\n",
    ocpp: str = "",
) -> str:
    sig = {"min_free_ev_bays": 0, "grace_s": 3, "min_dwell_s": 0, "startup_wait_s": 5, "offline_after_s": 2}
    sig.update(signage or {})
    lines = [
        '[site]\nid = "testplein"\nname = "Test square"\ntimezone = "Europe/Amsterdam"\n',
        f"[grid]\nphases = 3\nlimit_a = {grid_limit_a:g}\n",
        f'[ocpp]\nhost = "127.0.0.1"\nport = {ocpp_port}\npath = "/ocpp"\nauth = "{auth}"\nheartbeat_interval_s = 60\ncall_timeout_s = 5\n' + ocpp,
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "lp"\n',
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n' + (f'token_file = "{token_file}"\n' if token_file else ""),
        '[storage]\npath = "state/laadplein.db"\n',
        "[control]\n" + control,
        "[signage]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sig.items()),
    ]
    bay = 0
    for c in range(1, chargers + 1):
        pw = f'password = "{password}"\n' if password else ""
        lines.append(f'[[chargers]]\nid = "CP{c:02d}"\nmax_current_a = 32\nphases = 3\nconnectors = {connectors}\n{pw}')
    for c in range(1, chargers + 1):
        for n in range(1, connectors + 1):
            bay += 1
            lines.append(
                f'[[bays]]\nid = "B{bay:02d}"\ncharger = "CP{c:02d}"\nconnector = {n}\nsensor = {"true" if sensors else "false"}\n'
            )
    return "\n".join(lines) + extra


@dataclass
class Daemon:
    """`laadplein run` as a child process with its config in `folder`."""

    folder: Path
    config_text: str
    api_port: int
    ocpp_port: int
    token: str | None = None
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    runs: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path = self.folder / "square.toml"
        self.config_path.write_text(self.config_text)
        self.log_path = self.folder / "daemon.log"

    def start(self, timeout_s: float = 20.0, env: dict[str, str] | None = None) -> None:
        self.runs += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== run {self.runs} =====\n")
        log.flush()
        # A test run under systemd (a CI runner) must not hand its own service's sockets on.
        inherited = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
        env = dict(inherited, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", "--config", str(self.config_path)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status, _ = self.api("GET", "/api/health", timeout_s=1)
                if status == 200:
                    # Every other request needs the token the daemon made (or found) at its start.
                    self.token = self.token_file.read_text(encoding="utf-8").strip()
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.proc.kill()  # never leave a half-started daemon behind
        self.proc.wait(timeout=5)
        raise RuntimeError(f"daemon not healthy within {timeout_s} s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def token_file(self) -> Path:
        """The admin API's token file, as the daemon finds it in its config."""
        from config.loader import load_config

        return load_config(self.config_path).api_token_file

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: object = None, *, token: str | None = None, timeout_s: float = 5.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    async def aapi(self, method: str, path: str, body: object = None, **kw):
        return await asyncio.to_thread(self.api, method, path, body, **kw)

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"


@dataclass
class Seen:
    at: float
    topic: str
    payload: bytes
    retained: bool

    def json(self):
        return json.loads(self.payload)


class MqttWatcher:
    """Subscribes to everything under a root and keeps what it saw, with arrival times."""

    def __init__(self, port: int, root: str) -> None:
        self.port = port
        self.root = root
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> "MqttWatcher":
        self._task = asyncio.create_task(self._run(), name="mqtt-watcher")
        await asyncio.wait_for(self._ready.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, timeout=5) as client:
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self._ready.set()
                    async for msg in client.messages:
                        async with self._changed:
                            self.seen.append(Seen(time.monotonic(), str(msg.topic), bytes(msg.payload), msg.retain))
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.3)

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, timeout=5) as client:
            await client.publish(f"{self.root}/{topic}", payload, qos=1, retain=retain)

    def lights(self, bay: str) -> list[dict]:
        topic = f"{self.root}/bays/{bay}/light"
        return [s.json() for s in self.seen if s.topic == topic]

    def last_light(self, bay: str) -> dict | None:
        lights = self.lights(bay)
        return lights[-1] if lights else None

    async def wait_for(self, predicate, timeout_s: float = 10.0, what: str = "a message"):
        """The first message (from now on or already seen) for which predicate(seen) is true."""
        deadline = time.monotonic() + timeout_s
        index = 0
        async with self._changed:
            while True:
                for s in self.seen[index:]:
                    if predicate(s):
                        return s
                index = len(self.seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = "\n".join(f"  {x.topic} {x.payload[:160]!r}" for x in self.seen[-15:])
                    raise AssertionError(f"no {what} within {timeout_s} s; last messages:\n{recent}")
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=left)
                except TimeoutError:
                    pass

    async def wait_light(self, bay: str, color: str, *, reason: str | None = None, after: float = 0.0, timeout_s: float = 10.0):
        topic = f"{self.root}/bays/{bay}/light"

        def match(s: Seen) -> bool:
            if s.topic != topic or s.at < after:
                return False
            p = s.json()
            return p["color"] == color and (reason is None or p["reason"] == reason)

        return await self.wait_for(match, timeout_s, f"{color} ({reason or 'any reason'}) light on {bay}")


async def wait_until(condition, timeout_s: float = 10.0, what: str = "the condition") -> None:
    """Poll `condition()` (sync or async) every 50 ms until it is true."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def chargers(daemon: Daemon, *ids: str, connectors: int = 2, **kw):
    """Simulated chargers connected to the daemon, each run by a task of one TaskGroup."""
    from drivers.sim.charger16 import SimCharger

    sims = {cid: SimCharger(daemon.ocpp_url, cid, connectors=connectors, meter_interval_s=1.0, **kw) for cid in ids}
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for sim in sims.values():
            ready = asyncio.Event()
            tasks.append(tg.create_task(sim.run(ready), name=f"sim-{sim.charger_id}"))
            await asyncio.wait_for(ready.wait(), timeout=10)
        try:
            yield sims
        finally:
            for t in tasks:
                t.cancel()


class Recorder:
    """Collects every report a driver makes through its callback (battery statuses, meter readings)
    and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list = []
        self._news = asyncio.Event()

    def __call__(self, report) -> None:
        self.seen.append(report)
        self._news.set()

    async def wait_for(self, pred, timeout_s: float):
        async with asyncio.timeout(timeout_s):
            while True:
                if self.seen and pred(self.seen[-1]):
                    return self.seen[-1]
                self._news.clear()
                await self._news.wait()
