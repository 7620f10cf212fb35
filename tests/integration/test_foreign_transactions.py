"""The real daemon with two chargers: CP02 (a simulated charger) charges a car, CP01 (a bare client
speaking for a hostile or confused charger) names CP02's transaction in a StopTransaction,
MeterValues or TransactionEvent. CP02's session, its energy and its leases must not move; CP01 is
answered and named in one alarm."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201

from drivers.sim.charger201 import SimCharger201
from tests.integration.harness import Daemon, chargers, wait_until

pytestmark = pytest.mark.integration

HUGE_WH = 999_999_999


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def bare(daemon: Daemon, charger_id: str, version: str):
    kind = ChargePoint16 if version == "ocpp1.6" else ChargePoint201
    async with websockets.connect(f"{daemon.ocpp_url}/{charger_id}", subprotocols=[version]) as ws:
        cp = kind(charger_id, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


@contextlib.asynccontextmanager
async def sim201(daemon: Daemon, charger_id: str):
    sim = SimCharger201(daemon.ocpp_url, charger_id, connectors=2, meter_interval_s=1.0)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.run(ready), name=f"sim-{charger_id}")
        await asyncio.wait_for(ready.wait(), timeout=10)
        try:
            yield sim
        finally:
            task.cancel()


def session(daemon: Daemon, charger: str) -> dict:
    return next(s for s in daemon.api("GET", "/api/sessions")[1] if s["charger"] == charger)


def foreign_alarms(daemon: Daemon) -> list[dict]:
    return [a for a in daemon.api("GET", "/api/alarms")[1] if a["key"].startswith("foreign_transaction:")]


async def charging(daemon: Daemon, sim: Any) -> dict:
    """CP02's car is charging under a lease and its session has readings."""
    await sim.plug_in(1, car_max_a=16.0)
    await wait_until(lambda: (session(daemon, "CP02")["energy_wh"] or 0) > 0, 20, "CP02's session to have readings")
    await wait_until(lambda: sim.tx_profile_in_force(1, datetime.now(UTC)) is not None, 20, "a lease on CP02")
    return session(daemon, "CP02")


async def survives(daemon: Daemon, sim: Any, before: dict) -> None:
    """CP02's session is open, under a lease, its energy its own; its own stop closes it at its own reading."""
    after = session(daemon, "CP02")
    assert after["id"] == before["id"] and after["stopped"] is None, after
    assert after["energy_wh"] < 1_000_000, after  # an open session's energy is its newest sample's
    assert 1 in sim.transactions
    bay = next(b for b in daemon.api("GET", "/api/bays")[1] if b["id"] == "B03")
    assert bay["status"] == "Charging", bay
    await sim.stop(1)
    await wait_until(lambda: session(daemon, "CP02")["stopped"] is not None, 10, "CP02's own stop")
    stopped = session(daemon, "CP02")
    assert stopped["energy_wh"] == pytest.approx(sim.energy_wh[1], abs=1.0), stopped
    # Its stored samples are its own charger's, none of them the forged register.
    status, samples = daemon.api("GET", f"/api/sessions/{stopped['id']}/meter_values?charger=CP02")
    assert status == 200 and samples, (status, samples)
    assert {m["charger"] for m in samples} == {"CP02"}, samples
    assert all((m["energy_wh"] or 0) < HUGE_WH for m in samples), samples
    assert [m["at"] for m in samples] == sorted(m["at"] for m in samples)
    assert daemon.api("GET", "/api/sessions/no-such-session/meter_values")[0] == 404


