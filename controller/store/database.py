"""The gateway's SQLite database: sessions, meter values, events, light commands, overrides,
alarms and the local authorization list (spec §7, §8).

Methods take aware datetimes; rows meant to be served come back JSON-ready with times as `wire_ts`
text, overrides with datetimes, because the controller compares them with its clock.

Past 400 lines because it holds one small method per statement for the daemon's everyday records;
the parts with a life of their own are in `tokens.py` (the local list), `runs.py` (lease bounds,
runs) and `connection.py` (the connection and its lock).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import aiosqlite

from controller.store.connection import Connection
from controller.store.runs import RECONCILED, LeaseBounds, Runs
from controller.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    StoreError,
    migrate,
    pragma,
)
from controller.store.secrets import TagVault
from controller.store.setups import SetupMemory
from controller.store.tokens import TokenList
from drivers.contract.clock import parse_ts, wire_ts

__all__ = [
    "BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "Store", "StoreError",
]

BUSY_TIMEOUT_MS = 5000
_TAG_HASH = re.compile(r"[0-9a-f]{64}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return wire_ts(value)
    raise TypeError(f"event data holds a {type(value).__name__}, which has no JSON form")


_SESSION_SELECT = """
    SELECT s.*, CASE WHEN s.stopped_at IS NULL THEN (
        SELECT m.energy_wh FROM meter_samples m
        WHERE m.tx_id = s.id AND m.energy_wh IS NOT NULL
        ORDER BY m.at DESC, m.id DESC LIMIT 1) END AS latest_wh
    FROM sessions s"""


def _session(row: sqlite3.Row) -> dict[str, Any]:
    if row["meter_stop_wh"] is not None:
        energy_wh = row["meter_stop_wh"] - row["meter_start_wh"]
    elif row["latest_wh"] is not None:
        energy_wh = round(row["latest_wh"] - row["meter_start_wh"])
    else:
        energy_wh = None
    return {
        "id": row["id"],
        "charger": row["charger_id"],
        "connector": row["connector_id"],
        "bay": row["bay_id"],
        "started": row["started_at"],
        "stopped": row["stopped_at"],
        "energy_wh": energy_wh,
        "tag_hash": row["tag_hash"],
        "meter_start_wh": row["meter_start_wh"],
        "meter_stop_wh": row["meter_stop_wh"],
        "stop_reason": row["stop_reason"],
        "charger_tx": row["charger_tx"],
    }


def _event(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "ts": row["ts"],
        "kind": row["kind"],
        "bay": row["bay_id"],
        "charger": row["charger_id"],
        "message": row["message"],
        "data": None if row["data"] is None else json.loads(row["data"]),
    }


class Store:
    """The gateway's records on one SQLite connection (`controller.store.connection`): sessions,
    meter values, events, lights, overrides, alarms and passwords here; the local list in `tokens`,
    lease bounds in `leases`, the daemon's runs in `runs`. Open with `await Store.open(path, vault)`."""

    def __init__(self, db: aiosqlite.Connection, vault: TagVault, path: Path) -> None:
        self._conn = conn = Connection(db)
        self._vault = vault
        self.path = path
        self.tokens = TokenList(conn, vault)
        self.leases = LeaseBounds(conn)
        self.runs = Runs(conn)
        self.setups = SetupMemory(conn)

    @classmethod
    async def open(cls, path: Path, vault: TagVault) -> Store:
        """Open (or create) the database at `path` and migrate it forward to `SCHEMA_VERSION`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = await pragma(db, "journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await migrate(db, path, vault)
        except BaseException:
            await db.close()
            raise
        return cls(db, vault, path)

    async def close(self) -> None:
        """Close the connection; committed data is already on disk. Closing twice is harmless."""
        await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def vault(self) -> TagVault:
        return self._vault

    def hash_tag(self, tag: str) -> str:
        """The keyed hash under which a tag appears everywhere (see `TagVault.hash_tag`)."""
        return self._vault.hash_tag(tag)

    async def info(self) -> dict[str, Any]:
        """For health checks: `{"schema_version", "journal_mode", "synchronous"}`."""
        return await self._conn.info()

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete sessions stopped before `cutoff` with their meter samples, loose samples,
        events and cleared alarms from before it; returns the number of rows deleted.
        Open sessions and their samples are kept whatever their age."""
        z = wire_ts(cutoff)
        statements = (
            "DELETE FROM meter_samples WHERE tx_id IN"
            " (SELECT id FROM sessions WHERE stopped_at IS NOT NULL AND stopped_at < ?)",
            "DELETE FROM sessions WHERE stopped_at IS NOT NULL AND stopped_at < ?",
            "DELETE FROM meter_samples WHERE at < ? AND (tx_id IS NULL OR tx_id NOT IN (SELECT id FROM sessions))",
            "DELETE FROM events WHERE ts < ?",
            "DELETE FROM alarms WHERE cleared_at IS NOT NULL AND cleared_at < ?",
        )
        deleted = 0
        async with self._conn.write() as db:
            for sql in statements:
                cur = await db.execute(sql, (z,))
                deleted += cur.rowcount
        return deleted


    # sessions

    async def start_transaction(
        self, charger_id: str, connector_id: int, bay_id: str | None, tag_hash: str,
        meter_start_wh: int, started_at: datetime, charger_tx: str | None = None,
    ) -> int:
        """Record a started session, durably, and return its transaction id (never reused).

        `charger_tx` is the name an OCPP 2.0.1 charger gave the transaction (unique per charger).
        """
        if not _TAG_HASH.fullmatch(tag_hash):
            # The value is not echoed: if it is not a hash, it may be a tag.
            raise ValueError("tag_hash must be a TagVault.hash_tag value")
        started = wire_ts(started_at)
        async with self._conn.write(durable=True) as db:
            cur = await db.execute(
                "INSERT INTO sessions (charger_id, connector_id, bay_id, tag_hash, meter_start_wh,"
                " started_at, leases_tracked, charger_tx) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                (charger_id, connector_id, bay_id, tag_hash, meter_start_wh, started, charger_tx),
            )
            tx_id = cur.lastrowid
        assert tx_id is not None
        return tx_id

    async def stop_transaction(
        self, tx_id: int, meter_stop_wh: int, stopped_at: datetime, reason: str | None,
    ) -> dict[str, Any] | None:
        """Record a session's end, durably; None for an unknown id. A session already stopped
        is returned as it is (a charger may repeat a StopTransaction it got no answer to), unless
        the gateway closed it itself (RECONCILED): the charger's own stop then replaces that."""
        stopped = wire_ts(stopped_at)
        async with self._conn.write(durable=True) as db:
            await db.execute(
                "UPDATE sessions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?"
                f" WHERE id = ? AND (stopped_at IS NULL OR stop_reason = '{RECONCILED}')",
                (meter_stop_wh, stopped, reason, tx_id),
            )
            async with db.execute(_SESSION_SELECT + " WHERE s.id = ?", (tx_id,)) as cur:
                row = await cur.fetchone()
        return None if row is None else _session(row)

    async def session(self, tx_id: int) -> dict[str, Any] | None:
        rows = await self._conn.fetch(_SESSION_SELECT + " WHERE s.id = ?", (tx_id,))
        return _session(rows[0]) if rows else None

    async def session_by_charger_tx(self, charger_id: str, charger_tx: str) -> dict[str, Any] | None:
        """The session an OCPP 2.0.1 charger calls `charger_tx`, or None."""
        rows = await self._conn.fetch(
            _SESSION_SELECT + " WHERE s.charger_id = ? AND s.charger_tx = ? ORDER BY s.id DESC LIMIT 1", (charger_id, charger_tx)
        )
        return _session(rows[0]) if rows else None

    async def set_tag_hash(self, tx_id: int, tag_hash: str) -> None:
        """Name the tag of a session that started without one (OCPP 2.0.1: the car was plugged in first)."""
        if not _TAG_HASH.fullmatch(tag_hash):
            raise ValueError("tag_hash must be a TagVault.hash_tag value")
        async with self._conn.write(durable=True) as db:
            await db.execute("UPDATE sessions SET tag_hash = ? WHERE id = ?", (tag_hash, tx_id))

    async def set_meter_start(self, tx_id: int, meter_start_wh: int) -> None:
        """The start reading of a session that started without one (OCPP 2.0.1 leaves it out at times)."""
        async with self._conn.write(durable=True) as db:
            await db.execute("UPDATE sessions SET meter_start_wh = ? WHERE id = ?", (meter_start_wh, tx_id))

    # charger passwords (hashes only: controller.store.passwords)

    async def charger_password_hashes(self) -> list[dict[str, Any]]:
        """The Basic Auth password hashes set through the API: `{"charger_id", "hash", "set_at"}`."""
        rows = await self._conn.fetch("SELECT charger_id, hash, set_at FROM charger_passwords ORDER BY charger_id")
        return [dict(r) for r in rows]

    async def put_charger_password(self, charger_id: str, encoded: str, at: datetime) -> None:
        """Store a charger's new password hash, durably."""
        async with self._conn.write(durable=True) as db:
            await db.execute(
                "INSERT OR REPLACE INTO charger_passwords (charger_id, hash, set_at) VALUES (?, ?, ?)",
                (charger_id, encoded, wire_ts(at)),
            )

    async def open_sessions(self) -> list[dict[str, Any]]:
        """Sessions not yet stopped, oldest first; each also says whether its leases were written
        down (`leases_tracked`: a session recorded by this schema or a later one)."""
        rows = await self._conn.fetch(_SESSION_SELECT + " WHERE s.stopped_at IS NULL ORDER BY s.id")
        return [_session(r) | {"leases_tracked": bool(r["leases_tracked"])} for r in rows]

    async def sessions(self, since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Sessions started at or after `since`, oldest first; without `since`, the newest
        `limit` sessions, still oldest first."""
        if since is not None:
            rows = await self._conn.fetch(
                _SESSION_SELECT + " WHERE s.started_at >= ? ORDER BY s.started_at, s.id LIMIT ?",
                (wire_ts(since), limit),
            )
        else:
            rows = await self._conn.fetch(_SESSION_SELECT + " ORDER BY s.started_at DESC, s.id DESC LIMIT ?", (limit,))
            rows.reverse()
        return [_session(r) for r in rows]

    async def sessions_by_public_id(self, public_id: str, charger_id: str | None = None) -> list[dict[str, Any]]:
        """The sessions the API calls `public_id` (interfaces.md §5: the transaction id the charger knows:
        an OCPP 2.0.1 charger's own string, else the gateway's number), of one charger when given. More
        than one only for 2.0.1 ids, which are unique per charger, not per square."""
        where = " WHERE (s.charger_tx = ? OR (s.charger_tx IS NULL AND CAST(s.id AS TEXT) = ?))"
        args: tuple[Any, ...] = (public_id, public_id)
        if charger_id is not None:
            where += " AND s.charger_id = ?"
            args += (charger_id,)
        rows = await self._conn.fetch(_SESSION_SELECT + where + " ORDER BY s.id", args)
        return [_session(r) for r in rows]

    # meter values

    async def add_meter_samples(
        self,
        rows: Sequence[tuple[str, int, int | None, datetime,
                             float | None, float | None, float | None, float | None, float | None]],
    ) -> None:
        """Store a group of samples (charger, connector, tx id, at, L1-L3 A, power W, energy Wh)
        in one transaction, committed before return."""
        if not rows:
            return
        values = [(c, n, tx, wire_ts(at), l1, l2, l3, p, e) for c, n, tx, at, l1, l2, l3, p, e in rows]
        async with self._conn.write() as db:
            await db.executemany(
                "INSERT INTO meter_samples (charger_id, connector_id, tx_id, at, l1_a, l2_a, l3_a,"
                " power_w, energy_wh) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    async def meter_samples(self, tx_id: int) -> list[dict[str, Any]]:
        """A transaction's samples in time order: `{"charger", "connector", "tx_id", "at",
        "l1_a", "l2_a", "l3_a", "power_w", "energy_wh"}` (A, W, Wh)."""
        rows = await self._conn.fetch("SELECT * FROM meter_samples WHERE tx_id = ? ORDER BY at, id", (tx_id,))
        return [
            {"charger": r["charger_id"], "connector": r["connector_id"], "tx_id": r["tx_id"], "at": r["at"],
             "l1_a": r["l1_a"], "l2_a": r["l2_a"], "l3_a": r["l3_a"], "power_w": r["power_w"],
             "energy_wh": r["energy_wh"]}
            for r in rows
        ]

    # events

    async def add_event(
        self, kind: str, at: datetime, *, bay_id: str | None = None, charger_id: str | None = None,
        message: str = "", data: dict[str, Any] | None = None,
    ) -> int:
        """Append to the event log and return the event's id."""
        async with self._conn.write() as db:
            return await _insert_event(db, kind, at, bay_id, charger_id, message, data)

    async def add_events(self, entries: Sequence[tuple[str, datetime, str | None, str | None, str, dict[str, Any] | None]]) -> None:
        """Append many events (kind, at, bay, charger, message, data) in one transaction."""
        if not entries:
            return
        async with self._conn.write() as db:
            for kind, at, bay_id, charger_id, message, data in entries:
                await _insert_event(db, kind, at, bay_id, charger_id, message, data)

    async def events(
        self, since: datetime | None = None, limit: int = 500, kind: str | None = None,
        bay_id: str | None = None, after_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events at or after `since`, oldest first; without `since`, the newest `limit`
        events, still oldest first. Each `{"id", "ts", "kind", "bay", "charger", "message", "data"}`.

        `after_id`: the events written after that one, in the order they were written (an alarm's
        event carries the time the alarm began, which may be long before it was written)."""
        if after_id is not None:
            rows = await self._conn.fetch("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
            return [_event(r) for r in rows]
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(wire_ts(since))
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if bay_id is not None:
            where.append("bay_id = ?")
            params.append(bay_id)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        order = "ASC" if since is not None else "DESC"
        rows = await self._conn.fetch(f"{sql} ORDER BY ts {order}, id {order} LIMIT ?", (*params, limit))
        if since is None:
            rows.reverse()
        return [_event(r) for r in rows]

    # light commands

    async def save_light_command(self, bay_id: str, command: dict[str, Any]) -> None:
        """Keep a bay's latest light command, committed before return (call it before
        publishing, so `seq` never goes back after a restart)."""
        seq = command.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"bay {bay_id}: a light command needs an integer seq")
        # Durable: a seq lost in a power cut would be handed out again after it (lights change
        # a few times an hour per bay, so the flash can afford it).
        async with self._conn.write(durable=True) as db:
            async with db.execute("SELECT seq FROM light_commands WHERE bay_id = ?", (bay_id,)) as cur:
                row = await cur.fetchone()
            if row is not None and seq < row["seq"]:
                raise ValueError(f"bay {bay_id}: seq {seq} is below the stored {row['seq']}")
            await db.execute(
                "INSERT INTO light_commands (bay_id, seq, command) VALUES (?, ?, ?)"
                " ON CONFLICT (bay_id) DO UPDATE SET seq = excluded.seq, command = excluded.command",
                (bay_id, seq, json.dumps(command, sort_keys=True, default=_json_default)),
            )

    async def light_commands(self) -> dict[str, dict[str, Any]]:
        """The last saved command of every bay, by bay id."""
        rows = await self._conn.fetch("SELECT bay_id, command FROM light_commands ORDER BY bay_id")
        return {r["bay_id"]: json.loads(r["command"]) for r in rows}

    # overrides

    async def set_override(
        self, bay_id: str, color: str, until: datetime, who: str, why: str, at: datetime,
    ) -> None:
        """Hold a bay's light at `color` until `until`, durably (a person relies on it); replaces the
        bay's earlier override."""
        async with self._conn.write(durable=True) as db:
            await db.execute(
                "INSERT OR REPLACE INTO overrides (bay_id, color, until, who, why, set_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (bay_id, color, wire_ts(until), who, why, wire_ts(at)),
            )

    async def clear_override(self, bay_id: str) -> bool:
        """End a bay's override; False if it had none."""
        async with self._conn.write() as db:
            cur = await db.execute("DELETE FROM overrides WHERE bay_id = ?", (bay_id,))
            return cur.rowcount > 0

    async def overrides(self) -> dict[str, dict[str, Any]]:
        """By bay id: `{"color", "until", "who", "why", "set_at"}`, times as aware datetimes."""
        rows = await self._conn.fetch("SELECT * FROM overrides ORDER BY bay_id")
        return {
            r["bay_id"]: {"color": r["color"], "until": parse_ts(r["until"]), "who": r["who"],
                          "why": r["why"], "set_at": parse_ts(r["set_at"])}
            for r in rows
        }

    # alarms

    async def raise_alarm(
        self, key: str, at: datetime, message: str, action: str, bay_id: str | None = None,
        charger_id: str | None = None,
    ) -> bool:
        """Raise an alarm and log an `alarm` event; False (and nothing written) if `key` is already active."""
        async with self._conn.write() as db:
            cur = await db.execute(
                "INSERT INTO alarms (key, raised_at, message, action, bay_id, charger_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) WHERE cleared_at IS NULL DO NOTHING",
                (key, wire_ts(at), message, action, bay_id, charger_id),
            )
            if cur.rowcount == 0:
                return False
            await _insert_event(db, "alarm", at, bay_id, charger_id, message, {"key": key, "action": action})
            return True

    async def clear_alarm(self, key: str, at: datetime) -> bool:
        """Clear an active alarm and log an `alarm_cleared` event; False if it was not active."""
        async with self._conn.write() as db:
            async with db.execute(
                "UPDATE alarms SET cleared_at = ? WHERE key = ? AND cleared_at IS NULL"
                " RETURNING message, bay_id, charger_id",
                (wire_ts(at), key),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return False
            await _insert_event(db, "alarm_cleared", at, row["bay_id"], row["charger_id"],
                                row["message"], {"key": key})
            return True

    async def active_alarms(self) -> list[dict[str, Any]]:
        """Active alarms, newest first: `{"key", "since", "message", "action", "bay", "charger"}`."""
        rows = await self._conn.fetch("SELECT * FROM alarms WHERE cleared_at IS NULL ORDER BY raised_at DESC, id DESC")
        return [
            {"key": r["key"], "since": r["raised_at"], "message": r["message"], "action": r["action"],
             "bay": r["bay_id"], "charger": r["charger_id"]}
            for r in rows
        ]


async def _insert_event(
    db: aiosqlite.Connection, kind: str, at: datetime, bay_id: str | None, charger_id: str | None,
    message: str, data: dict[str, Any] | None,
) -> int:
    text = None if data is None else json.dumps(data, sort_keys=True, default=_json_default)
    cur = await db.execute(
        "INSERT INTO events (ts, kind, bay_id, charger_id, message, data) VALUES (?, ?, ?, ?, ?, ?)",
        (wire_ts(at), kind, bay_id, charger_id, message, text),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid
