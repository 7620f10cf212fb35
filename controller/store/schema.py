"""The gateway database's schema, the migrations that bring a file up to it, and the UTC text
form in which the database keeps times."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from controller.store.rekey import rekey_tags
from controller.store.secrets import TagVault

# A step that needs more than SQL: it runs inside the migration's transaction, with the vault.
Rewrite = Callable[[aiosqlite.Connection, TagVault], Awaitable[None]]

# Migration i takes the schema from version i to i + 1; a list only ever grows at its end.
MIGRATIONS: list[tuple[str, ...] | Rewrite] = [
    (
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            bay_id TEXT,
            tag_hash TEXT NOT NULL,
            meter_start_wh INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            meter_stop_wh INTEGER,
            stopped_at TEXT,
            stop_reason TEXT)""",
        "CREATE INDEX sessions_started ON sessions(started_at)",
        "CREATE INDEX sessions_open ON sessions(id) WHERE stopped_at IS NULL",
        # tx_id is what the charger reported: no foreign key, so a sample naming a transaction
        # this database does not know is still kept instead of failing its whole group.
        """CREATE TABLE meter_samples (
            id INTEGER PRIMARY KEY,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            tx_id INTEGER,
            at TEXT NOT NULL,
            l1_a REAL, l2_a REAL, l3_a REAL, power_w REAL, energy_wh REAL)""",
        "CREATE INDEX meter_samples_tx ON meter_samples(tx_id, at)",
        "CREATE INDEX meter_samples_at ON meter_samples(at)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            bay_id TEXT,
            charger_id TEXT,
            message TEXT NOT NULL DEFAULT '',
            data TEXT)""",
        "CREATE INDEX events_ts ON events(ts, id)",
        """CREATE TABLE light_commands (
            bay_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            command TEXT NOT NULL)""",
        """CREATE TABLE overrides (
            bay_id TEXT PRIMARY KEY,
            color TEXT NOT NULL,
            until TEXT NOT NULL,
            who TEXT NOT NULL,
            why TEXT NOT NULL,
            set_at TEXT NOT NULL)""",
        """CREATE TABLE alarms (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            cleared_at TEXT,
            message TEXT NOT NULL,
            action TEXT NOT NULL,
            bay_id TEXT,
            charger_id TEXT)""",
        "CREATE UNIQUE INDEX alarms_active ON alarms(key) WHERE cleared_at IS NULL",
        """CREATE TABLE tokens (
            tag_hash TEXT PRIMARY KEY,
            tag_enc BLOB NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid')),
            expiry TEXT,
            grp TEXT,
            updated_at TEXT NOT NULL)""",
    ),
    (
        # What a charger may hold after a restart: per connector, the highest lease limit sent for
        # the transaction and until when it may hold it, written (durably) before the lease goes out.
        """CREATE TABLE leases (
            key TEXT PRIMARY KEY,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            tx_id INTEGER NOT NULL,
            limit_a REAL NOT NULL,
            ends_at TEXT NOT NULL,
            written_at TEXT NOT NULL)""",
        # Sessions recorded from now on have their leases in `leases`: after a restart a session
        # without a row there got none. Older sessions may hold a lease nobody wrote down.
        "ALTER TABLE sessions ADD COLUMN leases_tracked INTEGER NOT NULL DEFAULT 0",
        # One row per start of the daemon: a row without stopped_at ended in a crash, a kill, a
        # hang (the watchdog) or a power cut.
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            alive_at TEXT NOT NULL,
            stopped_at TEXT,
            pid INTEGER NOT NULL)""",
    ),
    (
        # An OCPP 2.0.1 charger names its transactions itself (a string); `id` stays the gateway's
        # handle, and the charger's name is kept to find the session by.
        "ALTER TABLE sessions ADD COLUMN charger_tx TEXT",
        # Unique while open: a charger that counts its ids again after a reset may reuse one.
        "CREATE UNIQUE INDEX sessions_charger_tx ON sessions(charger_id, charger_tx)"
        " WHERE charger_tx IS NOT NULL AND stopped_at IS NULL",
        # Small named values: the local authorization list's version, ...
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Chargers' Basic Auth passwords set through the API, hashed (controller.store.passwords); they
        # replace the config's.
        """CREATE TABLE charger_passwords (
            charger_id TEXT PRIMARY KEY,
            hash TEXT NOT NULL,
            set_at TEXT NOT NULL)""",
    ),
    # Tag hashes under a key derived from the secret, and each encrypted tag bound to its hash.
    rekey_tags,
]
SCHEMA_VERSION = len(MIGRATIONS)


def lay_out(raw: sqlite3.Connection, version: int) -> None:
    """An empty database at an older `version`, laid out by its migrations' SQL (benches and tests
    build the databases an upgrade starts from this way); ValueError past the SQL-only steps."""
    steps = MIGRATIONS[:version]
    if any(callable(step) for step in steps):
        raise ValueError(f"schema version {version} needs more than SQL to lay out")
    raw.execute("CREATE TABLE meta (schema_version INTEGER NOT NULL)")
    raw.execute("INSERT INTO meta VALUES (?)", (version,))
    for step in steps:
        for sql in step:  # type: ignore[union-attr]
            raw.execute(sql)


class StoreError(Exception):
    """The database cannot be used as it is (wrong journal mode, newer schema, ...)."""


async def pragma(db: aiosqlite.Connection, statement: str) -> Any:
    """The first value `PRAGMA <statement>` returns; None if it returns no row."""
    async with db.execute(f"PRAGMA {statement}") as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


async def read_schema_version(db: aiosqlite.Connection) -> int:
    """The version recorded in `meta`; 0 for a database not yet migrated."""
    async with db.execute("SELECT schema_version FROM meta") as cur:
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def migrate(db: aiosqlite.Connection, path: Path, vault: TagVault) -> None:
    """Bring the database at `path` forward to `SCHEMA_VERSION` in one transaction; StoreError if it is newer.

    `vault` holds the keys of the gateway secret, for the steps that rewrite stored tags.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS meta (schema_version INTEGER NOT NULL)")
        version = await read_schema_version(db)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {version} is newer than this software knows ({SCHEMA_VERSION})"
            )
        if version == 0:
            await db.execute("INSERT INTO meta (schema_version) VALUES (0)")
        for target, step in enumerate(MIGRATIONS[version:], start=version + 1):
            if callable(step):
                await step(db, vault)
            else:
                for sql in step:
                    await db.execute(sql)
            await db.execute("UPDATE meta SET schema_version = ?", (target,))
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")
        raise
