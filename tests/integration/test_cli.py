"""The operator's commands as a technician runs them (`python3 -m controller.cli ...` as a subprocess)
against the real daemon with a token, mosquitto, and simulated chargers of both OCPP versions.

One daemon serves the whole module: CP01 speaks 1.6 (simulated), CP02 2.0.1 (simulated), CP03 is a
bare 1.6 charger that implements nothing (every request gets a CALLERROR), CP04 came and went, and
CP05 never connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import websockets
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16

from drivers.contract.clock import parse_ts
from drivers.sim.charger16 import SimCharger
from drivers.sim.charger201 import SimCharger201
from tests.integration.harness import REPO, Daemon, square_toml
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-the-cli"
ZONE = "Europe/Amsterdam"


class BareCharger(ChargePoint16):
    """An OCPP 1.6 charger without a single handler: the ocpp library answers NotImplemented to all."""


def _not_the_bare_chargers_refusals(record: logging.LogRecord) -> bool:
    """The ocpp library logs every NotImplemented it answers with a traceback: noise in a failure's report."""
    return not (record.exc_info and isinstance(record.exc_info[1], OcppNotImplemented))


class Rig:
    """The chargers of the square, run by an event loop of their own in a thread while the tests run."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cli-rig", daemon=True)
        self.tasks: list[asyncio.Task] = []
        self.sims: dict[str, SimCharger | SimCharger201] = {}
        self.bare: websockets.ClientConnection | None = None

    def run(self, coro, timeout_s: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        url = self.daemon.ocpp_url
        for sim in (SimCharger(url, "CP01", connectors=2, meter_interval_s=1.0),
                    SimCharger201(url, "CP02", connectors=2, meter_interval_s=1.0)):
            ready = asyncio.Event()
            self.tasks.append(asyncio.create_task(sim.run(ready), name=f"sim-{sim.charger_id}"))
            await asyncio.wait_for(ready.wait(), timeout=10)
            self.sims[sim.charger_id] = sim
        self.bare = await self._connect_bare("CP03")
        gone = await self._connect_bare("CP04")
        await gone.close()

    async def _connect_bare(self, charger_id: str):
        ws = await websockets.connect(f"{self.daemon.ocpp_url}/{charger_id}", subprotocols=["ocpp1.6"])
        cp = BareCharger(charger_id, ws)
        self.tasks.append(asyncio.create_task(cp.start(), name=f"bare-{charger_id}"))
        await asyncio.wait_for(cp.call(call16.BootNotification(charge_point_model="Bare", charge_point_vendor="test")), 10)
        return ws

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.bare is not None:
                await self.bare.close()

        with contextlib.suppress(Exception):
            self.run(cancel(), timeout_s=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class Square:
    def __init__(self, daemon: Daemon, rig: Rig, folder: Path) -> None:
        self.daemon, self.rig, self.folder = daemon, rig, folder
        self.api = f"http://127.0.0.1:{daemon.api_port}"
        self.token_file = folder / "api-token"

    def cli(self, *args: str, config: bool = True, env: dict | None = None, timeout_s: float = 30) -> subprocess.CompletedProcess:
        """Run `laadplein ARGS` (with --config unless told not to) and return what it did."""
        argv = [sys.executable, "-m", "controller.cli", *args]
        if config:
            argv += ["--config", str(self.daemon.config_path)]
        return subprocess.run(argv, check=False, cwd=REPO, env=cli_env(env), capture_output=True, text=True, timeout=timeout_s)

    def popen(self, *args: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "controller.cli", *args, "--config", str(self.daemon.config_path)]
        return subprocess.Popen(argv, cwd=REPO, env=cli_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def online(self, charger_id: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, chargers = self.daemon.api("GET", "/api/chargers")
            if status == 200 and any(c["id"] == charger_id and c["online"] for c in chargers):
                return
            time.sleep(0.1)
        raise AssertionError(f"{charger_id} not online within {timeout_s} s")


def cli_env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LAADPLEIN_CONFIG", "NOTIFY_SOCKET")}
    return env | {"COLUMNS": "200", "PYTHONUNBUFFERED": "1"} | (extra or {})


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    broker = Mosquitto(workdir=folder / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    (folder / "api-token").write_text(TOKEN + "\n")
    (folder / "api-token").chmod(0o600)
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker.port, chargers=5,
                       token_file=str(folder / "api-token"))
    daemon = Daemon(folder / "daemon", text, api_port=api_port, ocpp_port=ocpp_port, token=TOKEN)
    daemon.start()
    rig = Rig(daemon)
    logging.getLogger("ocpp").addFilter(_not_the_bare_chargers_refusals)
    try:
        rig.start()
        yield Square(daemon, rig, folder)
    finally:
        rig.stop()
        logging.getLogger("ocpp").removeFilter(_not_the_bare_chargers_refusals)
        with contextlib.suppress(Exception):
            daemon.stop()
        broker.close()


def local(ts: str) -> str:
    return parse_ts(ts).astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")


class Lines:
    """A running command's output lines, read by threads as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, into in ((proc.stdout, self.out), (proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, i=into: [i.append(line.rstrip("\n")) for line in s], daemon=True).start()

    def wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{what}: not seen within {timeout_s} s\nout: {self.out[-20:]}\nerr: {self.err[-20:]}")
            time.sleep(0.05)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


