"""Soak run: the real daemon through a simulated busy day on the Hoofddorp square, with faults every few minutes.

Runs `laadplein run` against mosquitto and the whole simulated square (6 two-connector chargers,
12 bays with lights and sensors, a SunSpec buffer battery) with ElaadNL arrivals at a busy rate.
The day is compressed into the run (the simulator's `speed`: cars come faster, and stays and
energy demands shrink by the same factor); the daemon and the chargers run in real time.
The faults of `bench/soak_faults.py` come in rotation every `--fault-every-s`, each healed after
a while. It prints a line per fault and at the end: faults survived, grid-limit overshoots,
sessions lost, the daemon's memory growth and restarts, light commands, alarms and the daemon's
WARNING+ log lines, then a verdict per target. Exit 0 when every target is met, else 1.

    python3 -m bench.soak [--minutes 60] [--fault-every-s 180] [--seed 1] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
from ocpp.v16 import call as ocpp_call

from bench.soak_faults import (
    FaultInjector,
    FaultPlan,
    Recovery,
    plan_faults,
    tidy_simulator,
)
from config.loader import load_config_text
from drivers.sim.cars import arrivals
from drivers.sim.square import SimSquare
from tests.integration.harness import Daemon
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port

PROBE_ID = "CP07"  # in the daemon's config, not run by the simulator: the malformed-frame client's id
LEASE_S = 30
PERIOD_S = 1.0
REACTION_S = 3  # what the daemon assumes of the chargers
SIM_REACTION_S = 2.0  # what the simulated chargers take
METER_INTERVAL_S = 1
HEALTH_WITHIN_S = 15.0
SETTLE_S = 10.0  # the first car comes once the daemon is up
OVER_EPS_A = 0.05  # below this, float noise rather than an overshoot


def soak_config_text(*, ocpp_port: int, api_port: int, mqtt_port: int, battery_port: int) -> str:
    """The daemon's config: config/examples/hoofddorp-marktplein.toml's square on free ports, short leases."""
    parts = [
        '[site]\nid = "hoofddorp-marktplein"\nname = "Laadplein Marktplein Hoofddorp (soak)"\ntimezone = "Europe/Amsterdam"\n',
        "[grid]\nphases = 3\nvoltage_v = 230\nlimit_a = 80\n",
        (f'[ocpp]\nhost = "127.0.0.1"\nport = {ocpp_port}\npath = "/ocpp"\nauth = "free"\n'
         "heartbeat_interval_s = 60\ncall_timeout_s = 5\n"),
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "laadplein"\nkeepalive_s = 10\n',
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n',
        '[storage]\npath = "state/laadplein.db"\n',
        (f"[control]\nperiod_s = {PERIOD_S}\nmin_current_a = 6\nlease_s = {LEASE_S}\nturn_s = 60\n"
         f"reaction_s = {REACTION_S}\nmeter_interval_s = {METER_INTERVAL_S}\n"),
        (f'[battery]\ndriver = "sunspec"\nhost = "127.0.0.1"\nport = {battery_port}\nunit_id = 1\ncapacity_kwh = 100\n'
         "max_charge_w = 30000\nmax_discharge_w = 30000\nsoc_min_pct = 10\nsoc_max_pct = 95\nrevert_timeout_s = 60\n"
         "poll_s = 1.0\ntimeout_s = 1.0\n"),
        # Quicker lights than in the street: a compressed day turns its bays over in minutes.
        ('[signage]\nmin_free_ev_bays = 2\ngrace_s = 30\nmin_dwell_s = 5\nlanguage = "nl"\noffline_after_s = 10\n'
         "startup_wait_s = 10\nack_timeout_s = 5\n"),
    ]
    parts += [f'[[chargers]]\nid = "CP{c:02d}"\nmax_current_a = 32\nphases = 3\nconnectors = 2\n' for c in range(1, 7)]
    parts.append(f'[[chargers]]\nid = "{PROBE_ID}"\nmax_current_a = 16\nphases = 3\nconnectors = 1\n')
    parts += [f'[[bays]]\nid = "B{b + 1:02d}"\ncharger = "CP{b // 2 + 1:02d}"\nconnector = {b % 2 + 1}\nsensor = true\n'
              for b in range(12)]
    return "\n".join(parts)


# ---- what the soak measures ------------------------------------------------------------------

class GridWatch:
    """The square's per-phase grid draw (cars less battery) every 50 ms against the limit (A, s).

    An episode lasts while any phase is above the limit; those longer than `grace_s` are the
    overshoots, the shorter ones happen while chargers follow a lower limit.
    """

    def __init__(self, draw_a: Callable[[], tuple[float, ...]], limit_a: float, grace_s: float) -> None:
        self.draw_a, self.limit_a, self.grace_s = draw_a, limit_a, grace_s
        self.episodes: list[tuple[float, float]] = []  # (duration s, worst A over)
        self._open: tuple[float, float] | None = None  # (since s, worst A over)
        self.samples, self.peak_a, self.longest_gap_s = 0, 0.0, 0.0
        self._last_s: float | None = None

    def sample(self, now_s: float, draw_a: tuple[float, ...]) -> None:
        if self._last_s is not None:
            self.longest_gap_s = max(self.longest_gap_s, now_s - self._last_s)
        self._last_s, self.samples, self.peak_a = now_s, self.samples + 1, max(self.peak_a, *draw_a)
        over_a = max(draw_a) - self.limit_a
        if over_a > OVER_EPS_A:
            since_s, worst_a = self._open or (now_s, 0.0)
            self._open = (since_s, max(worst_a, over_a))
        elif self._open is not None:
            self.episodes.append((now_s - self._open[0], self._open[1]))
            self._open = None

    async def run(self) -> None:
        while True:
            self.sample(time.monotonic(), self.draw_a())
            await asyncio.sleep(0.05)

    def split(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(overshoots beyond the grace time, episodes within it), an episode still open included."""
        still = [] if self._open is None or self._last_s is None else [(self._last_s - self._open[0], self._open[1])]
        every = self.episodes + still
        return [e for e in every if e[0] > self.grace_s], [e for e in every if e[0] <= self.grace_s]


