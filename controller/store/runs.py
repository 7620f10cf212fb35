"""Crash safety in the store: the leases a charger may still hold after a restart, and the daemon's
runs (a run that never recorded its stop ended uncleanly) with the sessions that ended unseen."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.store.connection import Connection
from drivers.contract.clock import parse_ts, wire_ts

RECONCILED = "Reconciled"
"""The stop reason of a session the gateway closed itself: its charger reported the connector free
and sent no StopTransaction (it ended while the gateway was down, and the charger lost the message)."""


MAX_METER_WH = 1e12
"""1 TWh: beyond any charger's energy register."""


@dataclass(frozen=True)
class LeaseBound:
    """The most a connector's charger may hold for a transaction: `limit_a` until `ends_at`."""

    key: str
    charger_id: str
    connector_id: int
    tx_id: int
    limit_a: float
    ends_at: datetime


@dataclass(frozen=True)
class Run:
    """One start of the daemon; `stopped_at` None for a run that ended uncleanly (or is running)."""

    id: int
    started_at: datetime
    alive_at: datetime
    stopped_at: datetime | None
    pid: int


def _run(row: sqlite3.Row) -> Run:
    return Run(
        row["id"], parse_ts(row["started_at"]), parse_ts(row["alive_at"]),
        None if row["stopped_at"] is None else parse_ts(row["stopped_at"]), row["pid"],
    )


class LeaseBounds:
    """The most each connector's charger may hold, written down (durably) before the lease goes out."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # ---- leases ---------------------------------------------------------------------------

    async def put(self, bound: LeaseBound, at: datetime) -> None:
        """Write a connector's lease bound durably (synchronous=FULL): it must survive a power cut
        that follows the SetChargingProfile it allows."""
        async with self._conn.write(durable=True) as db:
            await db.execute(
                "INSERT OR REPLACE INTO leases (key, charger_id, connector_id, tx_id, limit_a, ends_at, written_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bound.key, bound.charger_id, bound.connector_id, bound.tx_id, bound.limit_a,
                 wire_ts(bound.ends_at), wire_ts(at)),
            )

    async def lower(self, key: str, tx_id: int, limit_a: float) -> None:
        """The charger accepted a lower lease: lower the bound (a lost write only over-counts)."""
        async with self._conn.write() as db:
            await db.execute(
                "UPDATE leases SET limit_a = ? WHERE key = ? AND tx_id = ? AND limit_a > ?",
                (limit_a, key, tx_id, limit_a),
            )

    async def drop(self, key: str, tx_id: int) -> None:
        """The connector's lease for transaction `tx_id` ended with its session, or was taken back."""
        async with self._conn.write() as db:
            await db.execute("DELETE FROM leases WHERE key = ? AND tx_id = ?", (key, tx_id))

    async def all(self) -> dict[str, LeaseBound]:
        """Every lease bound on record, by connector key."""
        rows = await self._conn.fetch("SELECT * FROM leases ORDER BY key")
        return {
            r["key"]: LeaseBound(r["key"], r["charger_id"], r["connector_id"], r["tx_id"], r["limit_a"], parse_ts(r["ends_at"]))
            for r in rows
        }


class Runs:
    """The daemon's runs (one that never recorded its stop ended uncleanly) and the sessions that
    ended while it was down, closed by the gateway itself."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # ---- sessions closed by the gateway ---------------------------------------------------------

    async def reconcile_session(self, tx_id: int, stopped_at: datetime) -> dict[str, Any] | None:
        """Close an open session the charger no longer has, durably, at its last meter reading (or
        its start reading without samples). None if it was not open. Returns `{"id", "meter_stop_wh",
        "energy_wh", "last_sample_at"}`."""
        async with self._conn.write(durable=True) as db:
            async with db.execute(
                "SELECT s.meter_start_wh, (SELECT MAX(m.energy_wh) FROM meter_samples m WHERE m.tx_id = s.id)"
                " AS last_wh, (SELECT MAX(m.at) FROM meter_samples m WHERE m.tx_id = s.id) AS last_at"
                " FROM sessions s WHERE s.id = ? AND s.stopped_at IS NULL",
                (tx_id,),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            start_wh = row["meter_start_wh"]
            last_wh = row["last_wh"]
            # A reading no meter can show (stored before such readings were refused) is not trusted.
            usable = last_wh is not None and math.isfinite(last_wh) and start_wh <= last_wh < MAX_METER_WH
            stop_wh = round(last_wh) if usable else start_wh
            await db.execute(
                "UPDATE sessions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ? WHERE id = ?",
                (stop_wh, wire_ts(stopped_at), RECONCILED, tx_id),
            )
            await db.execute("DELETE FROM leases WHERE tx_id = ?", (tx_id,))
        return {"id": tx_id, "meter_stop_wh": stop_wh, "energy_wh": stop_wh - start_wh, "last_sample_at": row["last_at"]}

    # ---- runs -----------------------------------------------------------------------------------

    async def begin(self, at: datetime, pid: int) -> tuple[Run, Run | None]:
        """Record this start of the daemon; returns it and the run before it (None on a first start)."""
        async with self._conn.write(durable=True) as db:
            async with db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1") as cur:
                prev = await cur.fetchone()
            cur = await db.execute(
                "INSERT INTO runs (started_at, alive_at, pid) VALUES (?, ?, ?)", (wire_ts(at), wire_ts(at), pid)
            )
            run_id = cur.lastrowid
            # Keep a year of daily restarts at most: the table is a diagnostic, not an archive.
            await db.execute("DELETE FROM runs WHERE id <= ?", (run_id - 400,))
        assert run_id is not None
        return Run(run_id, at, at, None, pid), (None if prev is None else _run(prev))

    async def alive(self, run_id: int, at: datetime) -> None:
        """The daemon is still running (a sign of life for the next start to report)."""
        async with self._conn.write() as db:
            await db.execute("UPDATE runs SET alive_at = ? WHERE id = ?", (wire_ts(at), run_id))

    async def end(self, run_id: int, at: datetime) -> None:
        """This run stops cleanly."""
        async with self._conn.write(durable=True) as db:
            await db.execute("UPDATE runs SET alive_at = ?, stopped_at = ? WHERE id = ?", (wire_ts(at), wire_ts(at), run_id))