# ---- finding the daemon ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["status"], ["bays", "--json"], ["events", "--follow"], ["sessions"],
                                  ["override", "B01", "--clear"], ["charger", "CP01", "reset"]])
def test_no_daemon_is_exit_3_with_a_message(square, argv):
    done = square.cli(*argv, "--api", f"http://127.0.0.1:{free_port()}", config=False)
    assert done.returncode == 3, done
    assert f"laadplein {argv[0]}: daemon not reachable at http://127.0.0.1:" in done.stderr
    assert done.stdout == ""


def test_a_wrong_or_missing_token_is_exit_4(square):
    wrong = square.folder / "wrong-token"
    wrong.write_text("not-the-token\n")
    done = square.cli("status", "--api", square.api, "--token-file", str(wrong), config=False)
    assert done.returncode == 4 and "refused the token" in done.stderr, done
    done = square.cli("override", "B01", "green", "--minutes", "5", "--api", square.api, config=False)
    assert done.returncode == 4 and "refused the token" in done.stderr, done
    # the right token, through --api, through --config, and through $LAADPLEIN_CONFIG
    assert square.cli("status", "--api", square.api, "--token-file", str(square.token_file), config=False).returncode == 0
    assert square.cli("status").returncode == 0
    env = {"LAADPLEIN_CONFIG": str(square.daemon.config_path)}
    done = square.cli("status", "--json", config=False, env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["site"] == "testplein"


def test_a_config_that_is_missing_or_wrong_is_exit_2(square):
    done = square.cli("status", "--config", str(square.folder / "nothing.toml"), config=False)
    assert done.returncode == 2 and "no config at" in done.stderr
    broken = square.folder / "broken.toml"
    broken.write_text(square.daemon.config_text.replace("[grid]", "[grid]\nfuse_a = 3"))
    done = square.cli("bays", "--config", str(broken), config=False)
    assert done.returncode == 2 and "fuse_a" in done.stderr, done


# ---- status and bays ---------------------------------------------------------------------------


def test_status_and_bays_show_the_square_in_its_zone(square):
    square.online("CP01")
    done = square.cli("status")
    assert done.returncode == 0, done
    first = done.stdout.splitlines()[0]
    assert first.startswith("testplein") and f"times in {ZONE}" in first
    stamp = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first).group(0)
    shown = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
    assert abs((shown - datetime.now(UTC)).total_seconds()) < 30  # local wall time, not UTC's
    assert "chargers: " in done.stdout and "B10" in done.stdout

    snap = json.loads(square.cli("status", "--json").stdout)
    assert snap["timezone"] == ZONE and len(snap["bays"]) == 10
    assert {c["id"]: c["ocpp"] for c in snap["chargers"]}["CP02"] == "ocpp2.0.1"

    bays = json.loads(square.cli("bays", "--json").stdout)
    assert [b["id"] for b in bays] == [f"B{n:02d}" for n in range(1, 11)]
    done = square.cli("bays")
    assert done.returncode == 0 and all(f"B{n:02d}" in done.stdout for n in range(1, 11))


# ---- override ----------------------------------------------------------------------------------


