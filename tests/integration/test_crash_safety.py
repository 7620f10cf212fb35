"""Crash safety of the real daemon: what a killed daemon finds on its restart.

A SIGKILL leaves the run without its clean stop: the restart raises an alarm that says so and
what was restored, and clears it once the chargers are back. Leases written down before they
went out bound what a charger may still hold. A session that ended while the daemon was down,
and whose StopTransaction the charger lost, is closed at its last meter reading.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import websockets

from tests.integration.harness import (
    Daemon,
    chargers,
    wait_until,
)

pytestmark = pytest.mark.integration


async def _alarms(d: Daemon) -> dict[str, dict]:
    return {a["key"]: a for a in (await d.aapi("GET", "/api/alarms"))[1]}


async def test_kill_restart_reports_the_unclean_stop_and_bounds_the_lease(make_daemon):
    d = make_daemon(chargers=1, grid_limit_a=32, control="period_s = 0.2\nlease_s = 30\n")
    d.start()
    async with chargers(d, "CP01") as sims:
        sim = sims["CP01"]
        await sim.plug_in(1)
        # one car on a 32 A square: its lease gives it the charger's maximum, above the 16 A safe default
        await wait_until(lambda: sim.applied_a(1) >= 31.9, 15, "the lease of 32 A applied")
        t_kill = time.monotonic()
        d.kill()
        await asyncio.to_thread(d.start)
        restart_s = time.monotonic() - t_kill
        log = d.log().split("===== run 2 =====")[1]
        held = re.search(r"CP01/1: transaction \d+ may still hold a lease of up to ([\d.]+) A", log)
        assert held is not None, log[-2000:]
        assert float(held.group(1)) == 32.0
        # the charger is back within a second or so: the alarm may already be cleared; the log has both
        await wait_until(lambda: sim.connected, 15, "the charger reconnected")

        async def restart_events() -> list[dict]:
            return [e for e in (await d.aapi("GET", "/api/events"))[1]
                    if (e.get("data") or {}).get("key") == "daemon_restart"]

        async def cleared() -> bool:
            return [e["kind"] for e in await restart_events()] == ["alarm", "alarm_cleared"]

        await wait_until(cleared, 10, "the restart alarm raised and cleared")
        assert "daemon_restart" not in await _alarms(d)
        alarm = (await restart_events())[0]
        assert "uncleanly" in alarm["message"], alarm
        assert "restored 1 open session(s)" in alarm["data"]["action"] and "1 lease bound(s)" in alarm["data"]["action"]
        print(f"crash safety: restarted {restart_s:.1f} s after SIGKILL; bound {held.group(1)} A; {alarm['message']}")
    assert d.stop() == 0
    d.start()  # after a clean stop: no restart alarm
    await asyncio.sleep(1.0)
    assert "daemon_restart" not in await _alarms(d)


class RawCharger:
    """A bare OCPP 1.6 charger: sends the frames a test writes, answers every call NotImplemented.
    It keeps no queue, like a charger whose StopTransaction got lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws = None
        self._answers: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._n = 0

    async def __aenter__(self) -> RawCharger:
        self._ws = await websockets.connect(self.url, subprotocols=["ocpp1.6"], open_timeout=5)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self._ws.close()

    async def _read(self) -> None:
        async for text in self._ws:
            frame = json.loads(text)
            if frame[0] == 2:
                await self._ws.send(json.dumps([4, frame[1], "NotImplemented", "", {}]))
            elif frame[1] in self._answers:
                self._answers.pop(frame[1]).set_result(frame)

    async def call(self, action: str, payload: dict) -> list:
        self._n += 1
        mid = f"m{self._n}"
        fut = asyncio.get_running_loop().create_future()
        self._answers[mid] = fut
        await self._ws.send(json.dumps([2, mid, action, payload]))
        return await asyncio.wait_for(fut, timeout=10)


NOW = "2026-11-28T13:00:00.000Z"


async def test_session_that_ended_while_the_daemon_was_down_is_reconciled(make_daemon):
    d = make_daemon(chargers=1, ocpp="reconcile_after_s = 5\n")
    d.start()
    url = f"{d.ocpp_url}/CP01"
    async with RawCharger(url) as cp:
        await cp.call("BootNotification", {"chargePointVendor": "Raw", "chargePointModel": "One"})
        await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})
        started = await cp.call("StartTransaction", {"connectorId": 1, "idTag": "ABC123", "meterStart": 1000, "timestamp": NOW})
        tx = started[2]["transactionId"]
        await cp.call("MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [
            {"timestamp": NOW, "sampledValue": [{"value": "1750", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]})
    d.kill()
    d.start()
    t0 = time.monotonic()
    async with RawCharger(url) as cp:  # back after the reboot: the car is gone, the stop was lost
        await cp.call("BootNotification", {"chargePointVendor": "Raw", "chargePointModel": "One"})
        await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})

        async def closed() -> bool:
            s = [s for s in (await d.aapi("GET", "/api/sessions"))[1] if s["id"] == tx]
            return bool(s and s[0]["stopped"])

        await wait_until(closed, 20, "the session closed by the gateway")
        took_s = time.monotonic() - t0
        s = [s for s in (await d.aapi("GET", "/api/sessions"))[1] if s["id"] == tx][0]
        assert s["stop_reason"] == "Reconciled" and s["energy_wh"] == 750

        async def reconcile_notes() -> list[dict]:
            return [e for e in (await d.aapi("GET", "/api/events"))[1] if e["kind"] == "session_reconciled"]

        # The cycle closes the session in the database at once but writes its events at the end
        # of the cycle (SquareState.note queues them): wait for the event, then check there is one.
        await wait_until(reconcile_notes, 10, "the session_reconciled event written")
        notes = await reconcile_notes()
        assert len(notes) == 1 and f"transaction {tx}" in notes[0]["message"] and notes[0]["bay"] == "B01"
        # the charger's StopTransaction, if it still comes, replaces the gateway's guess
        await cp.call("StopTransaction", {"transactionId": tx, "meterStop": 1900, "timestamp": NOW, "reason": "EVDisconnected"})
        s = [s for s in (await d.aapi("GET", "/api/sessions"))[1] if s["id"] == tx][0]
        assert s["stop_reason"] == "EVDisconnected" and s["energy_wh"] == 900
    print(f"reconcile: session {tx} closed {took_s:.1f} s after the charger came back (reconcile_after_s = 5)")
