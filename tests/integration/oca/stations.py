"""Scripted stations for the OCA test cases: an OCPP 1.6J charge point and a 2.0.1 charging station on
the ocpp library. Each checks every frame both ways against the official schemas, answers the gateway's
requests as a compliant station would (or as a test tells it to) and keeps each of those requests,
camelCase as on the wire, for the test to assert on. Also the daemon each test module runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp import v16, v201
from ocpp.exceptions import NotImplementedError as NotImplementedCallError
from ocpp.exceptions import OCPPError, ValidationError
from ocpp.messages import Call, MessageType, unpack, validate_payload
from websockets.headers import build_authorization_basic

from tests.integration.harness import Daemon, square_toml
from tests.integration.ports import free_port

WAIT_S = 5.0  # how long a test waits for a frame the gateway must send (its calls time out after 5 s)
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
CONTROL = "period_s = 0.2\nlease_s = 30\nreaction_s = 2\n"
PASSWORD = "oca-basic-auth-16"  # the secured squares' Basic Auth password (OCTT takes 16-20 characters)

Answer = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | OCPPError


def wire_time(offset_s: float = 0.0) -> str:
    """UTC now plus `offset_s`, as OCPP sends it (milliseconds, Z)."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts_or_none(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@dataclass(frozen=True)
class Frame:
    """A request the gateway sent to a station: its action and payload as on the wire, and the answer."""

    action: str
    payload: dict[str, Any]
    at: float  # monotonic seconds
    answer: dict[str, Any] | None = None  # the station's CALLRESULT payload (None: it sent a CALLERROR)