def test_override_holds_a_light_shows_its_end_in_local_time_and_clears(square):
    done = square.cli("override", "B02", "green", "--minutes", "30", "--why", "market stall", "--json")
    assert done.returncode == 0, done
    answer = json.loads(done.stdout)
    assert (answer["bay"], answer["color"], answer["why"]) == ("B02", "green", "market stall")

    done = square.cli("override", "B02", "off", "--minutes", "30", "--why", "paint")
    assert done.returncode == 0, done
    until = json.loads(square.cli("bays", "--json").stdout)[1]["override"]["until"]
    assert f"bay B02: held OFF until {local(until)} ({ZONE}): paint" in done.stdout
    bays = square.cli("bays").stdout
    assert f"times in {ZONE}" in bays and f"OFF until {local(until)}" in bays

    done = square.cli("override", "B02", "--clear")
    assert (done.returncode, done.stdout.strip()) == (0, "bay B02: override cleared")
    done = square.cli("override", "B02", "--clear", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"bay": "B02", "cleared": False}
    assert json.loads(square.cli("bays", "--json").stdout)[1]["override"] is None


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["override", "B99", "green", "--minutes", "5"], "no bay 'B99'"),
        (["override", "B99", "--clear"], "no bay 'B99'"),
        (["override", "B01", "purple", "--minutes", "5"], "COLOR (blue, green or off)"),
        (["override", "B01", "green"], "--minutes N"),
        (["override", "B01", "green", "--minutes", "0"], "minutes must be a number above 0"),
        (["override", "B01", "green", "--clear"], "or --clear"),
    ],
)
def test_override_mistakes_are_exit_2_with_the_reason(square, argv, words):
    done = square.cli(*argv)
    assert done.returncode == 2, done
    assert done.stderr.startswith("laadplein override: ") and words in done.stderr


# ---- charger commands --------------------------------------------------------------------------


def test_charger_commands_in_ocpp_16(square):
    square.online("CP01")
    done = square.cli("charger", "CP01", "unlock", "--connector", "2")
    assert (done.returncode, done.stdout.strip()) == (0, "CP01 (OCPP 1.6): UnlockConnector connector 2 Unlocked"), done
    done = square.cli("charger", "CP01", "trigger-status", "--json")
    assert done.returncode == 0, done
    answer = json.loads(done.stdout)
    assert answer["ok"] is True and answer["ocpp"] == "ocpp1.6"
    assert answer["results"] == [{"action": "TriggerMessage", "request": {"requestedMessage": "StatusNotification"},
                                  "ok": True, "answer": {"status": "Accepted"}}]
    done = square.cli("charger", "CP01", "reset")
    assert (done.returncode, done.stdout.strip()) == (0, "CP01 (OCPP 1.6): Reset Soft Accepted"), done
    square.online("CP01", timeout_s=30)  # the simulated charger reboots and comes back


def test_charger_commands_in_ocpp_201(square):
    square.online("CP02")
    done = square.cli("charger", "CP02", "trigger-status")
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == [
        "CP02 (OCPP 2.0.1): TriggerMessage StatusNotification EVSE 1 Accepted",
        "CP02 (OCPP 2.0.1): TriggerMessage StatusNotification EVSE 2 Accepted",
    ]
    done = square.cli("charger", "CP02", "unlock", "--connector", "1")
    assert (done.returncode, done.stdout.strip()) == (0, "CP02 (OCPP 2.0.1): UnlockConnector EVSE 1 Unlocked"), done

    # the charger refuses: a car charges on EVSE 2
    square.rig.run(square.rig.sims["CP02"].plug_in(2))
    done = square.cli("charger", "CP02", "unlock", "--connector", "2")
    assert done.returncode == 1, done
    assert done.stdout.strip() == "CP02 (OCPP 2.0.1): UnlockConnector EVSE 2 OngoingAuthorizedTransaction"
    done = square.cli("charger", "CP02", "reset", "--json")
    assert done.returncode == 0, done  # OnIdle with a car charging: Scheduled, which is a yes
    assert json.loads(done.stdout)["results"][0]["answer"]["status"] == "Scheduled"
    square.rig.run(square.rig.sims["CP02"].stop(2))
    square.online("CP02", timeout_s=30)


def test_a_callerror_not_connected_and_unknown_chargers(square):
    done = square.cli("charger", "CP03", "reset")
    assert done.returncode == 1, done
    assert "CP03 (OCPP 1.6): Reset Soft refused with CALLERROR NotImplemented: " in done.stderr
    done = square.cli("charger", "CP03", "reset", "--json")
    result = json.loads(done.stdout)["results"][0]
    assert done.returncode == 1 and result["error"]["http"] == 502 and result["error"]["code"] == "NotImplemented"

    done = square.cli("charger", "CP04", "trigger-status")
    assert done.returncode == 1 and "CP04 (OCPP 1.6): not connected" in done.stderr, done
    done = square.cli("charger", "CP05", "reset")
    assert done.returncode == 1 and "charger CP05 is not connected" in done.stderr, done

    done = square.cli("charger", "CP99", "reset")
    assert done.returncode == 2 and "no charger 'CP99' (this square has CP01, CP02, CP03, CP04, CP05)" in done.stderr
    done = square.cli("charger", "CP01", "unlock")
    assert done.returncode == 2 and "unlock needs --connector N" in done.stderr
    done = square.cli("charger", "CP02", "unlock", "--connector", "3")
    assert done.returncode == 2 and "no EVSE 3" in done.stderr


