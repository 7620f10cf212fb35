"""The migration to schema 4: id tags hashed with a key derived from the gateway secret instead
of the secret itself, and each encrypted tag bound to its hash.

Only the local list keeps tags, so only its tags (and the empty tag that marks a session without
one) can be hashed anew; a session recorded earlier with a tag not on the list keeps its old
hash until retention deletes it.
"""

from __future__ import annotations

import logging

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
        # The event log names a tag by its hash in `data` and by its first 8 digits in the message.
        old_short, new_short = f"tag {old_hash[:8]}…", f"tag {new_hash[:8]}…"
        await db.execute(
            "UPDATE events SET data = replace(data, ?, ?), message = replace(message, ?, ?)"
            " WHERE instr(data, ?) > 0 OR instr(message, ?) > 0",
            (old_hash, new_hash, old_short, new_short, old_hash, old_short),
        )
    if rows:
        log.info("local list: %d tag(s) hashed and encrypted with the derived keys", len(rows) - unreadable)
    if unreadable:
        log.warning("local list: %d tag(s) do not open with this gateway secret; put them again", unreadable)
