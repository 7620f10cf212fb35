"""The real daemon taking hostile text from chargers: an ESC sequence in a vendor name, a line
break in error info and a security event, an unknown charger's id with a URL-encoded line break
or ESC. The daemon's log, the event log (GET /api/events), the chargers' list and the console
drawn from the API's answers carry none of them raw."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import UTC, datetime

import pytest
import websockets
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from rich.console import Console
from websockets.exceptions import InvalidStatus

from controller.cli.console import CONNECTED, render
from tests.integration.harness import Daemon, wait_until

pytestmark = pytest.mark.integration

CLEAR_SCREEN = "\x1b[2J"
FORGED = "\r\nWARNING forged"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def bare(daemon: Daemon, path: str, version: str):
    kind = ChargePoint16 if version == "ocpp1.6" else ChargePoint201
    async with websockets.connect(f"{daemon.ocpp_url}/{path}", subprotocols=[version]) as ws:
        cp = kind(path, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


def raw_free(text: str) -> bool:
    return "\x1b" not in text and "\r" not in text and "\n" not in text


def events(daemon: Daemon) -> list[dict]:
    return daemon.api("GET", "/api/events?since=2000-01-01T00:00:00Z")[1]


async def test_hostile_charger_text_is_escaped_in_logs_events_api_and_console(make_daemon) -> None:
    d = make_daemon(ocpp="allow_unknown_chargers = true\n")
    d.start()
    async with bare(d, "CP01", "ocpp1.6") as cp01, bare(d, "CP02", "ocpp2.0.1") as cp02:
        await cp01.call(call16.BootNotification(
            charge_point_vendor="ABB" + CLEAR_SCREEN, charge_point_model="M" + FORGED, firmware_version="1.0" + FORGED,
        ))
        await cp01.call(call16.StatusNotification(
            connector_id=1, error_code="OtherError", status="Faulted", info="relay" + FORGED, vendor_error_code=CLEAR_SCREEN,
        ))
        await cp02.call(call201.BootNotification(
            charging_station={"model": "M" + FORGED, "vendor_name": "V" + CLEAR_SCREEN}, reason="PowerUp",
        ))
        await cp02.call(call201.SecurityEventNotification(type="TamperDetectionActivated" + FORGED, timestamp=now(), tech_info="lid" + FORGED + CLEAR_SCREEN))
        await wait_until(lambda: any(e["kind"] == "connector_status" and "Faulted" in e["message"] for e in events(d)), 10, "the fault in the event log")
        await wait_until(lambda: sum(e["kind"] == "charger_booted" for e in events(d)) >= 2, 10, "both boots in the event log")

    seen = events(d)
    booted = [e["message"] for e in seen if e["kind"] == "charger_booted"]
    assert any("ABB\\x1b[2J" in m for m in booted), booted
    assert any("relay\\x0d\\x0aWARNING forged" in e["message"] for e in seen if e["kind"] == "connector_status")
    assert all(raw_free(e["message"]) for e in seen), [e["message"] for e in seen if not raw_free(e["message"])]
    chargers = d.api("GET", "/api/chargers")[1]
    assert all(raw_free(str(c.get(k, ""))) for c in chargers for k in ("vendor", "model", "firmware")), chargers

    # an id no config could name is refused at the handshake, even with unknown chargers allowed
    for hostile in ("CP%0AWARNING%20forged", "CP%1B%5B2J", "CP%0D%0A"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{d.ocpp_url}/{hostile}", subprotocols=["ocpp1.6"]):
                pass
        assert refused.value.response.status_code == 404, hostile
    log = d.log()
    assert "\x1b" not in log and "\r" not in log
    assert not any(line.startswith("WARNING forged") for line in log.splitlines())
    assert "lid\\x0d\\x0aWARNING forged\\x1b[2J" in log  # the security event, shown escaped
    assert "refused charger CP\\x0aWARNING forged from" in log  # the refused id, shown escaped

    status = d.api("GET", "/api/status")[1]
    alarms = d.api("GET", "/api/alarms")[1]
    console = Console(file=io.StringIO(), width=160, height=48, color_system=None, force_terminal=True)
    console.print(render(status, alarms, seen, width=160, height=48, connection=CONNECTED, help_shown=False, now_local="now"))
    screen = console.file.getvalue()
    assert "\x1b" not in screen and "\r" not in screen
    assert not any("WARNING forged" in line and "\\x0a" not in line for line in screen.splitlines())