# ---- events and sessions -----------------------------------------------------------------------


def test_events_in_the_squares_zone_and_since(square):
    events = json.loads(square.cli("events", "--json").stdout)
    connected = next(e for e in events if e["kind"] == "charger_connected" and e["charger"] == "CP02")
    done = square.cli("events")
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == f"Events (times in {ZONE})"
    assert f"{local(connected['ts'])}  charger_connected" in done.stdout

    # a local time in the square's zone, to the second: the event is in at its second, out a second later
    at = local(connected["ts"])
    later = (datetime.strptime(at, "%Y-%m-%d %H:%M:%S") + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    ids = {e["id"] for e in json.loads(square.cli("events", "--json", "--since", at).stdout)}
    assert connected["id"] in ids
    ids = {e["id"] for e in json.loads(square.cli("events", "--json", "--since", later).stdout)}
    assert connected["id"] not in ids
    assert connected["id"] in {e["id"] for e in json.loads(square.cli("events", "--json", "--since", "1h").stdout)}
    ids = {e["id"] for e in json.loads(square.cli("events", "--json", "--since", connected["ts"]).stdout)}
    assert connected["id"] in ids

    done = square.cli("events", "--since", "yesterday")
    assert done.returncode == 2 and "cannot read 'yesterday'" in done.stderr and "10m" in done.stderr


def test_sessions_in_the_squares_zone_and_since(square):
    square.online("CP01", timeout_s=30)
    square.rig.run(square.rig.sims["CP01"].plug_in(1))
    sessions = json.loads(square.cli("sessions", "--json").stdout)
    mine = [s for s in sessions if s["charger"] == "CP01" and s["stopped"] is None]
    assert len(mine) == 1
    done = square.cli("sessions")
    assert done.returncode == 0 and f"Sessions (times in {ZONE})" in done.stdout
    assert local(mine[0]["started"]) in done.stdout
    assert any(s["charger"] == "CP01" for s in json.loads(square.cli("sessions", "--json", "--since", "10m").stdout))
    ahead = (datetime.now(ZoneInfo(ZONE)) + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    assert json.loads(square.cli("sessions", "--json", "--since", ahead).stdout) == []
    square.rig.run(square.rig.sims["CP01"].stop(1))


def test_events_follow_shows_what_happens_after_it_started(square):
    lines = Lines(square.popen("events", "--follow"))
    try:
        lines.wait(lambda: any("following" in line for line in lines.out), 15, "the header")
        assert lines.out[0].startswith(f"Events (times in {ZONE})")
        why = f"follow-{uuid.uuid4().hex[:8]}"
        assert square.daemon.api("PUT", "/api/bays/B05/override", {"color": "green", "minutes": 1, "why": why})[0] == 200
        mine = lambda: [line for line in lines.out if "override_set" in line and why in line]
        lines.wait(mine, 15, "the override's event")
        time.sleep(2.5)  # two more polls: still once
        assert len(mine()) == 1, mine()
        shown = datetime.strptime(mine()[0][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
        assert abs((shown - datetime.now(UTC)).total_seconds()) < 30  # the square's wall time
        assert lines.interrupt() == 0
    finally:
        if lines.proc.poll() is None:
            lines.proc.kill()
        square.daemon.api("DELETE", "/api/bays/B05/override")


def test_events_follow_survives_the_daemon_restarting(square):
    lines = Lines(square.popen("events", "--follow", "--json"))
    try:
        lines.wait(lambda: len(lines.out) >= 10, 15, "the last ten events")
        square.daemon.stop()
        lines.wait(lambda: any("daemon not reachable, retrying" in line for line in lines.err), 10, "the retry message")
        time.sleep(2.5)  # a few failed polls: one message all the same
        square.daemon.start()
        why = f"after-restart-{uuid.uuid4().hex[:8]}"
        assert square.daemon.api("PUT", "/api/bays/B06/override", {"color": "off", "minutes": 1, "why": why})[0] == 200
        lines.wait(lambda: any(why in line for line in lines.out), 15, "the override's event after the restart")
        time.sleep(1.5)
        assert lines.interrupt() == 0
        assert sum("daemon not reachable" in line for line in lines.err) == 1
        assert any("reachable again" in line for line in lines.err)
        seen = [json.loads(line) for line in lines.out]
        assert len({(e["id"], e["ts"]) for e in seen}) == len(seen)
    finally:
        if lines.proc.poll() is None:
            lines.proc.kill()
        if square.daemon.proc is None or square.daemon.proc.poll() is not None:
            square.daemon.start()
