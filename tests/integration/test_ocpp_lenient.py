"""Lenient mode end to end: the real daemon takes a lenient charger's schema breaks (mended, one
warning per charger and action), while a charger not flagged lenient gets CALLERRORs for the very
same frames. The chargers are raw WebSocket clients, so the frames go out exactly as written.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets

from tests.integration.harness import Daemon, square_toml, wait_until
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

LENIENT_ID = "LAX01"
STRICT_ID = "CP01"
LENIENT_CHARGER = (
    f'\n[[chargers]]\nid = "{LENIENT_ID}"\nmax_current_a = 32\nphases = 3\nconnectors = 1\nlenient = true\n'
    f'\n[[bays]]\nid = "BL1"\ncharger = "{LENIENT_ID}"\nconnector = 1\nsensor = false\n'
)
# A 2.0.1 "Occupied" connector, in the gateway's words (which are OCPP 1.6's) or the charger's.
PLUGGED = ("Occupied", "Preparing")
WARNING = "breaks the OCPP schema; accepted as it is flagged lenient"


class RawCharger:
    """A charger that writes its frames by hand and answers the gateway's own requests with NotImplemented."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL and return the gateway's answer (a CALLRESULT or CALLERROR frame)."""
        unique_id = f"m{next(self._ids)}"
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await self.ws.recv())
                if frame[0] == 2:
                    await self.ws.send(json.dumps([4, frame[1], "NotImplemented", "not in this test", {}]))
                elif frame[1] == unique_id:
                    return frame


def connect(d: Daemon, charger_id: str, subprotocol: str) -> websockets.connect:
    return websockets.connect(f"{d.ocpp_url}/{charger_id}", subprotocols=[subprotocol], open_timeout=5, close_timeout=2)


def now_with_offset() -> tuple[datetime, str]:
    """Now to the second, and as a charger that writes "+00:00" for Z would send it."""
    at = datetime.now(UTC).replace(microsecond=0)
    return at, at.isoformat()


def as_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def daemon(tmp_path, mosquitto):
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=1, connectors=1, extra=LENIENT_CHARGER)
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def warnings_of(d: Daemon, charger_id: str, action: str) -> list[str]:
    return [line for line in d.log().splitlines() if f"charger {charger_id}: {action} {WARNING}" in line]


async def test_16_lenient_charger_is_mended_and_a_strict_one_refused(daemon: Daemon) -> None:
    started_at, started_text = now_with_offset()
    boot = {"chargePointVendor": "Vendor", "chargePointModel": "Model", "firmwareVersion": "R2.11.7-build.2026-11-28+a3f9c2e1d4b5-production-signed"}
    status = {"connectorId": 1, "status": "preparing", "timestamp": started_text}  # no errorCode, status in lower case
    start = {"connectorId": 1, "idTag": "04A1B2C3D4", "meterStart": 12000.0, "timestamp": started_text}

    def meter_values(transaction_id: int, energy_wh: float) -> dict[str, Any]:
        return {
            "connectorId": 1,
            "transactionId": transaction_id,
            "meterValue": [{
                "timestamp": datetime.now(UTC).isoformat(),
                "sampledValue": [
                    {"value": energy_wh, "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": 15.5, "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                ],
            }],
        }

    async with connect(daemon, STRICT_ID, "ocpp1.6") as ws:
        strict = RawCharger(ws)
        assert (await strict.call("BootNotification", boot))[:3] == [4, "m1", "TypeConstraintViolation"]
        assert (await strict.call("StatusNotification", status))[2] == "FormationViolation"
        assert (await strict.call("StartTransaction", start))[2] == "TypeConstraintViolation"
        assert (await strict.call("MeterValues", meter_values(1, 12500.0)))[2] == "TypeConstraintViolation"

    async with connect(daemon, LENIENT_ID, "ocpp1.6") as ws:
        lenient = RawCharger(ws)
        answer = await lenient.call("BootNotification", boot)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        assert (await lenient.call("StatusNotification", status))[:3] == [3, "m2", {}]
        answer = await lenient.call("StartTransaction", start)
        assert answer[0] == 3 and answer[2]["idTagInfo"]["status"] == "Accepted"
        transaction_id = answer[2]["transactionId"]
        for energy_wh in (12500.0, 12750.0):  # the second break of a kind within the minute logs nothing more
            answer = await lenient.call("MeterValues", meter_values(transaction_id, energy_wh))
            assert answer[0] == 3 and answer[2] == {}

        sessions = (await daemon.aapi("GET", "/api/sessions"))[1]
        assert [(s["id"], s["charger"], s["connector"]) for s in sessions] == [(transaction_id, LENIENT_ID, 1)]
        assert as_time(sessions[0]["started"]) == started_at and sessions[0]["started"].endswith("Z")
        assert sessions[0]["meter_start_wh"] == 12000 and sessions[0]["energy_wh"] == 750
        charger = next(c for c in (await daemon.aapi("GET", "/api/chargers"))[1] if c["id"] == LENIENT_ID)
        assert charger["connectors"][0]["current_a"][0] == 15.5

    await wait_until(lambda: warnings_of(daemon, LENIENT_ID, "MeterValues"), 5, "the MeterValues warning")
    assert len(warnings_of(daemon, LENIENT_ID, "MeterValues")) == 1
    for action, fix in (
        ("BootNotification", "firmwareVersion: truncated to 50 characters"),
        ("StatusNotification", "errorCode: missing, set to 'NoError'"),
        ("StartTransaction", "meterStart: whole number sent with a fraction"),
        ("MeterValues", "meterValue[].sampledValue[].value: number sent where a string is due"),
    ):
        lines = warnings_of(daemon, LENIENT_ID, action)
        assert len(lines) == 1 and fix in lines[0], (action, lines)
    assert not warnings_of(daemon, STRICT_ID, "MeterValues")


async def test_201_lenient_charger_is_mended_and_a_strict_one_refused(daemon: Daemon) -> None:
    _, now_text = now_with_offset()
    boot = {"chargingStation": {"vendorName": "Vendor", "model": "Model"}, "reason": "powerUp"}
    status = {"timestamp": now_text, "connectorStatus": "occupied", "evseId": 1, "connectorId": 1}
    meter_values = {
        "evseId": 1,
        "meterValue": [{
            "timestamp": now_text,
            "sampledValue": [
                {"value": "16.2", "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}},
                {"value": "15.9", "measurand": "Current.Import", "phase": "L2", "unitOfMeasure": {"unit": "A"}},
            ],
        }],
    }

    async with connect(daemon, STRICT_ID, "ocpp2.0.1") as ws:
        strict = RawCharger(ws)
        assert (await strict.call("BootNotification", boot))[2] == "FormatViolation"
        assert (await strict.call("StatusNotification", status))[2] == "FormatViolation"
        assert (await strict.call("MeterValues", meter_values))[2] == "TypeConstraintViolation"

    async with connect(daemon, LENIENT_ID, "ocpp2.0.1") as ws:
        assert ws.subprotocol == "ocpp2.0.1"
        lenient = RawCharger(ws)
        answer = await lenient.call("BootNotification", boot)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        assert (await lenient.call("StatusNotification", status))[:3] == [3, "m2", {}]
        assert (await lenient.call("MeterValues", meter_values))[:3] == [3, "m3", {}]

        async def live() -> bool:
            chargers = (await daemon.aapi("GET", "/api/chargers"))[1]
            connector = next(c for c in chargers if c["id"] == LENIENT_ID)["connectors"][0]
            return connector["status"] in PLUGGED and connector["current_a"][:2] == [16.2, 15.9]

        await wait_until(live, 5, "the lenient charger's status and currents in /api/chargers")

    await wait_until(lambda: warnings_of(daemon, LENIENT_ID, "MeterValues"), 5, "the MeterValues warning")
    for action, fix in (
        ("BootNotification", "reason: enum value respelled ('powerUp' as 'PowerUp')"),
        ("StatusNotification", "timestamp: time rewritten in UTC"),
        ("MeterValues", "meterValue[].sampledValue[].value: number sent as a string (e.g. '16.2') x2"),
    ):
        lines = warnings_of(daemon, LENIENT_ID, action)
        assert len(lines) == 1 and fix in lines[0], (action, lines)
    chargers = (await daemon.aapi("GET", "/api/chargers"))[1]
    assert next(c for c in chargers if c["id"] == STRICT_ID)["connectors"][0]["status"] not in PLUGGED
