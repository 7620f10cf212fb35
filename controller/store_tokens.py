"""Two groups of `Store` methods: the local authorization list, the one place tags are kept
(encrypted), and the retention purge of old rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from controller.secrets import TagVault
from controller.store_schema import from_z, to_z, z_or_none

TOKEN_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid"})


class TokensMixin:
    """The token and retention methods of `Store`, run on its connection and vault."""

    _vault: TagVault

    if TYPE_CHECKING:
        def _write(self, *, durable: bool = False) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

    async def put_token(
        self, tag: str, status: str, expiry: datetime | None, group: str | None,
        *, at: datetime | None = None,
    ) -> None:
        """Add or change a tag of the local list; `at` (default: now) is kept as its update time."""
        if status not in TOKEN_STATUSES:
            raise ValueError(f"token status must be one of {sorted(TOKEN_STATUSES)}, got {status!r}")
        if not tag.strip():
            raise ValueError("an empty tag cannot be put on the local list")
        updated = to_z(at if at is not None else datetime.now(UTC))
        async with self._write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO tokens (tag_hash, tag_enc, status, expiry, grp, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self._vault.hash_tag(tag), self._vault.encrypt(tag), status, z_or_none(expiry), group, updated),
            )

    async def delete_token(self, tag: str) -> bool:
        """Remove a tag from the local list; False if it was not on it."""
        async with self._write() as db:
            cur = await db.execute("DELETE FROM tokens WHERE tag_hash = ?", (self._vault.hash_tag(tag),))
            return cur.rowcount > 0

    async def token_status(self, tag: str, now: datetime) -> str:
        """Accepted, Blocked, Expired or Invalid; an Accepted tag past its expiry is Expired,
        a tag not on the list Invalid."""
        rows = await self._fetch("SELECT status, expiry FROM tokens WHERE tag_hash = ?", (self._vault.hash_tag(tag),))
        if not rows:
            return "Invalid"
        status, expiry = rows[0]["status"], rows[0]["expiry"]
        if status == "Accepted" and expiry is not None and from_z(expiry) <= now:
            return "Expired"
        return status

    async def tokens(self) -> list[dict[str, Any]]:
        """The local list without the tags: `{"tag_hash", "status", "expiry", "group"}`."""
        rows = await self._fetch("SELECT tag_hash, status, expiry, grp FROM tokens ORDER BY tag_hash")
        return [{"tag_hash": r["tag_hash"], "status": r["status"], "expiry": r["expiry"], "group": r["grp"]}
                for r in rows]

    async def token_tags(self) -> list[dict[str, Any]]:
        """The local list with the tags decrypted, only for pushing it to chargers:
        `{"tag", "status", "expiry", "group"}`."""
        rows = await self._fetch("SELECT tag_enc, status, expiry, grp FROM tokens ORDER BY tag_hash")
        return [{"tag": self._vault.decrypt(r["tag_enc"]), "status": r["status"], "expiry": r["expiry"],
                 "group": r["grp"]} for r in rows]

    # retention

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete sessions stopped before `cutoff` with their meter samples, loose samples,
        events and cleared alarms from before it; returns the number of rows deleted.
        Open sessions and their samples are kept whatever their age."""
        z = to_z(cutoff)
        statements = (
            "DELETE FROM meter_samples WHERE tx_id IN"
            " (SELECT id FROM sessions WHERE stopped_at IS NOT NULL AND stopped_at < ?)",
            "DELETE FROM sessions WHERE stopped_at IS NOT NULL AND stopped_at < ?",
            "DELETE FROM meter_samples WHERE at < ? AND (tx_id IS NULL OR tx_id NOT IN (SELECT id FROM sessions))",
            "DELETE FROM events WHERE ts < ?",
            "DELETE FROM alarms WHERE cleared_at IS NOT NULL AND cleared_at < ?",
        )
        deleted = 0
        async with self._write() as db:
            for sql in statements:
                cur = await db.execute(sql, (z,))
                deleted += cur.rowcount
        return deleted