class _Scripted:
    """What both versions' stations share: the record of the gateway's requests and the answers to them."""

    _ocpp_version: str

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.received: list[Frame] = []
        self.answers: dict[str, Answer] = {}  # action -> what to answer instead of the default
        self.invalid: list[str] = []  # requests of the gateway that broke the schema
        self.list_version = 0  # the local authorization list version held

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            self.invalid.append(f"unreadable frame {raw_msg[:200]!r}: {exc}")
            return
        if msg.message_type_id != MessageType.Call:
            await super().route_message(raw_msg)
            return
        await self._answer(msg, json.loads(raw_msg)[3])

    async def _answer(self, msg: Call, payload: dict[str, Any]) -> None:
        answer = None
        try:
            answer = await self._reply(msg, payload)
        finally:  # kept once answered: a test that sees the request sees the station's state after it
            self.received.append(Frame(msg.action, payload, time.monotonic(), answer))

    async def _reply(self, msg: Call, payload: dict[str, Any]) -> dict[str, Any] | None:
        try:
            await validate_payload(msg, self._ocpp_version)
        except (OCPPError, ValidationError) as exc:
            self.invalid.append(f"{msg.action} {json.dumps(payload)[:300]}: {exc}")
            await self._send(msg.create_call_error(exc).to_json())
            return None
        answer = self.answers.get(msg.action)
        if answer is None:
            answer = self.default_answer(msg.action, payload)
        elif callable(answer):
            answer = answer(payload)
        if answer is None:
            answer = NotImplementedCallError(description=f"{msg.action} is not scripted")
        if isinstance(answer, OCPPError):
            await self._send(msg.create_call_error(answer).to_json())
            return None
        result = msg.create_call_result(answer)
        await validate_payload(result, self._ocpp_version)  # the station's own answer must fit too
        await self._send(result.to_json())
        return result.payload

    def default_answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """What a compliant station answers; None for a request it does not know."""
        raise NotImplementedError

    def mark(self) -> int:
        """A point in the record: `expect(..., after=mark)` looks only at requests from there on."""
        return len(self.received)

    def frames(self, action: str, after: int = 0) -> list[dict[str, Any]]:
        return [f.payload for f in self.received[after:] if f.action == action]

    async def expect(
        self, action: str, where: Callable[[dict[str, Any]], bool] = lambda p: True, *, after: int = 0,
        timeout_s: float = WAIT_S,
    ) -> dict[str, Any]:
        """The first request `action` (from index `after`) for which `where` holds, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for frame in self.received[after:]:
                if frame.action == action and where(frame.payload):
                    return frame.payload
            if time.monotonic() > deadline:
                seen = ", ".join(f"{f.action} {json.dumps(f.payload)[:120]}" for f in self.received[after:][-12:])
                raise AssertionError(f"{self.id}: no matching {action} within {timeout_s} s; the gateway sent: {seen or 'nothing'}")
            await asyncio.sleep(0.02)

    async def absent(self, action: str, *, after: int = 0, for_s: float = 1.0) -> None:
        """Assert that the gateway sends no `action` (from index `after`) for `for_s`."""
        await asyncio.sleep(for_s)
        assert not self.frames(action, after), f"{self.id}: unexpected {action}: {self.frames(action, after)}"

    async def ask(self, payload: Any) -> Any:
        """Send a request to the gateway (schema-checked both ways); a CALLERROR raises."""
        return await self.call(payload, suppress=False)


class Station16(_Scripted, v16.ChargePoint):
    """An OCPP 1.6J charge point with a configuration and a local list."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.config: dict[str, str] = {
            "ConnectorPhaseRotation": "0.RST",
            "MeterValueSampleInterval": "60",
            "MeterValuesSampledData": "Energy.Active.Import.Register",
            "LocalAuthListEnabled": "false",
            "SendLocalListMaxLength": "20",
        }

    def default_answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if action == "ChangeConfiguration":
            self.config[payload["key"]] = payload["value"]
            return {"status": "Accepted"}
        if action == "GetConfiguration":
            keys = payload.get("key") or sorted(self.config)
            known = [{"key": k, "readonly": False, "value": self.config[k]} for k in keys if k in self.config]
            unknown = [k for k in keys if k not in self.config]
            return {"configurationKey": known, **({"unknownKey": unknown} if unknown else {})}
        if action == "GetLocalListVersion":
            return {"listVersion": self.list_version}
        if action == "SendLocalList":
            self.list_version = payload["listVersion"]
            return {"status": "Accepted"}
        if action == "UnlockConnector":
            return {"status": "Unlocked"}
        if action == "GetCompositeSchedule":
            return {
                "status": "Accepted", "connectorId": payload["connectorId"], "scheduleStart": wire_time(),
                "chargingSchedule": {"duration": payload["duration"], "chargingRateUnit": "A",
                                     "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]},
            }
        if action == "ClearCache":
            return {"status": "Accepted"}
        if action in ("ClearChargingProfile", "SetChargingProfile", "ChangeAvailability", "Reset", "TriggerMessage",
                      "RemoteStartTransaction", "RemoteStopTransaction", "DataTransfer"):
            return {"status": "Accepted"}
        return None


class Station201(_Scripted, v201.ChargePoint):
    """An OCPP 2.0.1 charging station with a device model and a local list."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.variables: dict[tuple[str, str], str] = {
            ("ChargingStation", "PhaseRotation"): "RST",
            ("LocalAuthListCtrlr", "ItemsPerMessage"): "20",
        }

    def default_answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if action == "SetVariables":
            results = []
            for item in payload["setVariableData"]:
                self.variables[(item["component"]["name"], item["variable"]["name"])] = item["attributeValue"]
                results.append({"attributeStatus": "Accepted", "component": item["component"], "variable": item["variable"]})
            return {"setVariableResult": results}
        if action == "GetVariables":
            results = []
            for item in payload["getVariableData"]:
                value = self.variables.get((item["component"]["name"], item["variable"]["name"]))
                entry = {"component": item["component"], "variable": item["variable"]}
                results.append({**entry, "attributeStatus": "Accepted", "attributeValue": value} if value is not None
                               else {**entry, "attributeStatus": "UnknownVariable"})
            return {"getVariableResult": results}
        if action == "GetLocalListVersion":
            return {"versionNumber": self.list_version}
        if action == "SendLocalList":
            self.list_version = payload["versionNumber"]
            return {"status": "Accepted"}
        if action == "UnlockConnector":
            return {"status": "Unlocked"}
        if action == "GetCompositeSchedule":
            return {"status": "Accepted", "schedule": {
                "evseId": payload["evseId"], "duration": payload["duration"], "scheduleStart": wire_time(),
                "chargingRateUnit": payload.get("chargingRateUnit", "A"),
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
            }}
        if action in ("ClearChargingProfile", "SetChargingProfile", "ChangeAvailability", "Reset", "TriggerMessage",
                      "RequestStartTransaction", "RequestStopTransaction", "ClearCache"):
            return {"status": "Accepted"}
        return None


STATIONS = {"1.6": Station16, "2.0.1": Station201}


@contextlib.asynccontextmanager
async def connect(
    daemon: Daemon, charger_id: str, version: str = "1.6", *, password: str | None = None, user: str | None = None,
    subprotocols: list[str] | None = None, tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Any]:
    """A station connected to the daemon (Basic Auth with `password`, wss:// with `tls`), served by a task.

    On a clean exit it asserts that every request the gateway sent fitted the version's schema.
    """
    base = daemon.ocpp_url.replace("ws://", "wss://") if tls is not None else daemon.ocpp_url
    headers = {"Authorization": build_authorization_basic(user or charger_id, password)} if password is not None else {}
    async with websockets.connect(
        f"{base}/{charger_id}", subprotocols=subprotocols or [SUBPROTOCOL[version]], additional_headers=headers,
        ssl=tls, open_timeout=WAIT_S, close_timeout=1,
    ) as ws:
        station = STATIONS[version](charger_id, ws, response_timeout=WAIT_S)
        task = asyncio.create_task(station.start(), name=f"station-{charger_id}")
        try:
            yield station
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task
    assert not station.invalid, f"{charger_id}: the gateway sent frames that break the OCPP {version} schema: {station.invalid}"


async def boot16(cp: Station16, connectors: int = 2, status: str = "Available") -> Any:
    """Cold boot: BootNotification, then a StatusNotification for connector 0 and every connector."""
    boot = await cp.ask(v16.call.BootNotification(charge_point_vendor="OCA", charge_point_model="Scripted"))
    for n in range(connectors + 1):
        await cp.ask(v16.call.StatusNotification(connector_id=n, error_code="NoError", status=status if n else "Available"))
    return boot


async def boot201(cp: Station201, evses: int = 2, status: str = "Available") -> Any:
    """Cold boot: BootNotification, then a StatusNotification for every EVSE's connector."""
    boot = await cp.ask(v201.call.BootNotification(charging_station={"model": "Scripted", "vendor_name": "OCA"}, reason="PowerUp"))
    for evse in range(1, evses + 1):
        await cp.ask(v201.call.StatusNotification(timestamp=wire_time(), connector_status=status, evse_id=evse, connector_id=1))
    return boot


def meter16(energy_wh: float, amps: float, context: str = "Sample.Periodic") -> list[dict[str, Any]]:
    """One 1.6 meterValue: the energy register and a current per phase."""
    values = [{"value": f"{energy_wh:g}", "context": context, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    values += [{"value": f"{amps:g}", "context": context, "measurand": "Current.Import", "phase": f"L{i}", "unit": "A"} for i in (1, 2, 3)]
    return [{"timestamp": wire_time(), "sampledValue": values}]


def meter201(energy_wh: float, amps: float, context: str = "Sample.Periodic") -> list[dict[str, Any]]:
    """One 2.0.1 meterValue (snake_case, for the library's call classes): energy and a current per phase."""
    values = [{"value": energy_wh, "context": context, "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}}]
    values += [{"value": amps, "context": context, "measurand": "Current.Import", "phase": f"L{i}", "unit_of_measure": {"unit": "A"}}
               for i in (1, 2, 3)]
    return [{"timestamp": wire_time(), "sampled_value": values}]


def id_token(tag: str, kind: str = "ISO14443") -> dict[str, str]:
    """A 2.0.1 idToken (snake_case, for the library's call classes)."""
    return {"id_token": tag, "type": kind}


class Tx:
    """A 2.0.1 transaction as a station reports it: its own id, its EVSE and the next seqNo."""

    def __init__(self, cs: Station201, evse: int) -> None:
        self.cs, self.evse, self.id, self.seq = cs, evse, str(uuid.uuid4()), 0

    async def event(self, kind: str, trigger: str, state: str | None = None, **extra: Any) -> Any:
        """A TransactionEvent of this transaction (`info` adds to transactionInfo); its answer."""
        info = {"transaction_id": self.id} | ({"charging_state": state} if state else {}) | extra.pop("info", {})
        answer = await self.cs.ask(v201.call.TransactionEvent(
            event_type=kind, timestamp=extra.pop("timestamp", wire_time()), trigger_reason=trigger, seq_no=self.seq,
            transaction_info=info, evse={"id": self.evse, "connector_id": 1}, **extra,
        ))
        self.seq += 1
        return answer


async def energy_transfer_started(cs: Station201, evse: int, tag: str = "OCA-TOKEN-1") -> Tx:
    """The OCTT's reusable states Authorized (authorization first) and EnergyTransferStarted."""
    assert (await cs.ask(v201.call.Authorize(id_token=id_token(tag)))).id_token_info["status"] == "Accepted"
    tx = Tx(cs, evse)
    started = await tx.event("Started", "Authorized", "EVConnected", id_token=id_token(tag), meter_value=meter201(1000, 0, "Transaction.Begin"))
    assert started.id_token_info == {"status": "Accepted"}
    await cs.ask(v201.call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=evse, connector_id=1))
    await tx.event("Updated", "ChargingStateChanged", "Charging")
    return tx


def session_of(daemon: Daemon, charger_id: str, transaction_id: str | int) -> dict[str, Any]:
    """The one session the gateway shows for a transaction (by the id the charger knows)."""
    (found,) = [s for s in sessions(daemon, charger_id) if s["id"] == transaction_id]
    return found


async def call_api(daemon: Daemon, charger_id: str, action: str, payload: dict[str, Any]) -> tuple[int, Any]:
    """POST /api/chargers/<id>/call/<action>: the operator's way to send a request to a charger."""
    return await daemon.aapi("POST", f"/api/chargers/{charger_id}/call/{action}", payload)


def bay(daemon: Daemon, bay_id: str) -> dict[str, Any]:
    return next(b for b in daemon.api("GET", "/api/bays")[1] if b["id"] == bay_id)


def charger(daemon: Daemon, charger_id: str) -> dict[str, Any]:
    return next(c for c in daemon.api("GET", "/api/chargers")[1] if c["id"] == charger_id)


def sessions(daemon: Daemon, charger_id: str) -> list[dict[str, Any]]:
    return [s for s in daemon.api("GET", "/api/sessions")[1] if s["charger"] == charger_id]


def events(daemon: Daemon, kind: str, charger_id: str) -> list[dict[str, Any]]:
    return [e for e in daemon.api("GET", "/api/events?limit=2000")[1] if e["kind"] == kind and e["charger"] == charger_id]


def put_token(daemon: Daemon, tag: str, status: str = "Accepted", **extra: Any) -> str:
    code, body = daemon.api("PUT", "/api/tokens", {"tag": tag, "status": status, **extra})
    assert code == 200, body
    return body["tag_hash"]


async def until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll `condition()` (run in a thread: it may call the API) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def running_square(folder: Path, broker_port: int, **square: Any) -> Iterator[Daemon]:
    """The daemon on free ports with a square of `square_toml(**square)`, stopped on exit."""
    ocpp_port, api_port = free_port(), free_port()
    square.setdefault("control", CONTROL)
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker_port, **square)
    daemon = Daemon(folder, text, api_port=api_port, ocpp_port=ocpp_port)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def square_fixture(name: str, *, setup: Callable[[Daemon], None] | None = None, **square: Any) -> Any:
    """A module's shared daemon as a module-scoped fixture (assign it to `square`): `square_toml(**square)`
    on the package's broker, `setup` run on it once it is up."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory, oca_broker: Any) -> Iterator[Daemon]:
        with running_square(tmp_path_factory.mktemp(name), oca_broker.port, **square) as daemon:
            if setup is not None:
                setup(daemon)
            yield daemon

    return fixture
