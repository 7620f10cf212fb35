"""The rig a scenario runs on: the real daemon, a broker, and the square's devices.

`SimRig` plays every device with the simulators (the default, and what CI runs); its square is
mixed: every second charger (by id) speaks OCPP 2.0.1, the others 1.6.
`HardwareRig` drives real equipment described in a TOML file: it does what the hardware
allows (a sensor is only MQTT, so the rig can always play it) and raises `Unsupported`
for the rest, which the scenario turns into a skip. Only a rig that plays the chargers can
show what they saw (limits applied, messages answered): the failover scenarios' evidence.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from config.loader import load_config_text
from drivers.sim.charger_core import SimChargerCore
from drivers.sim.outbox import Confirmed
from drivers.sim.square import SimSquare, ocpp_versions
from tests.integration.harness import Daemon, MqttWatcher, wait_until
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port

ROOT = "lp/hilplein"


class Unsupported(Exception):
    """The rig cannot do this on its hardware (no EV emulator, no way to cut the battery...)."""


@dataclass
class Observation:
    """One line of a scenario's report: what it looked for and what it saw."""

    t_s: float
    what: str
    expected: str
    seen: str
    ok: bool


@dataclass
class Report:
    """What a scenario saw, as a table."""

    name: str
    rig: str
    started: float = field(default_factory=time.monotonic)
    rows: list[Observation] = field(default_factory=list)

    def saw(self, what: str, expected: str, seen: str, ok: bool = True) -> None:
        self.rows.append(Observation(time.monotonic() - self.started, what, expected, seen, ok))

    def table(self) -> str:
        head = ("t (s)", "what", "expected", "seen", "ok")
        body = [(f"{r.t_s:6.1f}", r.what, r.expected, r.seen, "yes" if r.ok else "NO") for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
        return "\n".join([f"scenario {self.name} on {self.rig}", line(head), line(["-" * w for w in widths])]
                         + [line(b) for b in body])


def rig_square_toml(*, ocpp_port: int, api_port: int, mqtt_host: str, mqtt_port: int, battery: tuple[str, int] | None,
                    chargers: list[dict], signage: dict, grid_limit_a: float = 80, control: dict | None = None) -> str:
    """The daemon's config for the rig's square: every bay with a sensor.

    `grid_limit_a` (A per phase) and `control` (keys of `[control]`, over `period_s = 0.5`) make
    the variants a scenario needs, such as a short `lease_s` or a small grid.
    """
    control = {"period_s": 0.5, **(control or {})}
    parts = [
        '[site]\nid = "hilplein"\nname = "HIL rig"\ntimezone = "Europe/Amsterdam"\n',
        f"[grid]\nphases = 3\nlimit_a = {grid_limit_a:g}\n",
        f'[ocpp]\nhost = "0.0.0.0"\nport = {ocpp_port}\npath = "/ocpp"\nheartbeat_interval_s = 60\ncall_timeout_s = 5\n',
        f'[mqtt]\nhost = "{mqtt_host}"\nport = {mqtt_port}\ntopic_prefix = "lp"\n',
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n',
        '[storage]\npath = "state/laadplein.db"\n',
        "[control]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in control.items()),
        "[signage]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in signage.items()),
    ]
    if battery is not None:
        parts.append(
            f'[battery]\ndriver = "sunspec"\nhost = "{battery[0]}"\nport = {battery[1]}\nunit_id = 1\n'
            "capacity_kwh = 20\nmax_charge_w = 10000\nmax_discharge_w = 10000\n"
        )
    n = 0
    for c in chargers:
        # The rig listens on every address: a charger without a password is let in only when stated insecure.
        pw = f'password = "{c["password"]}"\n' if c.get("password") else "insecure = true\n"
        parts.append(f'[[chargers]]\nid = "{c["id"]}"\nmax_current_a = {c.get("max_current_a", 32)}\n'
                     f'connectors = {c.get("connectors", 2)}\n{pw}')
    for c in chargers:
        for k in range(1, c.get("connectors", 2) + 1):
            n += 1
            parts.append(f'[[bays]]\nid = "B{n:02d}"\ncharger = "{c["id"]}"\nconnector = {k}\nsensor = true\n')
    return "\n".join(parts)


SIGNAGE = {"min_free_ev_bays": 1, "grace_s": 3, "min_dwell_s": 0, "startup_wait_s": 5, "offline_after_s": 2}
SIM_CHARGERS = [{"id": "CP01", "connectors": 2}, {"id": "CP02", "connectors": 2}]


def mixed_versions(charger_ids: list[str]) -> dict[str, str]:
    """Charger id -> OCPP version for a mixed square: the 2nd, 4th, ... charger by id speaks 2.0.1."""
    return ocpp_versions(charger_ids, "mixed")


class Rig:
    """What every rig offers a scenario."""

    name = "rig"
    daemon: Daemon
    watcher: MqttWatcher

    def bays(self) -> list[str]:
        return [b.id for b in self.cfg.bays]

    def bay_of(self, bay_id: str) -> tuple[str, int]:
        bay = self.cfg.bay(bay_id)
        return bay.charger, bay.connector

    async def api(self, method: str, path: str, body: object = None):
        return await self.daemon.aapi(method, path, body)

    async def park(self, bay_id: str) -> None:
        """A car (of any kind) stands on the bay: its sensor says so."""
        await self.watcher.publish(f"bays/{bay_id}/occupancy", json.dumps({"occupied": True}), retain=True)

    async def leave(self, bay_id: str) -> None:
        await self.watcher.publish(f"bays/{bay_id}/occupancy", json.dumps({"occupied": False}), retain=True)

    async def kill_daemon(self) -> None:
        self.daemon.kill()

    async def start_daemon(self) -> None:
        await asyncio.to_thread(self.daemon.start)

    async def plug_in(self, bay_id: str) -> int | str:
        """A car plugs in and starts charging: its transaction id (OCPP 2.0.1: the charger's string)."""
        raise Unsupported("no way to plug a car in on this rig")

    async def stop_and_unplug(self, bay_id: str) -> None:
        raise Unsupported("no way to unplug a car on this rig")

    async def cut_battery(self) -> None:
        raise Unsupported("no way to cut the battery link on this rig")

    async def restore_battery(self) -> None:
        raise Unsupported("no way to restore the battery link on this rig")

    async def disconnect_charger(self, charger_id: str) -> None:
        raise Unsupported("no way to cut a charger's connection on this rig")

    async def reconnect_charger(self, charger_id: str) -> None:
        raise Unsupported("no way to restore a charger's connection on this rig")

    async def restart_broker(self, down_s: float) -> None:
        raise Unsupported("no way to restart the broker on this rig")

    async def kill_broker(self, down_s: float) -> None:
        """SIGKILL the broker (no clean disconnect, no persistence), start it again after `down_s`."""
        raise Unsupported("no way to kill the broker on this rig")

    # What the chargers themselves saw: only a rig that plays them can tell.

    def applied_log(self, bay_id: str) -> list[tuple[float, float]]:
        """(monotonic s, A) every change of the limit the bay's charger applied to its car, from the start."""
        raise Unsupported("the chargers' applied limits are not visible on this rig")

    def lease_in_force(self, bay_id: str) -> tuple[float | None, float] | None:
        """The lease the bay's charger holds now: (monotonic s it runs out or None, highest limit A); None without one."""
        raise Unsupported("the chargers' charging profiles are not visible on this rig")

    def transaction_of(self, bay_id: str) -> int | str | None:
        """The transaction the bay's charger runs now (None: none)."""
        raise Unsupported("the chargers' transactions are not visible on this rig")

    def confirmed(self) -> list[tuple[str, Confirmed]]:
        """(charger id, message) for every transaction message a charger got an answer to, in order."""
        raise Unsupported("the chargers' message logs are not visible on this rig")

    def backlog(self) -> int:
        """Transaction messages the chargers still hold for the gateway."""
        raise Unsupported("the chargers' message queues are not visible on this rig")

    def link_log(self, charger_id: str) -> list[tuple[float, bool]]:
        """(monotonic s, up) every time the charger's link to the daemon opened or ended."""
        raise Unsupported("the chargers' links are not visible on this rig")

    def chargers_connected(self) -> bool:
        """Every charger's link to the daemon is up (booted)."""
        raise Unsupported("the chargers' links are not visible on this rig")

    async def stored_meter_samples(self) -> list[tuple[int | str | None, str, float | None]]:
        """(transaction id as the charger knows it, time, energy Wh) of every meter sample in the daemon's database.

        Read-only, straight from SQLite: the admin API has no per-session meter values. An OCPP
        2.0.1 charger names its transactions itself; the daemon keeps that name with the session.
        """
        path = self.daemon.folder / "state" / "laadplein.db"

        def read() -> list[tuple[int | str | None, str, float | None]]:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
                if "charger_tx" not in columns:
                    return [tuple(r) for r in db.execute("SELECT tx_id, at, energy_wh FROM meter_samples")]
                return [tuple(r) for r in db.execute(
                    "SELECT COALESCE(s.charger_tx, m.tx_id), m.at, m.energy_wh FROM meter_samples m"
                    " LEFT JOIN sessions s ON s.id = m.tx_id")]

        return await asyncio.to_thread(read)


class SimRig(Rig):
    """The daemon against mosquitto and the simulated devices, all on this machine."""

    name = "simulator"

    def __init__(self, folder: Path, *, reaction_s: float = 0.5, **square) -> None:
        """`square`: `grid_limit_a` and `control` for rig_square_toml; `reaction_s`: the chargers' (s)."""
        self.folder = folder
        (folder / "mosquitto").mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(workdir=folder / "mosquitto")
        self.ocpp_port, self.api_port = free_port(), free_port()
        self.battery_port = free_port()
        self.reaction_s = reaction_s
        self.square = square

    async def __aenter__(self) -> SimRig:
        self.broker.start()
        text = rig_square_toml(
            ocpp_port=self.ocpp_port, api_port=self.api_port, mqtt_host="127.0.0.1", mqtt_port=self.broker.port,
            battery=("127.0.0.1", self.battery_port), chargers=SIM_CHARGERS, signage=SIGNAGE, **self.square,
        )
        self.cfg = load_config_text(text, "rig.toml", base_dir=self.folder)
        self.daemon = Daemon(self.folder / "daemon", text, api_port=self.api_port, ocpp_port=self.ocpp_port)
        await asyncio.to_thread(self.daemon.start)
        self.versions = mixed_versions([c.id for c in self.cfg.chargers])
        self.sim = SimSquare(self.cfg, [], ocpp_url=self.daemon.ocpp_url, battery_port=self.battery_port,
                             control_port=None, reaction_s=self.reaction_s, ocpp_versions=self.versions)
        self._sim_task = asyncio.create_task(self._run_sim(), name="hil-sim")
        ready = asyncio.Event()
        self._sim_ready = ready
        await asyncio.wait_for(ready.wait(), timeout=20)
        self.watcher = MqttWatcher(self.broker.port, ROOT)
        await self.watcher.__aenter__()
        await wait_until(lambda: all(c.connected for c in self.sim.chargers.values()), 15, "every charger connected")
        return self

    async def _run_sim(self) -> None:
        await self.sim.run(self._sim_ready)

    async def __aexit__(self, *exc) -> None:
        try:
            await self.watcher.__aexit__(*exc)
            self._sim_task.cancel()
            try:
                await self._sim_task
            except (asyncio.CancelledError, Exception):
                pass
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.stop()
        finally:
            self.broker.close()  # never leave a broker behind, whatever failed above

    async def plug_in(self, bay_id: str) -> int | str:
        cid, n = self.bay_of(bay_id)
        return await self.sim.chargers[cid].plug_in(n)

    async def stop_and_unplug(self, bay_id: str) -> None:
        cid, n = self.bay_of(bay_id)
        charger = self.sim.chargers[cid]
        await charger.stop(n)
        await charger.unplug(n)

    async def cut_battery(self) -> None:
        self.sim.inject("battery", "silent")

    async def restore_battery(self) -> None:
        self.sim.inject("battery", "none")

    async def disconnect_charger(self, charger_id: str) -> None:
        self.sim.inject("charger", "offline", charger_id)

    async def reconnect_charger(self, charger_id: str) -> None:
        self.sim.inject("charger", "none", charger_id)
        await wait_until(lambda: self.sim.chargers[charger_id].connected, 15, f"{charger_id} reconnected")

    async def restart_broker(self, down_s: float) -> None:
        await asyncio.to_thread(self.broker.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.broker.start)

    async def kill_broker(self, down_s: float) -> None:
        await asyncio.to_thread(self.broker.kill)  # a crash, not a clean stop; the port stays the broker's
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.broker.start)

    def _charger(self, bay_id: str) -> tuple[SimChargerCore, int]:
        cid, n = self.bay_of(bay_id)
        return self.sim.chargers[cid], n

    def applied_log(self, bay_id: str) -> list[tuple[float, float]]:
        charger, n = self._charger(bay_id)
        return list(charger.applied_log[n])

    def lease_in_force(self, bay_id: str) -> tuple[float | None, float] | None:
        charger, n = self._charger(bay_id)
        now_utc, now_s = datetime.now(UTC), time.monotonic()
        lease = charger.tx_profile_in_force(n, now_utc)
        if lease is None:
            return None
        ends, highest_a = lease
        return (None if ends is None else now_s + (ends - now_utc).total_seconds()), highest_a

    def transaction_of(self, bay_id: str) -> int | str | None:
        charger, n = self._charger(bay_id)
        return charger.transactions.get(n)

    def confirmed(self) -> list[tuple[str, Confirmed]]:
        return [(cid, m) for cid, c in self.sim.chargers.items() for m in c.confirmed]

    def backlog(self) -> int:
        return sum(len(c.outbox) for c in self.sim.chargers.values())

    def link_log(self, charger_id: str) -> list[tuple[float, bool]]:
        return list(self.sim.chargers[charger_id].link_log)

    def chargers_connected(self) -> bool:
        return all(c.connected for c in self.sim.chargers.values())


