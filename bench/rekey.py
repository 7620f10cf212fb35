"""How long the move to schema 4 (id tags re-hashed with derived keys) takes on a large gateway.

    python3 -m bench.rekey [--tags N] [--events N]

Builds a schema-3 database with a local list of N tags and an event log of N events (a quarter of
them naming a tag, as session starts and list changes do), then upgrades a copy of it twice: with the
migration as it is (`controller.store.rekey`: one pass over the event log) and with the first version
of it as the baseline (one pass over the event log per tag). Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import aiosqlite

from controller.store import rekey
from controller.store.database import Store
from controller.store.schema import lay_out
from controller.store.secrets import LegacyTagVault, TagVault
from drivers.contract.clock import wire_ts

SECRET = bytes(range(32))


def build(path: Path, tags: int, events: int) -> None:
    """A schema-3 database: `tags` on the local list, `events` in the log (every fourth names a tag)."""
    old = LegacyTagVault(SECRET)
    hashes = [old.hash_tag(f"TAG{i:08d}") for i in range(tags)]
    raw = sqlite3.connect(path)
    try:
        lay_out(raw, 3)
        at = wire_ts(datetime(2026, 11, 1, tzinfo=UTC))
        raw.executemany("INSERT INTO tokens (tag_hash, tag_enc, status, updated_at) VALUES (?, ?, 'Accepted', ?)",
                        [(h, old.encrypt(f"TAG{i:08d}"), at) for i, h in enumerate(hashes)])
        rows = []
        for n in range(events):
            if n % 4 == 0:
                h = hashes[n % tags]
                rows.append((at, "session_started", f"CP01/1: transaction {n} started, tag {h[:8]}…, Accepted",
                             json.dumps({"transaction_id": n, "tag_hash": h})))
            else:
                rows.append((at, "light_command", f"B01: green, seq {n}", json.dumps({"seq": n})))
        raw.executemany("INSERT INTO events (ts, kind, message, data) VALUES (?, ?, ?, ?)", rows)
        raw.commit()
    finally:
        raw.close()


async def per_tag(db: aiosqlite.Connection, renamed: dict[str, str]) -> int:
    """The baseline: the event log scanned once per tag."""
    for old_hash, new_hash in renamed.items():
        old_short, new_short = f"tag {old_hash[:8]}…", f"tag {new_hash[:8]}…"
        await db.execute(
            "UPDATE events SET data = replace(data, ?, ?), message = replace(message, ?, ?)"
            " WHERE instr(data, ?) > 0 OR instr(message, ?) > 0",
            (old_hash, new_hash, old_short, new_short, old_hash, old_short),
        )
    return 0


async def upgrade(source: Path, folder: Path, name: str, baseline: bool) -> tuple[float, int]:
    """Open a copy of `source` (which upgrades it); the seconds it took and the events naming a new hash."""
    path = folder / name
    shutil.copy(source, path)
    vault = TagVault(SECRET)
    started = time.perf_counter()
    if baseline:
        with mock.patch.object(rekey, "rename_in_events", per_tag):
            async with await Store.open(path, vault):
                pass
    else:
        async with await Store.open(path, vault):
            pass
    took_s = time.perf_counter() - started
    with sqlite3.connect(path) as check:
        named = check.execute("SELECT count(*) FROM events WHERE instr(data, ?) > 0",
                              (vault.hash_tag("TAG00000000"),)).fetchone()[0]
    return took_s, named


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="laadplein-rekey-") as tmp:
        folder = Path(tmp)
        source = folder / "schema3.db"
        build(source, args.tags, args.events)
        now_s, now_named = await upgrade(source, folder, "now.db", baseline=False)
        base_s, base_named = await upgrade(source, folder, "baseline.db", baseline=True)
    print(f"schema 3 -> 4 with {args.tags} tags on the local list and {args.events} events in the log")
    print(f"  one pass over the log (now):     {now_s:8.2f} s  ({now_named} events name the first tag's new hash)")
    print(f"  a pass per tag (first version):  {base_s:8.2f} s  ({base_named} events name the first tag's new hash)")
    print(f"  ratio: {base_s / now_s:.1f} x faster")


if __name__ == "__main__":
    asyncio.run(main())
