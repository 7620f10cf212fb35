"""The simulated charger against a small OCPP 1.6 central system: charging profiles, reaction time, no gateway, car models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from drivers.contract.clock import wire_ts
from drivers.sim.charger16 import SimCharger

REACTION_S = 0.3
WAIT_S = 3.0


class Central(ChargePoint):
    """The central system's side of one charger: answers everything and records what it heard."""

    def __init__(self, charger_id: str, connection: ServerConnection) -> None:
        super().__init__(charger_id, connection)
        self.statuses: list[tuple[int, str]] = []
        self.readings: list[dict[tuple[str, str | None], float]] = []  # (measurand, phase) -> value, per MeterValues
        self._next_tx = 100

    @on(Action.boot_notification)
    def on_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=wire_ts(datetime.now(timezone.utc)), interval=300, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=wire_ts(datetime.now(timezone.utc)))

    @on(Action.status_notification)
    def on_status(self, connector_id: int, status: str, **_: Any) -> Any:
        self.statuses.append((connector_id, status))
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action.start_transaction)
    def on_start(self, connector_id: int, **_: Any) -> Any:
        self._next_tx += 1
        return call_result.StartTransaction(transaction_id=self._next_tx, id_tag_info={"status": "Accepted"})

    @on(Action.stop_transaction)
    def on_stop(self, **_: Any) -> Any:
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        for reading in meter_value:
            self.readings.append({(v["measurand"], v.get("phase")): float(v["value"]) for v in reading["sampled_value"]})
        return call_result.MeterValues()

    async def set_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        """SetChargingProfile, sent from the test's task (never from a handler); the charger's status."""
        answer = await self.call(call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile))
        return answer.status


@dataclass
class Rig:
    server: Server
    sim: SimCharger
    central: Central


@asynccontextmanager
async def rig(**sim_options: Any) -> AsyncIterator[Rig]:
    """A central system on port 0 with one simulated charger connected and booted."""
    centrals: asyncio.Queue[Central] = asyncio.Queue()

    async def handler(connection: ServerConnection) -> None:
        central = Central(connection.request.path.rsplit("/", 1)[-1], connection)
        centrals.put_nowait(central)
        try:
            await central.start()
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6")]) as server:
        port = server.sockets[0].getsockname()[1]
        options = {"meter_interval_s": 0.1, "reaction_s": REACTION_S, **sim_options}
        sim = SimCharger(f"ws://127.0.0.1:{port}/ocpp", "CP01", **options)
        async with asyncio.TaskGroup() as tasks:
            ready = asyncio.Event()
            running = tasks.create_task(sim.run(ready), name="sim-CP01")
            async with asyncio.timeout(WAIT_S):
                await ready.wait()
                central = await centrals.get()
            try:
                yield Rig(server, sim, central)
            finally:
                running.cancel()


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def profile(
    profile_id: int, purpose: str, limit_a: float, *, stack: int, start: datetime, duration_s: int | None = None, tx: int | None = None
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": "A",
        "startSchedule": wire_ts(start),
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}],
    }
    if duration_s is not None:
        schedule["duration"] = duration_s
    body = {
        "chargingProfileId": profile_id,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": schedule,
    }
    return body | ({"transactionId": tx} if tx is not None else {})


def now() -> datetime:
    return datetime.now(timezone.utc)


async def test_a_tx_profile_applies_after_the_reaction_time_not_before() -> None:
    async with rig() as r:
        lease = profile(11, "TxProfile", 10.0, stack=1, start=now() - timedelta(seconds=5), duration_s=60)
        assert await r.central.set_profile(1, lease) == "Rejected"  # no transaction on the connector yet
        tx = await r.sim.plug_in(1)
        await eventually(lambda: any(m.get(("Current.Import", "L1")) == 32.0 for m in r.central.readings))

        sent = now()
        assert await r.central.set_profile(1, lease | {"transactionId": tx}) == "Accepted"
        await asyncio.sleep(REACTION_S / 2)
        assert r.sim.applied_a(1) == 32.0 and r.sim.applied_history == []
        await eventually(lambda: r.sim.applied_a(1) == 10.0)
        ((when, connector, limit_a),) = r.sim.applied_history
        assert connector == 1 and limit_a == 10.0
        assert REACTION_S <= (when - sent).total_seconds() < REACTION_S + 0.3
        await eventually(lambda: r.central.readings[-1].get(("Current.Import", "L1")) == 10.0)
        assert r.central.readings[-1][("Current.Offered", None)] == 10.0
        assert r.central.readings[-1][("Power.Active.Import", None)] == 10.0 * 230 * 3


