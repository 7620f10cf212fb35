"""The migration to schema 4: id tags hashed with a key derived from the gateway secret instead
of the secret itself, and each encrypted tag bound to its hash.

Only the local list keeps tags, so only its tags (and the empty tag that marks a session without
one) can be hashed anew; a session recorded earlier with a tag not on the list keeps its old
hash until retention deletes it.
"""

from __future__ import annotations

import logging
import re

import aiosqlite

from controller.store.secrets import SecretError, TagVault

log = logging.getLogger("laadplein.store")


async def rekey_tags(db: aiosqlite.Connection, vault: TagVault) -> None:
    """Re-hash and re-encrypt the local list and carry the new hashes into sessions and events,
    inside the caller's transaction."""
    async with db.execute("SELECT tag_hash, tag_enc FROM tokens") as cur:
        rows = list(await cur.fetchall())
    renamed = {vault.legacy.hash_tag(""): vault.hash_tag("")}
    unreadable = 0
    for old_hash, blob in rows:
        try:
            tag = vault.legacy.decrypt(blob)
        except SecretError:
            # Made with another secret: it did not open before either. Left as it is, it still
            # refuses to open, and putting the tag again replaces it.
            unreadable += 1
            continue
        new_hash = vault.hash_tag(tag)
        renamed[old_hash] = new_hash
        await db.execute(
            "UPDATE tokens SET tag_hash = ?, tag_enc = ? WHERE tag_hash = ?", (new_hash, vault.encrypt(tag), old_hash)
        )
    for old_hash, new_hash in renamed.items():
        await db.execute("UPDATE sessions SET tag_hash = ? WHERE tag_hash = ?", (new_hash, old_hash))
    await rename_in_events(db, renamed)
    if rows:
        log.info("local list: %d tag(s) hashed and encrypted with the derived keys", len(rows) - unreadable)
    if unreadable:
        log.warning("local list: %d tag(s) do not open with this gateway secret; put them again", unreadable)


_HASH = re.compile(r"[0-9a-f]{64}")
_SHORT = re.compile(r"tag ([0-9a-f]{8})…")


async def rename_in_events(db: aiosqlite.Connection, renamed: dict[str, str]) -> int:
    """Carry `renamed` (old hash -> new hash) into the event log in one pass; the rows changed.

    The log names a tag by its hash in `data` and by its first 8 digits in the message ("tag
    1a2b3c4d…"). One pass over the rows that may name one, whatever the number of tags: a pass per
    tag took minutes on a long log with a large local list.
    """
    shorts = {old[:8]: new[:8] for old, new in renamed.items()}
    changed: list[tuple[str | None, str, int]] = []
    async with db.execute(
        "SELECT id, data, message FROM events WHERE instr(message, 'tag ') > 0 OR data IS NOT NULL"
    ) as cur:
        async for row_id, data, message in cur:
            new_data = _HASH.sub(lambda m: renamed.get(m.group(0), m.group(0)), data) if data else data
            new_message = _SHORT.sub(lambda m: f"tag {shorts.get(m.group(1), m.group(1))}…", message)
            if new_data != data or new_message != message:
                changed.append((new_data, new_message, row_id))
    await db.executemany("UPDATE events SET data = ?, message = ? WHERE id = ?", changed)
    return len(changed)
