"""Attacks from the charger side: foreign transaction ids, lying meters, stale readings, a stolen charger id
and hostile text."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bench.attack_report import FUSE, SESSIONS, Row
from bench.attack_rig import GRID_A, held_a, planned_grid_a
from drivers.sim.charger16 import SimCharger

Sims = dict[str, SimCharger]
BELIEVABLE_A = 34.0  # A per phase: above any limit it holds, below 32 A x 1.1


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def frame(action: str, payload: dict[str, Any]) -> str:
    return json.dumps([2, f"atk-{uuid.uuid4().hex[:12]}", action, payload])


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql, args).fetchall()


async def watch_worst(sims: Sims, seconds: float) -> tuple[float, float]:
    """Over `seconds`: the worst planned grid current (A per phase) and how long it was above the fuse (s)."""
    worst, over_s, step = 0.0, 0.0, 0.1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        planned = planned_grid_a(sims)
        worst = max(worst, planned)
        over_s += step if planned > GRID_A + 0.05 else 0.0
        await asyncio.sleep(step)
    return worst, over_s


@dataclass
class Held:
    """The limits the cars held over a window: the mean of their sum, and each car's lowest (A)."""

    mean_total_a: float
    lowest_a: dict[str, float]

    def lowest_text(self) -> str:
        return ", ".join(f"{k} {a:.1f} A" for k, a in sorted(self.lowest_a.items()))


async def cars_held(sims: Sims, attacker: Any, honest: list[tuple[str, int]], seconds: float) -> Held:
    """Sample every 0.1 s for `seconds` what the attacker's car and the honest cars hold."""
    cars = [(attacker.charger_id, 1), *honest]
    totals: list[float] = []
    lowest = {f"{cid}/{c}": 999.0 for cid, c in cars}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = {f"{cid}/{c}": held_a(sims[cid], c) for cid, c in cars}
        totals.append(sum(now.values()))
        lowest = {k: min(lowest[k], a) for k, a in now.items()}
        await asyncio.sleep(0.1)
    return Held(sum(totals) / max(1, len(totals)), lowest)


async def fuse_attacks(
    sims: Sims, attacker: Any, honest: list[tuple[str, int]]
) -> list[Row]:
    """A lying meter on the attacker's own charging connector: +9999 A, then -9999 A."""
    rows = []
    base, _ = await watch_worst(sims, 3.0)
    rows.append(
        Row(
            "2",
            "baseline: no attack, planned grid current above the fuse",
            1,
            max(0.0, base - GRID_A),
            0,
            f"worst planned {base:.1f} A of a {GRID_A:g} A fuse",
            total=FUSE,
            unit=" A",
        )
    )
    attacker.fake_a[1] = 9999.0
    worst, over_s = await watch_worst(sims, 8.0)
    attacker.fake_a.pop(1)
    rows.append(
        Row(
            "2",
            "meter reports +9999 A: planned grid current above the fuse",
            8,
            max(0.0, worst - GRID_A),
            0,
            f"worst planned {worst:.1f} A (rest of the site + limits held), {over_s:.1f} s above {GRID_A:g} A",
            total=FUSE,
            unit=" A",
        )
    )
    await asyncio.sleep(4.0)  # the honest readings come back
    # The cars' limits with no lie, then with the lie: a square short of room takes turns, so who holds
    # current changes from one window to the next; what the lie must not change is how much all the
    # cars together may draw.
    control = await cars_held(sims, attacker, honest, 6.0)
    attacker.fake_a[1] = -9999.0
    lying = await cars_held(sims, attacker, honest, 6.0)
    attacker.fake_a.pop(1)
    lost_a = max(0.0, control.mean_total_a - lying.mean_total_a)
    rows.append(
        Row(
            "2",
            "meter reports -9999 A: the cars' limits lost (all cars together, mean A per phase)",
            6,
            round(lost_a, 1),
            2.0,
            f"together {control.mean_total_a:.1f} A without the lie, {lying.mean_total_a:.1f} A with it;"
            f" lowest held with the lie: {lying.lowest_text()}",
            unit=" A",
        )
    )
    await asyncio.sleep(4.0)
    # A believable lie: more than its car draws (nothing: its car is full), but within what its charger
    # can give (32 A x 1.1), so the reading counts and comes off the grid meter's reading.
    car = attacker._cars.get(1)
    attacker._cars[1] = (0.0, attacker.phases)
    attacker.fake_a[1] = BELIEVABLE_A
    worst, over_s = await watch_worst(sims, 15.0)
    attacker.fake_a.pop(1)
    if car is not None:
        attacker._cars[1] = car
    rows.append(
        Row(
            "2",
            f"meter reports a believable {BELIEVABLE_A:g} A (within the charger's maximum x 1.1):"
            " planned grid current above the fuse",
            15,
            round(max(0.0, worst - GRID_A), 1),
            0,
            f"worst planned {worst:.1f} A (rest of the site + limits held), {over_s:.1f} s above {GRID_A:g} A",
            total=FUSE,
            unit=" A",
        )
    )
    await asyncio.sleep(4.0)
    return rows