async def test_a_tx_profile_that_runs_out_falls_back_to_the_default() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1)
        start = now()
        assert await r.central.set_profile(0, profile(1, "TxDefaultProfile", 8.0, stack=0, start=start)) == "Accepted"
        lease = profile(11, "TxProfile", 20.0, stack=1, start=start - timedelta(seconds=5), duration_s=6, tx=tx)
        assert await r.central.set_profile(1, lease) == "Accepted"
        await eventually(lambda: r.sim.applied_a(1) == 20.0)
        schedule = await r.central.call(call.GetCompositeSchedule(connector_id=1, duration=10))
        assert [p["limit"] for p in schedule.charging_schedule["charging_schedule_period"]] == [20.0, 8.0]

        await eventually(lambda: r.sim.applied_a(1) == 8.0)
        expired = start + timedelta(seconds=1)
        assert [(c, a) for _, c, a in r.sim.applied_history if c == 1] == [(1, 20.0), (1, 8.0)]
        assert (r.sim.applied_history[-1][0] - expired).total_seconds() >= REACTION_S - 0.01
        assert r.sim.applied_a(2) == 8.0  # the default on connector 0 holds for every connector


async def test_the_charger_keeps_its_limits_without_the_gateway_and_leases_still_run_out() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1)
        start = now()
        assert await r.central.set_profile(1, profile(1, "TxDefaultProfile", 8.0, stack=0, start=start)) == "Accepted"
        lease = profile(11, "TxProfile", 16.0, stack=1, start=start - timedelta(seconds=5), duration_s=7, tx=tx)
        assert await r.central.set_profile(1, lease) == "Accepted"
        await eventually(lambda: r.sim.applied_a(1) == 16.0)

        r.server.close()
        await r.server.wait_closed()
        await eventually(lambda: not r.sim.connected)
        gone, energy_wh = now(), r.sim.energy_wh[1]
        await asyncio.sleep(0.5)
        assert r.sim.applied_a(1) == 16.0 and r.sim.current_a(1) == 16.0  # the connection dropping changes nothing

        await eventually(lambda: r.sim.applied_a(1) == 8.0, timeout_s=4)  # the lease ran out: the default
        assert not r.sim.connected
        when, connector, limit_a = r.sim.applied_history[-1]
        assert (connector, limit_a) == (1, 8.0) and when > gone
        assert (when - (start + timedelta(seconds=2))).total_seconds() >= REACTION_S - 0.01
        await asyncio.sleep(0.3)
        assert r.sim.energy_wh[1] > energy_wh and r.sim.transactions == {1: tx}


async def test_the_charger_suspends_below_six_amps_and_resumes() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1)
        pause = profile(11, "TxProfile", 0.0, stack=1, start=now() - timedelta(seconds=5), duration_s=600, tx=tx)
        assert await r.central.set_profile(1, pause) == "Accepted"
        await eventually(lambda: r.central.statuses[-1] == (1, "SuspendedEVSE"))
        await eventually(lambda: r.central.readings[-1].get(("Power.Active.Import", None)) == 0.0)
        answer = await r.central.call(call.ClearChargingProfile(id=11))
        assert answer.status == "Accepted"
        await eventually(lambda: r.central.statuses[-1] == (1, "Charging"))
        answer = await r.central.call(call.ClearChargingProfile(id=11))
        assert answer.status == "Unknown"


class OnePhaseCar:
    """A small one-phase car that takes up to 16 A until `capacity_wh` more is in its battery."""

    def __init__(self, capacity_wh: float) -> None:
        self.capacity_wh = capacity_wh
        self.charged_wh = 0.0
        self.full = False
        self.offers: list[float] = []

    def step(self, dt_s: float, offered_a: float) -> tuple[float, tuple[float, float, float]]:
        self.offers.append(offered_a)
        current_a = 0.0 if self.full or offered_a < 6 else min(offered_a, 16.0)
        self.charged_wh += current_a * 230 * dt_s / 3600
        self.full = self.charged_wh >= self.capacity_wh
        return current_a * 230, (current_a, 0.0, 0.0)


async def test_a_car_model_drives_the_meter_values_and_suspends_when_full() -> None:
    async with rig() as r:
        car = OnePhaseCar(capacity_wh=1.2)  # about 1.2 s at 16 A on one phase
        await r.sim.plug_in(1, car=car)
        await eventually(lambda: any(m.get(("Current.Import", "L1")) == 16.0 for m in r.central.readings))
        charging = next(m for m in r.central.readings if m.get(("Current.Import", "L1")) == 16.0)
        assert charging[("Current.Import", "L2")] == 0.0 and charging[("Current.Import", "L3")] == 0.0
        assert charging[("Power.Active.Import", None)] == 16.0 * 230
        assert car.offers[0] == 32.0

        await eventually(lambda: (1, "SuspendedEV") in r.central.statuses)
        assert car.full and r.sim.statuses[1] == "SuspendedEV"
        await eventually(lambda: r.central.readings[-1].get(("Power.Active.Import", None)) == 0.0)
        assert r.central.readings[-1][("Energy.Active.Import.Register", None)] >= 1.0
        assert r.sim.current_a(1) == 0.0

        car.full, car.capacity_wh = False, 1e9  # the car wakes up (preconditioning, balancing)
        await eventually(lambda: r.central.statuses[-1] == (1, "Charging"))
