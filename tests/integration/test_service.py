"""The real daemon under a stand-in for systemd: READY once it serves, watchdog pings while its loop runs,
none while it is frozen, and a clean SIGTERM that leaves the battery idle and the lights as they are.

The test plays the service manager: it binds the datagram socket named in $NOTIFY_SOCKET and
gives the daemon WATCHDOG_USEC=2000000, as WatchdogSec=2 would: it may then ping every 0.5 s at most.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Self

import pytest

from battery.model import BatteryModel
from drivers.sim.battery import SimBattery
from tests.integration.harness import (
    Daemon,
    MqttWatcher,
    chargers,
    square_toml,
    wait_until,
)
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

ROOT = "lp/testplein"
WATCHDOG_USEC = 2_000_000
PING_EVERY_S = 1.0  # the daemon pings every 0.5-0.7 s (rate limit + a 0.2 s cycle): 1 s is its bound
STOP_WITHIN_S = 5.0


@dataclass(frozen=True)
class Note:
    at: float  # time.monotonic() when it arrived
    lines: tuple[str, ...]


class NotifyListener:
    """systemd's end of $NOTIFY_SOCKET: a thread keeps every datagram with its arrival time.

    When READY=1 arrives it asks the admin API for its health at once, from the same thread,
    so the test knows whether the daemon really served when it said it was ready.
    """

    def __init__(self, path: Path, api_port: int) -> None:
        self.path = path
        self.api_port = api_port
        self.notes: list[Note] = []
        self.health_at_ready: list[int | str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            note = Note(time.monotonic(), tuple(data.decode().split("\n")))
            self.notes.append(note)
            if "READY=1" in note.lines:
                self.health_at_ready.append(self._health())

    def _health(self) -> int | str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/health", timeout=2) as resp:
                return resp.status
        except (OSError, urllib.error.URLError) as exc:
            return f"no answer: {exc}"

    def with_line(self, line: str, after: float = 0.0) -> list[Note]:
        return [n for n in self.notes if line in n.lines and n.at >= after]

    def pings(self, after: float = 0.0) -> list[float]:
        return [n.at for n in self.with_line("WATCHDOG=1", after)]


def gaps_s(times: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(times)]


def make(tmp_path: Path, mqtt_port: int, **kw) -> Daemon:
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mqtt_port, **kw)
    return Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)


def terminate(d: Daemon) -> tuple[int, float]:
    """SIGTERM, as `systemctl stop` sends it: the exit code and how long the daemon took."""
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(timeout=STOP_WITHIN_S + 5)
    return rc, time.monotonic() - t0


async def test_ready_watchdog_freeze_and_clean_stop(tmp_path, mosquitto):
    d = make(tmp_path, mosquitto.port, chargers=1)
    # The daemon's stderr goes to its log file: make that file "the journal's stream".
    d.log_path.touch()
    st = os.stat(d.log_path)
    with NotifyListener(tmp_path / "notify", d.api_port) as sd:
        try:
            env = sd.env | {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            await asyncio.to_thread(d.start, env=env)
            await wait_until(lambda: sd.with_line("READY=1"), 5, "READY=1")
            ready = sd.with_line("READY=1")[0]
            assert sd.health_at_ready == [200], "READY=1 came before the admin API answered"
            status = [line for line in ready.lines if line.startswith("STATUS=")]
            assert status and "1 charger(s)" in status[0] and "2 bay(s)" in status[0], ready.lines
            assert "cannot notify systemd" not in d.log()
            # journal form: a syslog priority in front, no time stamp (the journal has its own)
            assert "\n<6>INFO laadplein.daemon: square testplein up: OCPP 1.6J and 2.0.1 on ws://" in d.log()

            # Pings keep coming while the loop runs.
            await asyncio.sleep(4)
            running = sd.pings(after=ready.at)
            assert len(running) >= 4 and max(gaps_s(running)) <= PING_EVERY_S, gaps_s(running)

            # Frozen (as a hung loop would be): the pings stop, and systemd would act after 2 s.
            d.proc.send_signal(signal.SIGSTOP)
            t_stop = time.monotonic()
            await asyncio.sleep(2.5)
            late = sd.pings(after=t_stop + 0.2)  # one sent just before the signal may still be read
            t_cont = time.monotonic()
            d.proc.send_signal(signal.SIGCONT)
            assert late == [], f"{len(late)} ping(s) from a stopped process"

            # Thawed: the pings resume at once and keep their pace.
            await wait_until(lambda: sd.pings(after=t_cont), 2, "a ping after SIGCONT")
            await asyncio.sleep(2)
            resumed = sd.pings(after=t_cont)
            assert len(resumed) >= 2 and max(gaps_s(resumed)) <= PING_EVERY_S, gaps_s(resumed)
            assert d.proc.poll() is None

            t_term = time.monotonic()
            rc, took_s = await asyncio.to_thread(terminate, d)
            assert rc == 0 and took_s < STOP_WITHIN_S, f"exit {rc} after {took_s:.1f} s"
            await wait_until(lambda: sd.with_line("STOPPING=1"), 2, "STOPPING=1")
            assert [n.at >= t_term for n in sd.with_line("STOPPING=1")] == [True]  # once, after SIGTERM
            assert len(sd.with_line("READY=1")) == 1
            assert "stopped cleanly" in d.log()
        finally:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()


@pytest.fixture
async def sim_battery():
    model = BatteryModel(capacity_wh=40_000, max_charge_w=10_000, max_discharge_w=10_000, soc_pct=50.0,
                         soc_min_pct=10.0, soc_max_pct=95.0)
    sim = SimBattery(model=model, step_s=0.1)
    ready = asyncio.Event()
    task = asyncio.create_task(sim.run(ready), name="sim-battery")
    await asyncio.wait_for(ready.wait(), 10)
    yield sim
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_sigterm_leaves_the_battery_idle_and_the_lights_as_they_are(tmp_path, mosquitto, sim_battery):
    sim = sim_battery
    extra = (
        f'\n[battery]\ndriver = "sunspec"\nhost = "127.0.0.1"\nport = {sim.port}\nunit_id = 1\n'
        "capacity_kwh = 40\nmax_charge_w = 10000\nmax_discharge_w = 10000\n"
        "poll_s = 0.2\ntimeout_s = 0.5\nrevert_timeout_s = 60\n"
    )
    d = make(tmp_path, mosquitto.port, chargers=1, extra=extra)
    with NotifyListener(tmp_path / "notify", d.api_port) as sd:
        try:
            await asyncio.to_thread(d.start, env=sd.env)  # the loop keeps serving the simulators
            async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(d, "CP01"):
                await mq.wait_for(lambda s: s.topic == f"{ROOT}/gateway/status" and s.payload == b"online", 10, "online")
                await mq.wait_light("B01", "green", reason="open")
                await mq.wait_light("B02", "green", reason="open")
                # With no car the battery recharges from the spare grid: it is being steered.
                await wait_until(lambda: sim.model.setpoint_w < 0 and sim.point(124, "StorCtl_Mod") == 1, 15,
                                 "the battery recharging")
                lights_before = {b: mq.last_light(b) for b in ("B01", "B02")}

                t_term = time.monotonic()
                rc, took_s = await asyncio.to_thread(terminate, d)  # the loop serves the battery meanwhile
                assert rc == 0 and took_s < STOP_WITHIN_S, f"exit {rc} after {took_s:.1f} s"
                await mq.wait_for(
                    lambda s: s.at >= t_term and s.topic == f"{ROOT}/gateway/status" and s.payload == b"offline",
                    5, "offline from the clean shutdown",
                )
                await asyncio.sleep(0.5)  # anything else the daemon sent on its way out has arrived by now
                new_lights = [s for s in mq.seen if s.at >= t_term and "/light" in s.topic]
                assert new_lights == [], [(s.topic, s.payload) for s in new_lights]
                assert {b: mq.last_light(b) for b in ("B01", "B02")} == lights_before

            # Idle, written on the way out: the 60 s revert timeout cannot have done it this soon.
            assert sim.point(124, "StorCtl_Mod") == 0
            assert sim.point(124, "InWRte") == 0 and sim.point(124, "OutWRte") == 0
            assert sim.model.setpoint_w == 0 and not sim.model.reverted
            assert len(sd.with_line("STOPPING=1", after=t_term)) == 1
            assert "left idle" in d.log()
        finally:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
