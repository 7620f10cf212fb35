"""The one SQLite connection every table of the store runs on: each statement under one lock, so
no coroutine reads another's uncommitted writes; a write is one transaction, durable on request."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiosqlite

from controller.store.schema import pragma, read_schema_version


class Connection:
    """An open database connection and the lock its statements run under."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the connection; committed data is already on disk. Closing twice is harmless."""
        async with self.lock:
            await self.db.close()

    @contextlib.asynccontextmanager
    async def write(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; `durable` makes its commit `synchronous=FULL`."""
        db = self.db
        async with self.lock:
            try:
                if durable:
                    await db.execute("PRAGMA synchronous=FULL")
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Statements run in order on aiosqlite's thread, so this lands after whatever
                # was already queued, even when we were cancelled while waiting for it.
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    await db.execute("PRAGMA synchronous=NORMAL")

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query, read under the lock."""
        async with self.lock, self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def info(self) -> dict[str, Any]:
        """For health checks: `{"schema_version", "journal_mode", "synchronous"}`."""
        async with self.lock:
            version = await read_schema_version(self.db)
            mode = await pragma(self.db, "journal_mode")
            sync = await pragma(self.db, "synchronous")
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"schema_version": version, "journal_mode": mode, "synchronous": names.get(sync, sync)}
