"""The real daemon serving an OCPP 2.0.1 charger (a bare client on the ocpp library's v201 ChargePoint,
validating every frame against the official schemas): set-up, a transaction with leases, replay."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result

from tests.integration.harness import Daemon, square_toml, wait_until
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Station(ChargePoint):
    """A 2.0.1 charging station that answers the gateway's calls and remembers them."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.received: list[tuple[str, dict]] = []
        self.variables: dict[tuple[str, str], str] = {("ChargingStation", "PhaseRotation"): "RST"}

    @on("SetChargingProfile")
    def set_profile(self, evse_id: int, charging_profile: dict, **_: Any) -> Any:
        self.received.append(("SetChargingProfile", {"evse_id": evse_id, **charging_profile}))
        return call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def clear_profile(self, **kw: Any) -> Any:
        self.received.append(("ClearChargingProfile", kw))
        return call_result.ClearChargingProfile(status="Accepted")

    @on("SetVariables")
    def set_variables(self, set_variable_data: list, **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            self.variables[(item["component"]["name"], item["variable"]["name"])] = item["attribute_value"]
            results.append({"attribute_status": "Accepted", "component": item["component"], "variable": item["variable"]})
        self.received.append(("SetVariables", {"data": set_variable_data}))
        return call_result.SetVariables(set_variable_result=results)

    @on("GetVariables")
    def get_variables(self, get_variable_data: list, **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            value = self.variables.get((item["component"]["name"], item["variable"]["name"]))
            entry = {"component": item["component"], "variable": item["variable"]}
            results.append({**entry, "attribute_status": "Accepted", "attribute_value": value} if value else {**entry, "attribute_status": "UnknownVariable"})
        return call_result.GetVariables(get_variable_result=results)

    @on("TriggerMessage")
    def trigger(self, requested_message: str, **kw: Any) -> Any:
        self.received.append(("TriggerMessage", {"requested_message": requested_message, **kw}))
        return call_result.TriggerMessage(status="Accepted")

    def leases(self) -> list[dict]:
        return [p for a, p in self.received if a == "SetChargingProfile" and p["charging_profile_purpose"] == "TxProfile"]


@contextlib.asynccontextmanager
async def station(daemon: Daemon, charger_id: str):
    async with websockets.connect(f"{daemon.ocpp_url}/{charger_id}", subprotocols=["ocpp2.0.1"]) as ws:
        cp = Station(charger_id, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


def meter(energy_wh: float, amps: float) -> list[dict]:
    values = [{"value": energy_wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]
    values += [{"value": amps, "measurand": "Current.Import", "phase": f"L{i}", "unitOfMeasure": {"unit": "A"}} for i in (1, 2, 3)]
    return [{"timestamp": now(), "sampledValue": values}]


@pytest.fixture
def daemon(tmp_path, mosquitto):
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, control="period_s = 0.2\nlease_s = 30\nreaction_s = 2\n")
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    yield d
    d.stop()


def bay(daemon: Daemon, bay_id: str) -> dict:
    return next(b for b in daemon.api("GET", "/api/bays")[1] if b["id"] == bay_id)


async def test_a_201_station_is_set_up_charges_under_leases_and_its_session_is_recorded(daemon: Daemon) -> None:
    async with station(daemon, "CP01") as cp:
        boot = await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        assert boot.status == "Accepted" and boot.current_time.endswith("Z")
        await cp.call(call.StatusNotification(timestamp=now(), connector_status="Available", evse_id=1, connector_id=1))
        # set-up: the safe default on EVSE 0, meter variables set
        await wait_until(lambda: any(a == "SetVariables" for a, _ in cp.received), 10, "SetVariables")
        defaults = [p for a, p in cp.received if a == "SetChargingProfile" and p["charging_profile_purpose"] == "TxDefaultProfile"]
        assert defaults and defaults[0]["evse_id"] == 0 and defaults[0]["id"] >= 990000
        assert cp.variables[("SampledDataCtrlr", "TxUpdatedInterval")] == "5"
        # EVSE 2 did not report: 5 s after the connect it is asked for its status, EVSE 1 is not
        trigger2 = ("TriggerMessage", {"requested_message": "StatusNotification", "evse": {"id": 2, "connector_id": 1}})
        await wait_until(lambda: trigger2 in cp.received, 10, "the status of EVSE 2 asked for")
        assert [p for a, p in cp.received if a == "TriggerMessage"] == [trigger2[1]]
        await cp.call(call.StatusNotification(timestamp=now(), connector_status="Available", evse_id=2, connector_id=1))
        await wait_until(lambda: bay(daemon, "B01")["status"] == "Available", 5, "B01 Available")

        tx = str(uuid.uuid4())
        await cp.call(call.StatusNotification(timestamp=now(), connector_status="Occupied", evse_id=1, connector_id=1))
        started = await cp.call(call.TransactionEvent(
            event_type="Started", timestamp=now(), trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": tx, "charging_state": "Charging"},
            evse={"id": 1, "connector_id": 1}, id_token={"id_token": "CARD01", "type": "ISO14443"},
            meter_value=meter(1000, 0),
        ))
        assert started.id_token_info == {"status": "Accepted"}
        await wait_until(lambda: bay(daemon, "B01")["status"] == "Charging", 5, "B01 Charging")
        await wait_until(lambda: cp.leases(), 10, "a lease")
        lease = cp.leases()[-1]
        assert lease["transaction_id"] == tx and lease["evse_id"] == 1
        assert lease["charging_schedule"][0]["charging_rate_unit"] == "A"
        for seq in (1, 2):
            await cp.call(call.TransactionEvent(
                event_type="Updated", timestamp=now(), trigger_reason="MeterValuePeriodic", seq_no=seq,
                transaction_info={"transaction_id": tx, "charging_state": "Charging"}, meter_value=meter(1000 + 100 * seq, 10),
            ))
        await cp.call(call.TransactionEvent(
            event_type="Ended", timestamp=now(), trigger_reason="EVCommunicationLost", seq_no=3,
            transaction_info={"transaction_id": tx, "charging_state": "Idle", "stopped_reason": "EVDisconnected"},
            meter_value=meter(1250, 0),
        ))
        await wait_until(lambda: bay(daemon, "B01")["status"] == "Finishing", 5, "B01 Finishing")
        sessions = daemon.api("GET", "/api/sessions")[1]
        mine = [s for s in sessions if s["charger"] == "CP01"]
        assert len(mine) == 1 and mine[0]["stopped"] is not None and mine[0]["energy_wh"] == 250
        assert "CARD01" not in daemon.log()


async def test_offline_events_are_replayed_in_order_and_a_repeat_is_not_counted_twice(daemon: Daemon) -> None:
    tx = str(uuid.uuid4())
    async with station(daemon, "CP02") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        await cp.call(call.TransactionEvent(
            event_type="Started", timestamp=now(), trigger_reason="CablePluggedIn", seq_no=0,
            transaction_info={"transaction_id": tx, "charging_state": "EVConnected"}, evse={"id": 2, "connector_id": 1},
            meter_value=meter(500, 0),
        ))
    # the link was down: the station replays what it queued, flagged offline, the last one twice
    async with station(daemon, "CP02") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        events = [
            ("Updated", 1, "Authorized", {"id_token": {"id_token": "CARD02", "type": "ISO14443"}}, 600),
            ("Updated", 2, "MeterValuePeriodic", {}, 700),
            ("Ended", 3, "StopAuthorized", {}, 800),
            ("Ended", 3, "StopAuthorized", {}, 800),
        ]
        for kind, seq, trigger, extra, wh in events:
            info = {"transaction_id": tx, "charging_state": "Idle"} | ({"stopped_reason": "Local"} if kind == "Ended" else {})
            answer = await cp.call(call.TransactionEvent(
                event_type=kind, timestamp=now(), trigger_reason=trigger, seq_no=seq, offline=True,
                transaction_info=info, meter_value=meter(wh, 0), **extra,
            ))
            if extra:
                assert answer.id_token_info == {"status": "Accepted"}
    mine = [s for s in daemon.api("GET", "/api/sessions")[1] if s["charger"] == "CP02"]
    assert len(mine) == 1 and mine[0]["energy_wh"] == 300 and mine[0]["id"] == tx
    assert "seqNo 3 repeated" in daemon.log()


async def test_the_call_endpoint_speaks_the_chargers_version(daemon: Daemon) -> None:
    async with station(daemon, "CP01") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        status, answer = await daemon.aapi("POST", "/api/chargers/CP01/call/GetVariables",
                                           {"getVariableData": [{"component": {"name": "ChargingStation"}, "variable": {"name": "PhaseRotation"}}]})
        assert status == 200 and answer["getVariableResult"][0]["attributeValue"] == "RST"
        # a 1.6 payload is refused before it goes out; an action 2.0.1 does not have too
        status, answer = await daemon.aapi("POST", "/api/chargers/CP01/call/Reset", {"type": "Hard"})
        assert status == 400 and "2.0.1" in answer["error"]
        status, answer = await daemon.aapi("POST", "/api/chargers/CP01/call/RemoteStartTransaction", {"idTag": "X"})
        assert status == 400 and "not an OCPP 2.0.1 request" in answer["error"]
        # the station has no Reset handler: its CALLERROR comes back as 502 with the code
        status, answer = await daemon.aapi("POST", "/api/chargers/CP01/call/Reset", {"type": "Immediate"})
        assert status == 502 and answer["code"] == "NotImplemented"


def tx_event(kind: str, tx: str, seq: int, wh: float | None = None, **kw: Any) -> Any:
    info = {"transaction_id": tx, "charging_state": "Charging"} | ({"stopped_reason": "Local"} if kind == "Ended" else {})
    trigger = {"Started": "CablePluggedIn", "Updated": "MeterValuePeriodic", "Ended": "StopAuthorized"}[kind]
    extra = {"meter_value": meter(wh, 0)} if wh is not None else {}
    return call.TransactionEvent(event_type=kind, timestamp=now(), trigger_reason=trigger, seq_no=seq, transaction_info=info, **extra, **kw)


async def test_a_start_without_a_reading_takes_the_first_reading_and_a_reused_id_is_a_new_session(daemon: Daemon) -> None:
    async with station(daemon, "CP01") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        await cp.call(tx_event("Started", "7", 0, evse={"id": 1, "connector_id": 1}))
        await cp.call(tx_event("Updated", "7", 1, 5000))
        await cp.call(tx_event("Ended", "7", 2, 5400))
        # a charger that counts its ids again after a reset names a new transaction "7"
        await cp.call(tx_event("Started", "7", 0, 9000, evse={"id": 1, "connector_id": 1}))
        await cp.call(tx_event("Ended", "7", 1, 9100))
    mine = [s for s in daemon.api("GET", "/api/sessions")[1] if s["charger"] == "CP01"]
    assert [(s["id"], s["energy_wh"]) for s in mine] == [("7", 400), ("7", 100)]


async def test_after_a_restart_an_end_without_a_reading_keeps_the_energy_on_record(daemon: Daemon) -> None:
    tx = str(uuid.uuid4())
    async with station(daemon, "CP02") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        await cp.call(tx_event("Started", tx, 0, 1000, evse={"id": 1, "connector_id": 1}, id_token={"id_token": "C", "type": "ISO14443"}))
        await cp.call(tx_event("Updated", tx, 1, 1600))
    daemon.stop()
    daemon.start()
    async with station(daemon, "CP02") as cp:
        await cp.call(call.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))
        answer = await cp.call(tx_event("Ended", tx, 2, id_token={"id_token": "C", "type": "ISO14443"}))
        assert answer.id_token_info == {"status": "Accepted"}
    (mine,) = [s for s in daemon.api("GET", "/api/sessions")[1] if s["charger"] == "CP02"]
    assert mine["stopped"] is not None and mine["energy_wh"] == 600
