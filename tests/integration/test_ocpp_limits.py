"""One charger cannot flood the square: its messages are paced and its meter readings per frame
capped ([ocpp] max_messages_per_s, message_burst, max_samples_per_frame), every request is still
answered, and the technician gets one alarm naming the charger."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
from websockets.asyncio.client import connect

from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

RATE_PER_S, BURST, CAP = 20, 10, 5
FRAMES, READINGS = 60, 40


def _meter_values(n: int) -> str:
    readings = [
        {"timestamp": f"2026-12-07T12:{i // 60:02d}:{i % 60:02d}Z",
         "sampledValue": [{"value": str(1000 + n * READINGS + i), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}
        for i in range(READINGS)
    ]
    return json.dumps([2, f"mv{n}", "MeterValues", {"connectorId": 1, "meterValue": readings}])


async def test_a_flooding_charger_is_paced_capped_answered_and_alarmed(make_daemon):
    d = make_daemon(ocpp=f"max_messages_per_s = {RATE_PER_S}\nmessage_burst = {BURST}\nmax_samples_per_frame = {CAP}\n")
    d.start()
    async with connect(f"{d.ocpp_url}/CP01", subprotocols=["ocpp1.6"], open_timeout=10) as ws:  # type: ignore[list-item]
        started = time.monotonic()
        for n in range(FRAMES):  # all at once, never waiting for an answer
            await ws.send(_meter_values(n))
        answers = []
        async with asyncio.timeout(60):
            while len(answers) < FRAMES:
                frame = json.loads(await ws.recv())
                if frame[0] != 2:  # the gateway's own requests (status, profiles) are not our answers
                    answers.append(frame)
        took_s = time.monotonic() - started
    # every request answered as OCPP wants it, none refused
    assert sorted(a[1] for a in answers) == sorted(f"mv{n}" for n in range(FRAMES))
    assert {a[0] for a in answers} == {3}
    # paced: beyond the burst, no faster than the rate (a lower bound only, with room for rounding)
    assert took_s >= 0.9 * (FRAMES - BURST) / RATE_PER_S
    # capped: the newest CAP readings of each frame are kept, the rest never reached the database
    db = sqlite3.connect(d.folder / "state" / "laadplein.db")
    try:
        stored = db.execute("SELECT energy_wh FROM meter_samples WHERE charger_id = 'CP01'").fetchall()
    finally:
        db.close()
    assert len(stored) == FRAMES * CAP
    assert {w for (w,) in stored} == {1000 + n * READINGS + i for n in range(FRAMES) for i in range(READINGS - CAP, READINGS)}

    async def alarmed() -> bool:
        _, alarms = await d.aapi("GET", "/api/alarms")
        return any(a["key"] == "charger_over_limit:CP01" for a in alarms)

    await wait_until(alarmed, timeout_s=10, what="the over-limit alarm")
    _, alarms = await d.aapi("GET", "/api/alarms")
    (alarm,) = [a for a in alarms if a["key"] == "charger_over_limit:CP01"]
    assert "CP01" in alarm["message"]