@dataclasses.dataclass
class TxSeen:
    """A transaction as its simulated charger knows it: what the gateway answered (Wh)."""

    charger: str
    connector: int
    meter_start_wh: int
    meter_stop_wh: int | None = None  # a StopTransaction the gateway answered
    stop_unanswered: bool = False  # sent, no answer (the gateway went away meanwhile)
    last_energy_wh: float | None = None  # the register of the last MeterValues answered


class SessionLedger:
    """Notes at every simulated charger each StartTransaction, StopTransaction and MeterValues the gateway answered."""

    def __init__(self) -> None:
        self.tx: dict[int, TxSeen] = {}
        self.reused: list[int] = []

    def watch(self, charger) -> None:
        original = charger.call

        async def call(payload, *args, **kwargs):
            try:
                result = await original(payload, *args, **kwargs)
            except BaseException:
                if isinstance(payload, ocpp_call.StopTransaction) and payload.transaction_id in self.tx:
                    self.tx[payload.transaction_id].stop_unanswered = True
                raise
            self._answered(charger.charger_id, payload, result)
            return result

        charger.call = call

    def _answered(self, charger_id: str, payload, result) -> None:
        if isinstance(payload, ocpp_call.StartTransaction):
            if result.transaction_id in self.tx:
                self.reused.append(result.transaction_id)
            self.tx[result.transaction_id] = TxSeen(charger_id, payload.connector_id, payload.meter_start)
        elif isinstance(payload, ocpp_call.StopTransaction) and payload.transaction_id in self.tx:
            seen = self.tx[payload.transaction_id]
            seen.meter_stop_wh, seen.stop_unanswered = payload.meter_stop, False
        elif isinstance(payload, ocpp_call.MeterValues) and payload.transaction_id in self.tx:
            for reading in payload.meter_value:
                for v in reading.get("sampledValue", []):
                    if v.get("measurand") == "Energy.Active.Import.Register":
                        self.tx[payload.transaction_id].last_energy_wh = float(v["value"])

    def snapshot(self) -> dict[int, TxSeen]:
        return {tx: dataclasses.replace(seen) for tx, seen in self.tx.items()}


