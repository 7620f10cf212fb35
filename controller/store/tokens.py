"""Two groups of `Store` methods: the local authorization list, the one place tags are kept
(encrypted), with the version number chargers hold it under."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiosqlite

from controller.store.connection import Connection
from controller.store.secrets import TagVault
from drivers.contract.clock import parse_ts, wire_ts, wire_ts_or_none
from drivers.contract.words import ACCEPTED, EXPIRED, INVALID, TOKEN_STATUSES

LIST_VERSION_KEY = "local_list_version"

# Every change of the list raises its version by one, in the same transaction. Before the first
# change (or in a database older than the `settings` table) the version counts as one more than
# the number of tags: so the version is always above the number of tags, and a list sent in n
# parts can number its parts n consecutive versions ending at the list's own (OCPP numbers every
# SendLocalList, and a Differential must raise the number).
_CURRENT_VERSION = (
    "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?),"
    " (SELECT COUNT(*) FROM tokens) + 1)"
)


class TokenList:
    """The local authorization list: tags kept encrypted, looked up by their keyed hash, and the
    list's version that chargers are told."""

    def __init__(self, conn: Connection, vault: TagVault) -> None:
        self._conn = conn
        self._vault = vault

    async def put(
        self, tag: str, status: str, expiry: datetime | None, group: str | None,
        *, at: datetime | None = None,
    ) -> int:
        """Add or change a tag of the local list; `at` (default: now) is kept as its update time.

        Returns the list's new version, raised with the change and committed durably with it:
        chargers are told the list under that number, so it must never go back after a power cut.
        """
        if status not in TOKEN_STATUSES:
            raise ValueError(f"token status must be one of {sorted(TOKEN_STATUSES)}, got {status!r}")
        if not tag.strip():
            raise ValueError("an empty tag cannot be put on the local list")
        updated = wire_ts(at if at is not None else datetime.now(UTC))
        async with self._conn.write(durable=True) as db:
            version = await _raise_version(db)  # counted before the change: see _CURRENT_VERSION
            await db.execute(
                "INSERT OR REPLACE INTO tokens (tag_hash, tag_enc, status, expiry, grp, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self._vault.hash_tag(tag), self._vault.encrypt(tag), status, wire_ts_or_none(expiry), group, updated),
            )
            return version

    async def delete(self, tag: str) -> bool:
        """Remove a tag from the local list, raising the list's version with it (durably);
        False if it was not on it (the version stays)."""
        tag_hash = self._vault.hash_tag(tag)
        async with self._conn.write(durable=True) as db:
            async with db.execute("SELECT 1 FROM tokens WHERE tag_hash = ?", (tag_hash,)) as cur:
                if await cur.fetchone() is None:
                    return False
            await _raise_version(db)  # counted before the change: see _CURRENT_VERSION
            await db.execute("DELETE FROM tokens WHERE tag_hash = ?", (tag_hash,))
            return True

    async def version(self) -> int:
        """The version of the local list as chargers are to hold it (at least 1)."""
        rows = await self._conn.fetch(_CURRENT_VERSION, (LIST_VERSION_KEY,))
        return int(rows[0][0])

    async def status(self, tag: str, now: datetime) -> str:
        """Accepted, Blocked, Expired or Invalid; an Accepted tag past its expiry is Expired,
        a tag not on the list Invalid."""
        rows = await self._conn.fetch("SELECT status, expiry FROM tokens WHERE tag_hash = ?", (self._vault.hash_tag(tag),))
        if not rows:
            return INVALID
        status, expiry = rows[0]["status"], rows[0]["expiry"]
        if status == ACCEPTED and expiry is not None and parse_ts(expiry) <= now:
            return EXPIRED
        return status

    async def all(self) -> list[dict[str, Any]]:
        """The local list without the tags: `{"tag_hash", "status", "expiry", "group"}`."""
        rows = await self._conn.fetch("SELECT tag_hash, status, expiry, grp FROM tokens ORDER BY tag_hash")
        return [{"tag_hash": r["tag_hash"], "status": r["status"], "expiry": r["expiry"], "group": r["grp"]}
                for r in rows]

    async def tags(self) -> list[dict[str, Any]]:
        """The local list with the tags decrypted, only for pushing it to chargers:
        `{"tag", "status", "expiry", "group"}`."""
        rows = await self._conn.fetch("SELECT tag_hash, tag_enc, status, expiry, grp FROM tokens ORDER BY tag_hash")
        return [{"tag": self._vault.decrypt(r["tag_enc"], r["tag_hash"]), "status": r["status"], "expiry": r["expiry"],
                 "group": r["grp"]} for r in rows]



async def _raise_version(db: aiosqlite.Connection) -> int:
    """Raise the local list's version by one inside the caller's transaction; the new version."""
    async with db.execute(_CURRENT_VERSION, (LIST_VERSION_KEY,)) as cur:
        row = await cur.fetchone()
    version = int(row[0]) + 1
    await db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (LIST_VERSION_KEY, str(version)))
    return version