async def test_16_a_charger_cannot_stop_or_meter_another_chargers_session(make_daemon) -> None:
    d = make_daemon(control="period_s = 0.2\nlease_s = 30\nreaction_s = 2\nmeter_interval_s = 1\n")
    d.start()
    async with chargers(d, "CP02") as sims, bare(d, "CP01", "ocpp1.6") as cp01:
        sim = sims["CP02"]
        await cp01.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        before = await charging(d, sim)
        theirs = int(before["id"])

        sample = {"timestamp": now(), "sampledValue": [{"value": str(HUGE_WH), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}
        await cp01.call(call16.MeterValues(connector_id=1, transaction_id=theirs, meter_value=[sample]))
        stop = await cp01.call(call16.StopTransaction(meter_stop=HUGE_WH, timestamp=now(), transaction_id=theirs, id_tag="FOREIGN-TAG"))
        assert stop.id_tag_info == {"status": "Invalid"}

        await asyncio.sleep(1.0)  # a cycle or more: a lost transaction would show in the bay and its leases
        assert sim.tx_profile_in_force(1, datetime.now(UTC)) is not None
        await wait_until(lambda: foreign_alarms(d), 10, "the alarm")
        [alarm] = foreign_alarms(d)
        assert alarm["key"] == "foreign_transaction:CP01" and alarm["charger"] == "CP01"
        assert "charger CP01 connector 1" in alarm["message"] and "CP02/1" in alarm["message"], alarm
        assert "FOREIGN-TAG" not in str(alarm)
        await survives(d, sim, before)
    events = d.api("GET", "/api/events?since=2000-01-01T00:00:00Z")[1]
    assert sum(1 for e in events if e["kind"] == "foreign_transaction") == 1
    assert "FOREIGN-TAG" not in d.log()


async def test_201_another_chargers_transaction_id_and_another_evses_are_not_applied(make_daemon) -> None:
    d = make_daemon(control="period_s = 0.2\nlease_s = 30\nreaction_s = 2\nmeter_interval_s = 1\n")
    d.start()
    async with sim201(d, "CP02") as sim, bare(d, "CP01", "ocpp2.0.1") as cp01:
        await cp01.call(call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        before = await charging(d, sim)
        theirs = str(sim.transactions[1])

        def meter(wh: float) -> list[dict]:
            return [{"timestamp": now(), "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}]

        # CP02's transaction id from CP01: a 2.0.1 charger's ids are its own, so this is CP01's own transaction
        await cp01.call(call201.TransactionEvent(
            event_type="Ended", timestamp=now(), trigger_reason="StopAuthorized", seq_no=0,
            transaction_info={"transaction_id": theirs, "stopped_reason": "Local"}, evse={"id": 1, "connector_id": 1},
            meter_value=meter(HUGE_WH),
        ))
        # CP01's own transaction on EVSE 1, then an event naming it on EVSE 2
        await cp01.call(call201.TransactionEvent(
            event_type="Started", timestamp=now(), trigger_reason="CablePluggedIn", seq_no=0,
            transaction_info={"transaction_id": "OWN-1", "charging_state": "EVConnected"}, evse={"id": 1, "connector_id": 1},
            meter_value=meter(100),
        ))
        answer = await cp01.call(call201.TransactionEvent(
            event_type="Ended", timestamp=now(), trigger_reason="StopAuthorized", seq_no=1,
            transaction_info={"transaction_id": "OWN-1", "stopped_reason": "Local"}, evse={"id": 2, "connector_id": 1},
            id_token={"id_token": "FOREIGN-TAG", "type": "ISO14443"}, meter_value=meter(HUGE_WH),
        ))
        assert answer.id_token_info == {"status": "Invalid"}
        open_own = [s for s in d.api("GET", "/api/sessions")[1] if s["charger"] == "CP01" and s["stopped"] is None]
        assert [(s["connector"], s["energy_wh"] or 0) for s in open_own] == [(1, 0)]  # OWN-1, on EVSE 1, untouched

        await wait_until(lambda: foreign_alarms(d), 10, "the alarm")
        [alarm] = foreign_alarms(d)
        assert alarm["key"] == "foreign_transaction:CP01" and "charger CP01 connector 2" in alarm["message"], alarm
        await asyncio.sleep(1.0)
        assert sim.tx_profile_in_force(1, datetime.now(UTC)) is not None
        await survives(d, sim, before)