@dataclasses.dataclass
class SessionCheck:
    """The daemon's sessions against what the chargers were answered (counts)."""

    confirmed: int = 0
    found: int = 0
    lost: int = 0
    stops_confirmed: int = 0
    stops_recorded: int = 0
    open: int = 0
    stops_unanswered: int = 0
    unknown_to_chargers: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


def check_sessions(confirmed: dict[int, TxSeen], sessions: list[dict], reused: list[int]) -> SessionCheck:
    """Every transaction a charger got confirmed must be in the daemon's sessions as the charger sent it.

    Lost: missing; on another connector or meter start; a confirmed stop not recorded as sent; an
    open session whose energy is below what an answered MeterValues showed.
    """
    out = SessionCheck(confirmed=len(confirmed))
    out.problems += [f"transaction id {tx} was given out twice" for tx in reused]
    by_id = {s["id"]: s for s in sessions}
    for tx, seen in sorted(confirmed.items()):
        s, where = by_id.get(tx), f"tx {tx} on {seen.charger}/{seen.connector}"
        if s is None:
            out.lost += 1
            out.problems.append(f"{where}: confirmed to the charger, missing in GET /api/sessions")
            continue
        out.found += 1
        wrong = []
        if (s["charger"], s["connector"], s["meter_start_wh"]) != (seen.charger, seen.connector, seen.meter_start_wh):
            wrong.append(f"recorded as {s['charger']}/{s['connector']} from {s['meter_start_wh']} Wh")
        if seen.meter_stop_wh is not None:
            out.stops_confirmed += 1
            if s["stopped"] is None or s["meter_stop_wh"] != seen.meter_stop_wh:
                wrong.append(f"stop at {seen.meter_stop_wh} Wh confirmed, recorded: {s['meter_stop_wh']} ({s['stopped']})")
            else:
                out.stops_recorded += 1
        else:
            out.stops_unanswered += seen.stop_unanswered
            out.open += not seen.stop_unanswered
            shown_wh = None if seen.last_energy_wh is None else seen.last_energy_wh - seen.meter_start_wh
            if s["stopped"] is None and shown_wh is not None and (s["energy_wh"] is None or s["energy_wh"] < shown_wh - 1):
                wrong.append(f"energy {s['energy_wh']} Wh, below the {shown_wh:.0f} Wh an answered reading showed")
        if wrong:
            out.lost += 1
            out.problems.append(f"{where}: " + "; ".join(wrong))
    out.unknown_to_chargers = len(set(by_id) - set(confirmed))
    return out


def proc_mb(pid: int, field: str) -> float | None:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class MemorySampler:
    """The daemon's RSS (MB): marks at the start and end of the phase without restarts, and each process's birth."""

    def __init__(self, pid_now: Callable[[], int | None]) -> None:
        self.pid_now = pid_now
        self.born: dict[int, float] = {}  # pid -> monotonic s first seen
        self.marks: list[tuple[float, int, float]] = []  # (s, pid, MB): the phase's start and end
        self.peak_mb: float | None = None

    def _sample(self) -> tuple[float, int, float] | None:
        pid = self.pid_now()
        mb = None if pid is None else proc_mb(pid, "VmRSS")
        if pid is None or mb is None:
            return None
        now = time.monotonic()
        self.born.setdefault(pid, now)
        return now, pid, mb

    async def run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(5.0)

    def mark(self) -> None:
        """The phase starts (first call) or ends (second call) now."""
        got = self._sample()
        if got is not None and len(self.marks) < 2:
            self.marks.append(got)
            if len(self.marks) == 2:
                self.peak_mb = proc_mb(got[1], "VmHWM")

    def growth(self) -> tuple[float, float, float, float, int] | None:
        """(start MB, end MB, growth %, the process's life in s at the end mark, pid); None without one process across."""
        if len(self.marks) < 2 or self.marks[0][1] != self.marks[1][1]:
            return None
        (_, pid, mb0), (t1, _, mb1) = self.marks
        return mb0, mb1, 100.0 * (mb1 - mb0) / mb0, t1 - self.born[pid], pid


