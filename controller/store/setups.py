"""What each charger accepted of the gateway's set-up since its last BootNotification, kept so that a
reconnect resends only what differs (control.md, "Charger set-up on connect"): a charger's flash and
the operator's traffic are spared, and a boot (new firmware, a reset) means all of it again.

One row per charger in the `settings` table, key `setup:<charger id>`, a JSON object of item ->
value (the item names and values are `controller.shell.charging`'s) plus when it was last written.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from controller.store.connection import Connection
from drivers.contract.clock import parse_ts, wire_ts

log = logging.getLogger("laadplein.store")

_PREFIX = "setup:"


class SetupMemory:
    """Per charger: the set-up items it accepted (item -> value) and when that was written."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def all(self) -> dict[str, tuple[dict[str, str], datetime]]:
        """Charger id -> (accepted items, written at). A row that does not parse is left out (and so
        everything is sent again to that charger), with a log line."""
        rows = await self._conn.fetch("SELECT key, value FROM settings WHERE key LIKE ?", (_PREFIX + "%",))
        out: dict[str, tuple[dict[str, str], datetime]] = {}
        for row in rows:
            charger_id = str(row["key"])[len(_PREFIX):]
            try:
                record = json.loads(row["value"])
                items = {str(k): str(v) for k, v in dict(record["items"]).items()}
                out[charger_id] = (items, parse_ts(str(record["at"])))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("charger %s: its remembered set-up is unreadable (%s); it is set up in full", charger_id, exc)
        return out

    async def put(self, charger_id: str, items: dict[str, str], at: datetime) -> None:
        """Remember what a charger holds now (replacing what was remembered)."""
        value = json.dumps({"at": wire_ts(at), "items": dict(sorted(items.items()))})
        async with self._conn.write() as db:
            await db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (_PREFIX + charger_id, value))

    async def forget(self, charger_id: str) -> None:
        """Forget a charger's set-up: the next one sends everything."""
        async with self._conn.write() as db:
            await db.execute("DELETE FROM settings WHERE key = ?", (_PREFIX + charger_id,))