async def stale_current(
    sim: SimCharger, connector: int, bay: str, status: Callable[[], Awaitable[dict]]
) -> Row:
    """The car stops, the cable stays in (Finishing), and a late reading taken before the stop arrives:
    does that old current still show (and count) for the Finishing connector?"""
    before = now_text()
    await asyncio.sleep(0.3)
    await sim.stop(connector)  # StopTransaction, then Finishing
    await asyncio.sleep(0.5)
    await sim.send_raw(
        frame(
            "MeterValues",
            {
                "connectorId": connector,
                "meterValue": [
                    {
                        "timestamp": before,
                        "sampledValue": [
                            {
                                "value": "20.0",
                                "measurand": "Current.Import",
                                "phase": f"L{p}",
                                "unit": "A",
                            }
                            for p in (1, 2, 3)
                        ],
                    }
                ],
            },
        ),
        timeout_s=5,
    )
    await asyncio.sleep(1.5)
    snap = await status()
    shown = next(
        (b.get("current_a") for b in snap.get("bays", []) if b.get("id") == bay), None
    )
    return Row(
        "2",
        "stale current (a reading from before the stop) shown for a Finishing connector",
        1,
        int(bool(shown)),
        0,
        f"bay {bay} Finishing shows current_a = {shown!r} in /api/status",
    )


async def unknown_connector(
    attacker: SimCharger, sessions: Callable[[], Awaitable[list[dict]]]
) -> Row:
    """A charger starts a transaction on a connector its config does not have."""
    answer = await attacker.send_raw(
        frame(
            "StartTransaction",
            {
                "connectorId": 9,
                "idTag": "ATTACK-TAG",
                "meterStart": 0,
                "timestamp": now_text(),
            },
        ),
        timeout_s=5,
    )
    await asyncio.sleep(0.5)
    opened = [
        s
        for s in await sessions()
        if s.get("charger") == attacker.charger_id and s.get("connector") == 9
    ]
    # The session is recorded either way (the charger holds a transaction id and will stop it); what
    # must not happen is an authorized one, which power sharing could neither steer nor count.
    authorized = '"Accepted"' in str(answer)
    return Row(
        "+",
        "sessions authorized on a connector not in the config",
        1,
        int(authorized),
        0,
        f"StartTransaction on connector 9 answered {str(answer)[:100]}; sessions recorded on it: {len(opened)}",
    )


async def foreign_transactions(
    attacker: SimCharger,
    victims: list[tuple[SimCharger, int]],
    db: Path,
    sessions: Callable[[], Awaitable[list[dict]]],
) -> list[Row]:
    """The attacker stops one victim's session and writes meter values into another's."""
    (stop_sim, stop_c), (meter_sim, meter_c) = victims
    stop_tx, meter_tx = (
        stop_sim.transactions.get(stop_c),
        meter_sim.transactions.get(meter_c),
    )
    rows = []
    if stop_tx is None:
        rows.append(
            Row(
                "1",
                "StopTransaction with another charger's transaction id",
                0,
                None,
                0,
                f"{stop_sim.charger_id} had no session to attack",
                total=SESSIONS,
            )
        )
    else:
        answer = await attacker.send_raw(
            frame(
                "StopTransaction",
                {
                    "transactionId": stop_tx,
                    "meterStop": 999_999_999,
                    "timestamp": now_text(),
                    "reason": "Other",
                },
            ),
            timeout_s=5,
        )
        await asyncio.sleep(0.5)
        mine = next(
            (s for s in await sessions() if str(s.get("id")) == str(stop_tx)), {}
        )
        touched = bool(mine.get("stopped")) or (mine.get("energy_wh") or 0) > 1_000_000
        rows.append(
            Row(
                "1",
                "StopTransaction with another charger's transaction id",
                1,
                int(touched),
                0,
                f"{stop_sim.charger_id}'s session {stop_tx}: stopped={mine.get('stopped')!r}, "
                f"energy_wh={mine.get('energy_wh')!r}; answer {str(answer)[:90]}",
                total=SESSIONS,
            )
        )
    if meter_tx is None:
        rows.append(
            Row(
                "1",
                "MeterValues with another charger's transaction id",
                0,
                None,
                0,
                f"{meter_sim.charger_id} had no session to attack",
                total=SESSIONS,
            )
        )
    else:
        marker = 987_654_321
        answer = await attacker.send_raw(
            frame(
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": meter_tx,
                    "meterValue": [
                        {
                            "timestamp": now_text(),
                            "sampledValue": [
                                {
                                    "value": str(marker),
                                    "measurand": "Energy.Active.Import.Register",
                                    "unit": "Wh",
                                }
                            ],
                        }
                    ],
                },
            ),
            timeout_s=5,
        )
        await asyncio.sleep(1.5)  # samples may be written in groups
        found = db_rows(
            db,
            "SELECT count(*) FROM meter_samples WHERE tx_id = ? AND energy_wh = ?",
            meter_tx,
            marker,
        )[0][0]
        rows.append(
            Row(
                "1",
                "MeterValues with another charger's transaction id",
                1,
                int(found > 0),
                0,
                f"samples with the forged register stored under {meter_sim.charger_id}'s transaction "
                f"{meter_tx}: {found}; answer {str(answer)[:90]}",
                total=SESSIONS,
            )
        )
    return rows