class LightCounter:
    """Counts the light commands on the broker and checks that no bay's `seq` ever goes back."""

    def __init__(self, port: int, root: str) -> None:
        self.port, self.root = port, root
        self.messages, self.backwards = 0, 0
        self.distinct: set[tuple[str, int]] = set()
        self.last_seq: dict[str, int] = {}

    async def run(self) -> None:
        while True:  # the broker is killed now and then
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, timeout=5, identifier=f"soak-lights-{id(self)}") as client:
                    await client.subscribe(f"{self.root}/bays/+/light", qos=1)
                    async for msg in client.messages:
                        self.note(str(msg.topic), bytes(msg.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def note(self, topic: str, payload: bytes) -> None:
        try:
            seq = int(json.loads(payload)["seq"])
        except (ValueError, KeyError, TypeError):
            return
        bay = topic.split("/")[-2]
        self.messages += 1
        self.distinct.add((bay, seq))
        self.backwards += seq < self.last_seq.get(bay, seq)
        self.last_seq[bay] = max(seq, self.last_seq.get(bay, seq))


_LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\s+(\S+): (.*)$")


def log_kinds(text: str) -> tuple[Counter[str], int]:
    """WARNING+ lines of the daemon's log by kind (numbers folded to #), and the number of tracebacks."""
    kinds: Counter[str] = Counter()
    for m in filter(None, map(_LOG_LINE.match, text.splitlines())):
        kinds[f"{m[1]} {m[2]}: " + re.sub(r"\d+(\.\d+)?", "#", m[3])[:100]] += 1
    return kinds, text.count("Traceback (most recent call last)")


# ---- the run ----------------------------------------------------------------------------------

@dataclasses.dataclass
class FaultRecord:
    """One fault as it went (s from the heal)."""

    plan: FaultPlan
    ok: bool
    health_s: float | None
    normal_s: float | None

    @property
    def survived(self) -> bool:
        return self.ok and self.health_s is not None and self.health_s <= HEALTH_WITHIN_S and self.normal_s is not None


class Soak:
    """One soak run: the processes, the watchers, the faults and the figures."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder = args, folder
        self.total_s = args.minutes * 60.0
        self.warmup_s = min(120.0, max(10.0, 0.15 * self.total_s))
        self.tail_s = min(60.0, max(5.0, 0.05 * self.total_s))
        self.speed = args.speed or 86400.0 / self.total_s
        (folder / "mosquitto").mkdir(parents=True)
        self.broker = Mosquitto(workdir=folder / "mosquitto")
        self.records: list[FaultRecord] = []
        self.crashed: dict[str, str] = {}
        self.tidied: dict[str, int] = {}
        self.unplanned_restarts = 0
        self.started_wall = datetime.now(UTC)
        self.t0 = time.monotonic()
        ocpp_port, api_port, battery_port = free_port(), free_port(), free_port()
        text = soak_config_text(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=self.broker.port, battery_port=battery_port)
        self.daemon = Daemon(folder / "daemon", text, api_port=api_port, ocpp_port=ocpp_port)
        self.cfg = cfg = load_config_text(text, "soak.toml", base_dir=self.daemon.folder)
        day = datetime.now(ZoneInfo(cfg.site.timezone)).replace(hour=args.start_hour, minute=0, second=0, microsecond=0)
        cars = arrivals(seed=args.seed, start=day, duration_s=self.total_s, weekend=False, speed=self.speed,
                        mean_per_hour=args.arrivals_per_bay_day * len(cfg.bays) / 24)
        self.scenario = [dataclasses.replace(c, arrive_s=c.arrive_s + SETTLE_S) for c in cars]
        sim_cfg = cfg.model_copy(update={"chargers": [c for c in cfg.chargers if c.id != PROBE_ID]})
        self.sim = SimSquare(sim_cfg, self.scenario, ocpp_url=self.daemon.ocpp_url, mqtt_port=self.broker.port,
                             battery_port=battery_port, control_port=None, seed=args.seed, reaction_s=SIM_REACTION_S,
                             meter_interval_s=float(METER_INTERVAL_S))
        self.ledger = SessionLedger()
        for charger in self.sim.chargers.values():
            self.ledger.watch(charger)
        # A car's draw follows its charger's limit at the next meter tick.
        self.grid = GridWatch(self.sim.grid_draw_a, cfg.grid.limit_a - cfg.grid.base_load_a,
                              REACTION_S + PERIOD_S + METER_INTERVAL_S)
        self.lights = LightCounter(self.broker.port, cfg.topic_root)
        self.memory = MemorySampler(lambda: self.daemon.proc.pid if self.daemon.proc and self.daemon.proc.poll() is None else None)
        self.recovery = Recovery(self.daemon, self.sim, PROBE_ID)
        connectors = sum(c.connectors for c in cfg.chargers)
        self.injector = FaultInjector(daemon=self.daemon, broker=self.broker, sim=self.sim, root=cfg.topic_root,
                                      probe_url=f"{self.daemon.ocpp_url}/{PROBE_ID}", lease_s=LEASE_S,
                                      safe_default_a=int(cfg.grid.limit_a / connectors * 10) / 10)

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        t = int(self.now_s())
        print(f"[{t // 60:02d}:{t % 60:02d}] {text}", flush=True)

    async def run(self) -> int:
        self.broker.start()
        try:
            return await self._run()
        finally:
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.stop()
            self.broker.close()

    async def _run(self) -> int:
        a, cfg = self.args, self.cfg
        plans = plan_faults(total_s=self.total_s, warmup_s=self.warmup_s, tail_s=self.tail_s,
                            every_s=a.fault_every_s, lease_s=LEASE_S)
        print(f"soak: {cfg.site.name}: {len(self.sim.chargers)} chargers x 2, {len(cfg.bays)} bays, grid 3 x "
              f"{cfg.grid.limit_a:g} A, battery {cfg.battery.capacity_kwh:g} kWh / {cfg.battery.max_discharge_w / 1000:g} kW; "
              f"lease {LEASE_S} s, period {PERIOD_S:g} s")
        print(f"  {a.minutes:g} min, seed {a.seed}: {len(self.scenario)} arrivals ({a.arrivals_per_bay_day:g} per bay a "
              f"day, a day from {a.start_hour:02d}:00 at {self.speed:g}x); {len(plans)} faults every {a.fault_every_s:g} s "
              f"after a {self.warmup_s:.0f} s warm-up; folder {self.folder}", flush=True)
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            # The devices first, so the battery answers when the daemon first looks for it.
            tasks = [tg.create_task(self._guard("simulator", self.sim.run(ready)), name="soak-sim")]
            await asyncio.wait_for(ready.wait(), 30)
            await asyncio.to_thread(self.daemon.start)
            self.t0 = time.monotonic()
            for name, coro in (("grid watch", self.grid.run()), ("light counter", self.lights.run()),
                               ("memory", self.memory.run()), ("tidy", tidy_simulator(self.sim, self.tidied))):
                tasks.append(tg.create_task(self._guard(name, coro), name=f"soak-{name}"))
            try:
                if why := await self.recovery.normal_within(30.0):
                    self.say(f"square not normal after the start: {why}")
                await self._faults(plans)
                await asyncio.sleep(max(0.0, self.total_s - self.now_s()))
                await self._revive("at the end")
                self.final_why = await self.recovery.normal_within(60.0)
                return await self._report()
            finally:
                for t in tasks:
                    t.cancel()

    async def _guard(self, name: str, coro) -> None:
        """Run a helper; its crash is recorded (and ends the faults) rather than ending the run without figures."""
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - reported at the end
            self.crashed[name] = f"{type(exc).__name__}: {exc}"
            self.say(f"{name} crashed: {self.crashed[name]}")

    async def _faults(self, plans: list[FaultPlan]) -> None:
        restarts_from = next((p.number for p in plans if p.kind.startswith("daemon_")), None)
        await asyncio.sleep(max(0.0, self.warmup_s - self.now_s()))
        self.memory.mark()
        for plan in plans:
            await asyncio.sleep(max(0.0, plan.at_s - self.now_s()))
            if "simulator" in self.crashed:
                break
            if plan.number == restarts_from:
                self.memory.mark()
            await self._revive("before the fault")
            beyond = len(self.grid.split()[0])
            done = await self.injector.run(plan)
            health_s = await self.recovery.health_within(HEALTH_WITHIN_S, done.healed_at)
            self.recovery.tolerated |= done.tolerated
            why = await self.recovery.normal_within(self.args.recover_s)
            rec = FaultRecord(plan, done.ok, health_s, None if why else time.monotonic() - done.healed_at)
            self.records.append(rec)
            overshoots = len(self.grid.split()[0]) - beyond
            notes = f" ({'; '.join(done.notes)})" if done.notes else ""
            self.say(f"fault {plan.number}/{len(plans)} {plan.kind}: {done.what}{notes}; "
                     + ("no health" if health_s is None else f"health {health_s:.1f} s") + ", "
                     + (f"NOT normal: {why}" if why else f"normal in {rec.normal_s:.1f} s") + "; "
                     + (f"{overshoots} OVERSHOOT(S)" if overshoots else "grid ok")
                     + f" -> {'survived' if rec.survived else 'NOT SURVIVED'}")
        self.memory.mark()

    async def _revive(self, when: str) -> None:
        """A daemon that died by itself is counted and started again, as its service manager would."""
        proc = self.daemon.proc
        if proc is not None and proc.poll() is not None:
            self.unplanned_restarts += 1
            self.say(f"daemon found dead {when} (exit {proc.returncode}); starting it again")
            await asyncio.to_thread(self.daemon.start)

    async def _events(self) -> list[dict]:
        """Every event since the run's start (the API gives at most 10000 at a time)."""
        out: dict[int, dict] = {}
        since = self.started_wall.strftime("%Y-%m-%dT%H:%M:%SZ")
        while True:
            status, page = await self.daemon.aapi("GET", f"/api/events?since={since}&limit=10000", timeout_s=30)
            fresh = [e for e in page if e["id"] not in out] if status == 200 else []
            out.update((e["id"], e) for e in fresh)
            if len(fresh) == 0 or len(page) < 10000:
                return sorted(out.values(), key=lambda e: e["id"])
            since = page[-1]["ts"]

    async def _report(self) -> int:
        confirmed = self.ledger.snapshot()  # before the daemon is asked: anything confirmed by then must be there
        status, sessions = await self.daemon.aapi("GET", "/api/sessions?limit=10000", timeout_s=30)
        s = check_sessions(confirmed, sessions if status == 200 else [], self.ledger.reused)
        events = await self._events()
        status, alarms_now = await self.daemon.aapi("GET", "/api/alarms", timeout_s=5)
        beyond, within = self.grid.split()
        mem, st, survived = self.memory.growth(), self.sim.stats, sum(r.survived for r in self.records)
        print(f"\nsoak over after {self.now_s() / 60:.1f} min (seed {self.args.seed}); cars: {st.arrivals} arrived "
              f"({st.ev_sessions} electric, {st.non_ev_parked} not), {st.turned_away} found no bay")
        print(f"faults: {len(self.records)} injected, {survived} survived")
        for kind in dict.fromkeys(r.plan.kind for r in self.records):
            recs = [r for r in self.records if r.plan.kind == kind]
            print(f"  {kind:<17} {len(recs):>3} injected {sum(r.survived for r in recs):>3} survived   slowest back "
                  f"to normal {max(r.normal_s or 0.0 for r in recs):5.1f} s")
        print(f"grid-limit overshoots (draw above {self.grid.limit_a:g} A for longer than {self.grid.grace_s:g} s): "
              f"{len(beyond)} (worst {max((w for _, w in beyond), default=0.0):.1f} A, "
              f"longest {max((d for d, _ in beyond), default=0.0):.1f} s)")
        print(f"  within the reaction time (informational): {len(within)} (worst "
              f"{max((w for _, w in within), default=0.0):.1f} A, longest {max((d for d, _ in within), default=0.0):.1f} s); "
              f"highest draw {self.grid.peak_a:.1f} A; {self.grid.samples} samples, longest gap "
              f"{self.grid.longest_gap_s * 1000:.0f} ms")
        kwh = sum(x["energy_wh"] or 0 for x in sessions) / 1000 if isinstance(sessions, list) else 0.0
        print(f"sessions: confirmed {s.confirmed} / found {s.found} / lost {s.lost}  (stops confirmed "
              f"{s.stops_confirmed}, {s.stops_recorded} recorded; open at the end {s.open}; stops sent without an "
              f"answer {s.stops_unanswered}; sessions in the daemon no charger was told of {s.unknown_to_chargers}; "
              f"{kwh:.1f} kWh recorded)")
        for problem in s.problems[:10]:
            print(f"  - {problem}")
        if mem is not None:
            mb0, mb1, pct, life_s, pid = mem
            print(f"daemon memory (RSS of pid {pid}, from the warm-up's end to the first restart): {mb0:.1f} MB -> "
                  f"{mb1:.1f} MB, growth {pct:+.1f} %; peak {self.memory.peak_mb:.1f} MB; that process had lived "
                  f"{life_s / 60:.1f} min")
        else:
            print("daemon memory: no single process from the warm-up's end to the first restart")
        planned = sum(1 for r in self.records if r.plan.kind.startswith("daemon_"))
        final_mb = proc_mb(self.daemon.proc.pid, "VmRSS") if self.daemon.proc else None
        print(f"daemon restarts: {planned} planned, {self.unplanned_restarts} unplanned; RSS now "
              + (f"{final_mb:.1f} MB" if final_mb else "unknown"))
        print(f"light commands published: {self.lights.messages} ({len(self.lights.distinct)} distinct, the rest "
              f"republished); a bay's seq went backwards {self.lights.backwards} time(s)")
        raised = Counter(e["data"]["key"].split(":")[0] for e in events if e["kind"] == "alarm" and e.get("data"))
        cleared = Counter(e["data"]["key"].split(":")[0] for e in events if e["kind"] == "alarm_cleared" and e.get("data"))
        print(f"alarms: {raised.total()} raised, {cleared.total()} cleared ("
              + ", ".join(f"{k} {raised[k]}/{cleared[k]}" for k in sorted(raised)) + "); active at the end: "
              + (", ".join(x["key"] for x in alarms_now) if status == 200 and alarms_now else "none"))
        kinds, tracebacks = log_kinds(self.daemon.log())
        print(f"daemon log WARNING+: {kinds.total()} lines, {tracebacks} traceback(s); top 10:")
        for kind, n in kinds.most_common(10):
            print(f"  {n:>5}  {kind}")
        print(f"simulator tidy-ups after outages: {self.tidied or 'none'}")
        for name, why in self.crashed.items():
            print(f"CRASHED: {name}: {why}")
        if self.final_why:
            print(f"square not normal at the end: {self.final_why}")
        verdicts = [
            ("grid-limit overshoots", not beyond, f"{len(beyond)} (target 0)"),
            ("sessions lost", s.lost == 0 and s.confirmed > 0, f"{s.lost} of {s.confirmed} (target 0)"),
            ("daemon memory growth", mem is not None and mem[2] < 10.0,
             "n/a" if mem is None else f"{mem[2]:+.1f} % (target < 10 %)"),
            ("faults survived", survived == len(self.records) and not self.crashed,
             f"{survived}/{len(self.records)} (target all)"),
        ]
        for name, ok, figure in verdicts:
            print(f"verdict: {name} {figure}: {'PASS' if ok else 'FAIL'}")
        return 0 if all(ok for _, ok, _ in verdicts) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the run in real minutes (default 60)")
    ap.add_argument("--fault-every-s", type=float, default=180.0, help="a fault every this many s (default 180)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=None, help="square time per real time (default: a day in the run)")
    ap.add_argument("--arrivals-per-bay-day", type=float, default=5.0,
                    help="cars per bay a day (default 5: busy, the fuse is reached at the peaks)")
    ap.add_argument("--start-hour", type=int, default=7, help="local hour the simulated day starts (default 7)")
    ap.add_argument("--recover-s", type=float, default=60.0, help="how long a healed fault may take back to normal")
    ap.add_argument("--keep", action="store_true", help="keep the folder with the daemon's log and database")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="laadplein-soak-"))
    # The simulator's own log (cars, faults, reconnects) goes to a file beside the daemon's.
    handler = logging.FileHandler(folder / "simulator.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        return asyncio.run(Soak(args, folder).run())
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
