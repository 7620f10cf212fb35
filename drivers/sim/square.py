"""A whole square in simulation: chargers, cars, battery, grid meter, bay lights and sensors.

Every device speaks its real protocol (OCPP, Modbus TCP, MQTT), so a daemon cannot tell
the simulation from the street. Cars arrive by a seeded scenario; a small HTTP control
interface injects faults. One TaskGroup owns every device's task.

Kept in one file past 400 lines: it is the wiring of the simulated devices (each in its own
module) and the fault interface that reaches all of them, under one lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from config.schema import SquareConfig
from drivers.sim.battery import SimBattery
from drivers.sim.cars import Arrival, CarState
from drivers.sim.charger16 import SimCharger
from drivers.sim.charger201 import SimCharger201
from drivers.sim.charger_core import SimChargerCore
from drivers.sim.lights import SimFixtures
from drivers.sim.sdm630 import SimGridMeter

log = logging.getLogger("laadplein.sim")

FIXTURE_MODES = ("no_ack", "wrong_color", "none")
BATTERY_MODES = ("none", "silent", "exception", "garbage")
CHARGER_MODES = ("offline", "none")
OCPP_VERSIONS = {"ocpp1.6": SimCharger, "ocpp2.0.1": SimCharger201}


OCPP_CHOICES = ("1.6", "2.0.1", "mixed")


def ocpp_versions(charger_ids: list[str], choice: str = "mixed") -> dict[str, str]:
    """Charger id -> the subprotocol its simulator speaks: all "1.6", all "2.0.1", or "mixed" (the
    2nd, 4th, ... charger by id speaks 2.0.1)."""
    if choice not in OCPP_CHOICES:
        raise ValueError(f"OCPP version choice must be one of {OCPP_CHOICES}, got {choice!r}")
    ids = sorted(charger_ids)
    if choice != "mixed":
        return dict.fromkeys(ids, "ocpp" + choice)
    return {cid: "ocpp2.0.1" if n % 2 else "ocpp1.6" for n, cid in enumerate(ids)}


class SimCar:
    """An EV on a charger: the charger steps it with the limit it applies; it remembers its draw."""

    def __init__(self, state: CarState) -> None:
        self.state = state
        self.phase_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.power_w = 0.0

    @property
    def full(self) -> bool:
        return self.state.full

    def step(self, dt_s: float, offered_a: float) -> tuple[float, tuple[float, float, float]]:
        self.power_w, self.phase_a = self.state.draw(offered_a)
        self.state.step(dt_s, offered_a)
        return self.power_w, self.phase_a


@dataclass
class Visit:
    """A car on a bay (an EV plugged in, or a parked non-EV)."""

    arrival: Arrival
    bay_id: str
    car: SimCar | None
    number: int


@dataclass
class SimStats:
    """What happened on the simulated square so far."""

    arrivals: int = 0
    ev_sessions: int = 0
    non_ev_parked: int = 0
    turned_away: int = 0
    left: int = 0
    energy_wh: float = 0.0
    faults: list[str] = field(default_factory=list)


class SimSquare:
    """All the devices of the configured square, for a daemon on this or another machine."""

    def __init__(
        self,
        cfg: SquareConfig,
        scenario: list[Arrival],
        *,
        ocpp_url: str | None = None,
        mqtt_host: str | None = None,
        mqtt_port: int | None = None,
        battery_port: int | None = None,
        meter_port: int = 0,
        control_port: int | None = 0,
        control_host: str = "127.0.0.1",
        seed: int = 1,
        reaction_s: float = 2.0,
        meter_interval_s: float = 1.0,
        base_load_a: float = 0.0,
        ocpp_versions: Mapping[str, str] | None = None,
    ) -> None:
        """`ocpp_versions`: charger id -> "ocpp1.6" or "ocpp2.0.1", the version its simulator speaks (missing: 1.6)."""
        self.cfg = cfg
        self.scenario = sorted(scenario, key=lambda a: a.arrive_s)
        host = "127.0.0.1" if cfg.ocpp.host in ("0.0.0.0", "::", "") else cfg.ocpp.host
        self.ocpp_url = ocpp_url or f"ws://{host}:{cfg.ocpp.port}{cfg.ocpp.path}"
        self.rng = random.Random(seed)
        self.stats = SimStats()
        self.visits: dict[str, Visit] = {}  # bay -> who is there
        versions = dict(ocpp_versions or {})
        unknown = sorted(set(versions) - {c.id for c in cfg.chargers})
        wrong = sorted(v for v in versions.values() if v not in OCPP_VERSIONS)
        if unknown or wrong:
            raise ValueError(f"ocpp_versions: no charger {unknown}" if unknown else f"ocpp_versions: unknown version {wrong}")
        self.chargers: dict[str, SimChargerCore] = {
            c.id: OCPP_VERSIONS[versions.get(c.id, "ocpp1.6")](
                self.ocpp_url,
                c.id,
                connectors=c.connectors,
                max_current_a=c.max_current_a,
                phases=c.phases,
                password=c.password,
                meter_interval_s=meter_interval_s,
                reaction_s=reaction_s,
            )
            for c in cfg.chargers
        }
        broker_host = mqtt_host or cfg.mqtt.host
        self.fixtures = SimFixtures(
            "127.0.0.1" if broker_host in ("0.0.0.0", "") else broker_host,
            mqtt_port or cfg.mqtt.port,
            cfg.topic_root,
            [b.id for b in cfg.bays],
            language=cfg.signage.language,
        )
        self.battery: SimBattery | None = None
        # The "simulated" preset lives inside the daemon; any other preset is a device to play here.
        if cfg.battery is not None and cfg.battery.driver != "simulated":
            port = battery_port if battery_port is not None else cfg.battery.port
            self.battery = SimBattery.for_config(cfg.battery, host=cfg.battery.host, port=port)
        self.base_load_a = base_load_a
        self.meter = SimGridMeter(self.grid_draw_a, port=meter_port)
        self.control_host, self.control_port = control_host, control_port
        self._charger_tasks: dict[str, asyncio.Task] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.started_at = 0.0
        self.endpoints: dict[str, str] = {}

    # ---- running -----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Start every device, play the scenario, serve the control interface; until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            up = asyncio.Event()
            tg.create_task(self.fixtures.run(up), name="sim-fixtures")
            try:
                async with asyncio.timeout(5):
                    await up.wait()
            except TimeoutError:
                log.warning("MQTT broker %s:%s not reachable yet: lights and sensors join when it is",
                            self.fixtures._host, self.fixtures._port)
            tg.create_task(self._sensors_start(), name="sim-sensors-start")
            if self.battery is not None:
                up = asyncio.Event()
                tg.create_task(self.battery.run(up), name="sim-battery")
                await asyncio.wait_for(up.wait(), timeout=10)
                self.endpoints["battery"] = f"modbus://{self.cfg.battery.host}:{self.battery.port} (SunSpec, unit {self.cfg.battery.unit_id})"
            up = asyncio.Event()
            tg.create_task(self.meter.run(up), name="sim-meter")
            await asyncio.wait_for(up.wait(), timeout=10)
            self.endpoints["grid meter"] = f"modbus://127.0.0.1:{self.meter.port} (SDM630, unit 1)"
            if self.control_port is not None:
                up = asyncio.Event()
                tg.create_task(self._control(up), name="sim-control")
                await asyncio.wait_for(up.wait(), timeout=10)
            for cid in self.chargers:
                self._start_charger(cid)
            self.endpoints["chargers"] = f"{len(self.chargers)} connecting to {self.ocpp_url}/<id>"
            self.endpoints["lights and sensors"] = (
                f"mqtt://{self.fixtures._host}:{self.fixtures._port} under {self.cfg.topic_root}/bays/"
            )
            self.started_at = time.monotonic()
            tg.create_task(self._traffic(), name="sim-traffic")
            if ready is not None:
                ready.set()

    async def _sensors_start(self) -> None:
        """Sensors report the empty square once they reach the broker."""
        while not self.fixtures.connected:
            await asyncio.sleep(0.5)
        for bay in self.cfg.bays:
            if bay.sensor and bay.id not in self.visits:
                await self.fixtures.set_occupancy(bay.id, False)

    def _start_charger(self, cid: str) -> None:
        assert self._tg is not None
        self._charger_tasks[cid] = self._tg.create_task(self.chargers[cid].run(), name=f"sim-charger-{cid}")

    def grid_draw_a(self) -> tuple[float, float, float]:
        """Per-phase current at the grid connection: cars + battery (charging adds) + base load."""
        phases = [self.base_load_a] * 3
        for visit in self.visits.values():
            if visit.car is not None:
                for i, a in enumerate(visit.car.phase_a):
                    phases[i] += a
        if self.battery is not None:
            per_phase = -self.battery.model.power_w / (3 * 230.0)  # discharging (+W) relieves the grid
            phases = [p + per_phase for p in phases]
        return (phases[0], phases[1], phases[2])

    # ---- the cars ----------------------------------------------------------------------------

    async def _traffic(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for n, arrival in enumerate(self.scenario, start=1):
                delay = self.started_at + arrival.arrive_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                bay_id = self._choose_bay(arrival)
                self.stats.arrivals += 1
                if bay_id is None:
                    self.stats.turned_away += 1
                    log.info("car %d (%s) finds no bay it may use and drives on", n, arrival.kind)
                    continue
                tg.create_task(self._visit(arrival, bay_id, n), name=f"sim-car-{n}")

    def _free(self, bay_id: str) -> bool:
        bay = self.cfg.bay(bay_id)
        charger = self.chargers[bay.charger]
        return bay_id not in self.visits and charger.connected and charger.statuses.get(bay.connector) == "Available"

    def _choose_bay(self, arrival: Arrival) -> str | None:
        free = [b.id for b in self.cfg.bays if self._free(b.id)]
        shown = {b: (self.fixtures.shown.get(b) or {}).get("color") for b in free}
        if arrival.kind == "ev":
            blue = [b for b in free if shown[b] == "blue"]  # the bays held free for EVs first
            pool = blue or free
        else:
            pool = [b for b in free if shown[b] == "green"]  # a law-abiding driver never parks on blue
        return self.rng.choice(pool) if pool else None

    async def _visit(self, arrival: Arrival, bay_id: str, n: int) -> None:
        bay = self.cfg.bay(bay_id)
        charger = self.chargers[bay.charger]
        car = SimCar(CarState.from_arrival(arrival)) if arrival.kind == "ev" else None
        visit = Visit(arrival, bay_id, car, n)
        self.visits[bay_id] = visit
        if bay.sensor:
            try:
                await self.fixtures.set_occupancy(bay_id, True)
            except Exception as exc:  # the broker may be gone: the car parks all the same
                log.warning("sensor %s could not report the car: %s", bay_id, exc)
        try:
            if car is not None:
                self.stats.ev_sessions += 1
                log.info("car %d: %s parks on %s and plugs in", n, arrival.car.name, bay_id)
                await asyncio.sleep(2.0)  # walking to the charger with the cable
                await charger.plug_in(bay.connector, id_tag=f"SIM{n:08d}", car=car)
            else:
                self.stats.non_ev_parked += 1
                log.info("car %d (not electric) parks on %s", n, bay_id)
            await asyncio.sleep(max(1.0, arrival.stay_s))
            if car is not None:
                if charger.connected and bay.connector in charger.transactions:
                    await charger.stop(bay.connector)
                    await asyncio.sleep(1.0)
                await charger.unplug(bay.connector)
        except asyncio.CancelledError:
            self.visits.pop(bay_id, None)  # the simulation ends: nobody drives off
            raise
        except Exception as exc:  # a charger gone mid-visit: the car leaves anyway
            log.warning("car %d on %s: %s", n, bay_id, exc)
        if car is not None:
            self.stats.energy_wh += car.state.energy_charged_wh
        self.visits.pop(bay_id, None)
        self.stats.left += 1
        log.info("car %d leaves %s", n, bay_id)
        if bay.sensor:
            try:
                await self.fixtures.set_occupancy(bay_id, False)
            except Exception as exc:  # the broker may be gone; the sensor says so again on the next car
                log.warning("sensor %s could not report the car gone: %s", bay_id, exc)

    # ---- faults ------------------------------------------------------------------------------

    def inject(self, device: str, mode: str, target: str | None = None) -> str:
        """Inject or clear a fault; returns what was done. ValueError for an unknown device or mode."""
        if device == "battery":
            if self.battery is None:
                raise ValueError("this square has no battery")
            if mode not in BATTERY_MODES:
                raise ValueError(f"battery mode must be one of {', '.join(BATTERY_MODES)}")
            self.battery.set_fault(mode)
            done = f"battery: {mode}"
        elif device == "charger":
            if target not in self.chargers:
                raise ValueError(f"no charger {target!r}")
            if mode not in CHARGER_MODES:
                raise ValueError(f"charger mode must be one of {', '.join(CHARGER_MODES)}")
            task = self._charger_tasks.get(target)
            if mode == "offline":
                if task is not None and not task.done():
                    task.cancel()
            elif task is None or task.done():
                self._start_charger(target)
            done = f"charger {target}: {mode}"
        elif device == "fixture":
            if target not in self.fixtures.bay_ids:
                raise ValueError(f"no bay {target!r}")
            if mode not in FIXTURE_MODES:
                raise ValueError(f"fixture mode must be one of {', '.join(FIXTURE_MODES)}")
            self.fixtures.fail_mode[target] = None if mode == "none" else mode
            done = f"fixture {target}: {mode}"
        else:
            raise ValueError("device must be battery, charger or fixture")
        self.stats.faults.append(done)
        log.warning("fault injected: %s", done)
        return done

    def status(self) -> dict:
        """The simulated square as the control interface reports it."""
        return {
            "elapsed_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
            "stats": {k: v for k, v in vars(self.stats).items()},
            "endpoints": self.endpoints,
            "chargers": {
                cid: {"ocpp": c.subprotocol, "connected": c.connected, "statuses": c.statuses,
                      "applied_a": {n: c.applied_a(n) for n in c.statuses}}
                for cid, c in self.chargers.items()
            },
            "bays": {
                b.id: {
                    "car": None if b.id not in self.visits else self.visits[b.id].arrival.kind,
                    "shown": (self.fixtures.shown.get(b.id) or {}).get("color"),
                }
                for b in self.cfg.bays
            },
            "battery": None if self.battery is None else {
                "soc_pct": round(self.battery.model.soc_pct, 2), "power_w": round(self.battery.model.power_w)
            },
            "grid_a": [round(a, 1) for a in self.grid_draw_a()],
        }

    async def _control(self, up: asyncio.Event) -> None:
        async def get_status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        async def post_fault(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                done = self.inject(str(body.get("device")), str(body.get("mode")), body.get("id") or body.get("bay"))
            except (ValueError, AttributeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response({"done": done})

        async def post_car(request: web.Request) -> web.Response:
            """An EV emulator's interface: {"charger": "CP01", "connector": 1} to /sim/plug or /sim/unplug."""
            try:
                body = await request.json()
                charger = self.chargers[str(body.get("charger"))]
                connector = int(body.get("connector"))
                if request.path.endswith("/plug"):
                    tx = await charger.plug_in(connector)
                    return web.json_response({"transaction_id": tx})
                if connector in charger.transactions:
                    await charger.stop(connector)
                await charger.unplug(connector)
                return web.json_response({"unplugged": connector})
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)
            except Exception as exc:  # the charger refused or is not connected
                return web.json_response({"error": str(exc)}, status=409)

        app = web.Application()
        app.router.add_get("/sim/status", get_status)
        app.router.add_post("/sim/faults", post_fault)
        app.router.add_post("/sim/plug", post_car)
        app.router.add_post("/sim/unplug", post_car)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.control_host, self.control_port)
            await site.start()
            port = runner.addresses[0][1]
            self.control_port = port
            self.endpoints["control"] = f"http://{self.control_host}:{port}/sim/status, POST /sim/faults, /sim/plug, /sim/unplug"
            up.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