async def hijack(
    url: str,
    victim: SimCharger | None,
    victim_id: str,
    connector: int,
    sessions: Callable[[], Awaitable[list[dict]]],
) -> list[Row]:
    """Connect as a passwordless charger (OCPP bound to 0.0.0.0, reached over 127.0.0.1) and end its session."""
    tx = victim.transactions.get(connector) if victim is not None else None
    accepted, touched, detail = 0, 0, ""
    try:
        async with connect(
            f"{url}/{victim_id}", subprotocols=[Subprotocol("ocpp1.6")], open_timeout=5
        ) as ws:
            accepted = 1
            detail = "handshake accepted (101)"
            if tx is not None:
                await ws.send(
                    frame(
                        "StopTransaction",
                        {
                            "transactionId": tx,
                            "meterStop": 999_999_999,
                            "timestamp": now_text(),
                            "reason": "Other",
                        },
                    )
                )
                try:
                    detail += (
                        "; first frame back: "
                        + str(await asyncio.wait_for(ws.recv(), 5))[:60]
                    )
                except Exception as exc:  # noqa: BLE001 - the bench reports whatever happened
                    detail += f"; no answer ({type(exc).__name__})"
    except InvalidStatus as exc:
        detail = f"handshake refused with HTTP {exc.response.status_code}"
    except (OSError, TimeoutError) as exc:
        detail = f"no connection: {exc}"
    if accepted and tx is not None:
        await asyncio.sleep(0.5)
        mine = next((s for s in await sessions() if str(s.get("id")) == str(tx)), {})
        touched = int(bool(mine.get("stopped")))
        detail += f"; {victim_id}'s session {tx} stopped={mine.get('stopped')!r}"
    return [
        Row(
            "3",
            "connections accepted for a passwordless charger on a 0.0.0.0 bind",
            1,
            accepted,
            0,
            detail,
        ),
        Row(
            "3",
            "sessions taken over through a passwordless charger id",
            1,
            touched if tx is not None else (0 if not accepted else None),
            0,
            detail
            if tx is not None
            else f"{victim_id} never got a session: the id is refused without a password, so nobody can take one over ({detail})"
            if not accepted
            else f"{victim_id} never got a session: {detail}",
            total=SESSIONS,
        ),
    ]


async def hostile_text(
    attacker: SimCharger,
    log_text: Callable[[], str],
    events: Callable[[], Awaitable[list[dict]]],
) -> Row:
    """Boot strings and error info with ESC sequences and a forged log line: do they reach the log raw?"""
    esc = "\x1b[2J\x1b[31m"
    await attacker.send_raw(
        frame(
            "StatusNotification",
            {
                "connectorId": 2,
                "errorCode": "OtherError",
                "status": "Faulted",
                "timestamp": now_text(),
                "info": f"{esc}boom\nFORGED-STATUS line",
                "vendorErrorCode": f"{esc}E1",
                "vendorId": "x\x07",
            },
        ),
        timeout_s=5,
    )
    await attacker.send_raw(
        frame(
            "BootNotification",
            {
                "chargePointVendor": f"v{esc}",
                "chargePointModel": "m\nFORGED-BOOT line",
                "firmwareVersion": f"{esc}1",
            },
        ),
        timeout_s=5,
    )
    await attacker.send_raw(
        frame(
            "StatusNotification",
            {
                "connectorId": 2,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": now_text(),
            },
        ),
        timeout_s=5,
    )
    await asyncio.sleep(1.0)
    text = json.dumps(await events(), ensure_ascii=False)
    log = log_text()
    in_events = text.count("\x1b") + text.count("\x07")
    in_log = log.count("\x1b") + log.count("\x07")
    forged = sum(1 for line in log.splitlines() if line.startswith("FORGED"))
    return Row(
        "9",
        "raw ESC/BEL bytes and forged lines from a charger in the event log and the daemon log",
        3,
        in_events + in_log + forged,
        0,
        f"control bytes in events: {in_events}, in the daemon log: {in_log}; forged log lines: {forged}",
    )