class HardwareRig(Rig):
    """Real chargers, battery and broker, described in a TOML file (see hil_tests/hardware.example.toml)."""

    name = "hardware"

    def __init__(self, folder: Path, description: Path, **square) -> None:
        """`square`: `grid_limit_a` and `control` for rig_square_toml (the scenario's variant)."""
        self.folder = folder
        self.square = square
        self.hw = tomllib.loads(description.read_text())
        self.state_folder = description.resolve().parent / f"{description.stem}-gateway"
        self.ocpp_port = int(self.hw.get("daemon", {}).get("ocpp_port", 9000))
        self.api_port = free_port()

    async def __aenter__(self) -> HardwareRig:
        broker = self.hw["broker"]
        battery = self.hw.get("battery")
        text = rig_square_toml(
            ocpp_port=self.ocpp_port, api_port=self.api_port, mqtt_host=broker["host"], mqtt_port=int(broker["port"]),
            battery=(battery["host"], int(battery["port"])) if battery else None,
            chargers=self.hw["chargers"], signage={**SIGNAGE, **self.hw.get("signage", {})}, **self.square,
        )
        self.cfg = load_config_text(text, "rig.toml", base_dir=self.folder)
        # One gateway for the whole run, as on a real rig: its database (light seq, sessions) lives
        # beside the hardware file, so retained commands on the rig's broker stay consistent with it.
        self.daemon = Daemon(self.state_folder, text, api_port=self.api_port, ocpp_port=self.ocpp_port)
        await asyncio.to_thread(self.daemon.start)
        self.watcher = MqttWatcher(int(broker["port"]), ROOT)
        await self.watcher.__aenter__()
        wait_s = float(self.hw.get("daemon", {}).get("connect_wait_s", 120))
        await wait_until(self._all_online, wait_s, "every charger connected to the daemon")
        return self

    async def _all_online(self) -> bool:
        # Online is the websocket; a charger may act (start a transaction) only once its boot is
        # accepted, after which it reports every connector's status: wait for those too.
        status, chargers = await self.api("GET", "/api/chargers")
        return status == 200 and all(
            c["online"] and all(n["status"] is not None for n in c["connectors"]) for c in chargers
        )

    async def __aexit__(self, *exc) -> None:
        try:
            await self.watcher.__aexit__(*exc)
        finally:  # never leave a daemon behind, whatever failed above
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.stop()

    def _action(self, section: str, key: str, fault: dict, **fmt) -> None:
        """Do a rig action: POST `fault` to the section's `fault_url`, or run its shell command."""
        part = self.hw.get(section, {})
        if part.get("fault_url"):
            _post(part["fault_url"], fault)
            return
        cmd = part.get(key)
        if not cmd:
            raise Unsupported(f"the hardware file has no {section}.fault_url or {section}.{key}")
        subprocess.run(shlex.split(cmd.format(**fmt)), check=True, timeout=60)

    def _ev(self, action: str, bay_id: str) -> object:
        url = self.hw.get("ev_emulator", {}).get("url")
        if not url:
            raise Unsupported("the hardware file has no ev_emulator.url")
        cid, n = self.bay_of(bay_id)
        return _post(f"{url.rstrip('/')}/{action}", {"charger": cid, "connector": n})

    async def plug_in(self, bay_id: str) -> int | str:
        answer = await asyncio.to_thread(self._ev, "plug", bay_id)
        tx = answer.get("transaction_id") if isinstance(answer, dict) else None
        return tx if isinstance(tx, str) else int(tx or 0)

    async def stop_and_unplug(self, bay_id: str) -> None:
        await asyncio.to_thread(self._ev, "unplug", bay_id)

    async def cut_battery(self) -> None:
        await asyncio.to_thread(self._action, "battery", "cut_command", {"device": "battery", "mode": "silent"})

    async def restore_battery(self) -> None:
        await asyncio.to_thread(self._action, "battery", "restore_command", {"device": "battery", "mode": "none"})

    async def disconnect_charger(self, charger_id: str) -> None:
        await asyncio.to_thread(self._action, "chargers_control", "disconnect_command",
                                {"device": "charger", "id": charger_id, "mode": "offline"}, charger=charger_id)

    async def reconnect_charger(self, charger_id: str) -> None:
        await asyncio.to_thread(self._action, "chargers_control", "reconnect_command",
                                {"device": "charger", "id": charger_id, "mode": "none"}, charger=charger_id)

    async def restart_broker(self, down_s: float) -> None:
        await asyncio.to_thread(self._action, "broker", "restart_command", {"device": "broker", "mode": "restart"})

    async def kill_broker(self, down_s: float) -> None:
        cmd = self.hw.get("broker", {}).get("kill_command")
        if not cmd:
            raise Unsupported("the hardware file has no broker.kill_command (a clean restart is not a crash)")
        await asyncio.to_thread(subprocess.run, shlex.split(cmd.format(down_s=down_s)), check=True, timeout=60)


def _post(url: str, body: dict) -> object:
    """POST JSON to a rig endpoint; its JSON answer (None when it sent none)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None