async def serve(
    cfg: SquareConfig, *, seed: int, speed: float, control_port: int, arrivals_per_bay_day: float = 1.9, ocpp: str = "mixed",
) -> None:
    """`laadplein sim`: every device of the square for a daemon elsewhere, with a day of ElaadNL traffic."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from drivers.sim.cars import arrivals

    start = datetime.now(ZoneInfo(cfg.site.timezone))
    scenario = arrivals(
        seed=seed,
        start=start,
        duration_s=24 * 3600 / speed,
        mean_per_hour=arrivals_per_bay_day * len(cfg.bays) / 24,
        speed=speed,
    )
    sim = SimSquare(cfg, scenario, seed=seed, control_port=control_port, ocpp_versions=ocpp_versions([c.id for c in cfg.chargers], ocpp))
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sim.run(ready), name="simulator")
        await asyncio.wait_for(ready.wait(), timeout=30)
        print(f"simulated square {cfg.site.id}: {len(scenario)} arrivals over the next {24 / speed:g} h (seed {seed})")
        order = ["chargers", "lights and sensors", "battery", "grid meter", "control"]
        for what in sorted(sim.endpoints, key=lambda k: order.index(k) if k in order else len(order)):
            print(f"  {what:<20} {sim.endpoints[what]}")
        sys.stdout.flush()
