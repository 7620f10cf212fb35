"""Persistence: the gateway secret, tag hashing and encryption, and every table of the Store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import stat
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from controller.store.database import SCHEMA_VERSION, Store, StoreError
from controller.store.schema import lay_out
from controller.store.secrets import (
    SECRET_BYTES,
    LegacyTagVault,
    SecretError,
    TagVault,
    derive_key,
    load_or_create_secret,
)
from drivers.contract.clock import parse_ts, wire_ts

REPO = Path(__file__).resolve().parents[1]
SECRET = bytes(range(32))
T0 = datetime(2026, 11, 28, 13, 5, 9, 123000, tzinfo=UTC)
TAG = "04A2B3C4D5E6F7"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def vault() -> TagVault:
    return TagVault(SECRET)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "laadplein.db"


@pytest.fixture
async def store(db_path: Path, vault: TagVault):
    async with await Store.open(db_path, vault) as s:
        yield s


# secret and vault


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "secret"
    first = load_or_create_secret(path)
    assert len(first) == SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"short", bytes(33)])
def test_secret_of_wrong_size_is_an_error_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SecretError):
        load_or_create_secret(path)
    assert path.read_bytes() == content


def test_vault_needs_a_full_secret() -> None:
    with pytest.raises(SecretError):
        TagVault(b"too short")


def test_hash_is_keyed_hex_and_normalised(vault: TagVault) -> None:
    h = vault.hash_tag(TAG)
    assert len(h) == 64 and int(h, 16) >= 0 and h == h.lower()
    assert vault.hash_tag(f"  {TAG}\n") == h
    assert vault.hash_tag(TAG.lower()) != h  # case is kept
    assert TagVault(bytes(32)).hash_tag(TAG) != h  # keyed by the secret
    assert TAG not in repr(vault)


def test_encrypt_uses_a_fresh_nonce_and_decrypts(vault: TagVault) -> None:
    a, b = vault.encrypt(TAG), vault.encrypt(f" {TAG} ")
    assert a != b
    h = vault.hash_tag(TAG)
    assert vault.decrypt(a, h) == vault.decrypt(b, h) == TAG
    assert TAG.encode() not in a


def test_decrypt_refuses_other_secret_and_tampering(vault: TagVault) -> None:
    blob, h = vault.encrypt(TAG), vault.hash_tag(TAG)
    with pytest.raises(SecretError):
        TagVault(bytes(32)).decrypt(blob, TagVault(bytes(32)).hash_tag(TAG))
    with pytest.raises(SecretError):
        vault.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), h)
    with pytest.raises(SecretError):
        vault.decrypt(b"x", h)


@given(st.text(max_size=40), st.text(max_size=40))
def test_vault_round_trip_and_a_blob_opens_only_under_its_own_hash(tag: str, other: str) -> None:
    vault = TagVault(SECRET)
    blob = vault.encrypt(tag)
    assert vault.decrypt(blob, vault.hash_tag(tag)) == tag.strip()
    assert vault.hash_tag(tag) == vault.hash_tag(tag.strip())
    if other.strip() != tag.strip():
        with pytest.raises(SecretError):
            vault.decrypt(blob, vault.hash_tag(other))


def test_hash_and_encryption_keys_are_derived_apart_and_neither_is_the_secret(vault: TagVault) -> None:
    hash_key = derive_key(SECRET, b"laadplein id-tag hash v2")
    encryption_key = derive_key(SECRET, b"laadplein id-tag encryption v1")
    assert len({hash_key, encryption_key, SECRET}) == 3
    # the hash is keyed with the derived hashing key, not with the secret
    assert vault.hash_tag(TAG) == hmac.new(hash_key, TAG.encode(), hashlib.sha256).hexdigest()
    assert vault.hash_tag(TAG) != hmac.new(SECRET, TAG.encode(), hashlib.sha256).hexdigest()
    # the tag opens with the derived encryption key alone: not with the secret, not with the hashing key
    blob = vault.encrypt(TAG)
    aad = b"laadplein.id-tag.v2:" + vault.hash_tag(TAG).encode()
    assert AESGCM(encryption_key).decrypt(blob[:12], blob[12:], aad) == TAG.encode()
    for key in (SECRET, hash_key):
        with pytest.raises(InvalidTag):
            AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    # HKDF as RFC 5869 defines it (SHA-256, no salt): its test case 3
    ikm = bytes([0x0B] * 22)
    assert derive_key(ikm, b"")[:32].hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])))
def test_time_text_round_trips_at_millisecond_resolution(when: datetime) -> None:
    text = wire_ts(when)
    assert text.endswith("Z") and len(text) == len("2026-11-28T13:05:09.123Z")
    back = parse_ts(text)
    assert back.tzinfo is not None
    assert timedelta(0) <= when - back < timedelta(milliseconds=1)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        wire_ts(datetime(2026, 1, 1))


# opening, schema, durability


async def test_open_creates_folder_wal_schema_and_pragmas(db_path: Path, vault: TagVault) -> None:
    async with await Store.open(db_path, vault) as store:
        info = await store.info()
        assert info == {"schema_version": SCHEMA_VERSION, "journal_mode": "wal", "synchronous": "NORMAL"}
        assert store.vault is vault
        assert store.hash_tag(TAG) == vault.hash_tag(TAG)
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT schema_version FROM meta").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        raw.close()
    async with await Store.open(db_path, vault) as store:  # reopening does not migrate twice
        assert (await store.info())["schema_version"] == SCHEMA_VERSION


async def test_newer_schema_is_refused(db_path: Path, vault: TagVault) -> None:
    await (await Store.open(db_path, vault)).close()
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(db_path, vault)


async def test_transaction_commits_with_synchronous_full(store: Store, vault: TagVault, monkeypatch) -> None:
    seen: list[str] = []
    execute = store._conn.db.execute

    def spy(sql, *args, **kwargs):
        seen.append(" ".join(sql.split())[:30])
        return execute(sql, *args, **kwargs)

    monkeypatch.setattr(store._conn.db, "execute", spy)
    tx = await store.start_transaction("CP01", 1, "B01", vault.hash_tag(TAG), 1000, at(0))
    assert seen[0] == "PRAGMA synchronous=FULL"
    assert seen[-2:] == ["COMMIT", "PRAGMA synchronous=NORMAL"]
    seen.clear()
    await store.stop_transaction(tx, 2000, at(60), "Local")
    assert seen[0] == "PRAGMA synchronous=FULL" and seen[-1] == "PRAGMA synchronous=NORMAL"
    seen.clear()
    await store.add_meter_samples([("CP01", 1, tx, at(1), 1.0, 1.0, 1.0, 690.0, 1001.0)])
    assert "PRAGMA synchronous=FULL" not in seen and "COMMIT" in seen
    monkeypatch.undo()
    assert (await store.info())["synchronous"] == "NORMAL"


async def test_committed_data_survives_close(db_path: Path, vault: TagVault) -> None:
    store = await Store.open(db_path, vault)
    tx = await store.start_transaction("CP01", 1, "B01", vault.hash_tag(TAG), 1000, at(0))
    await store.close()
    await store.close()  # harmless twice
    async with await Store.open(db_path, vault) as store:
        assert (await store.session(tx))["started"] == wire_ts(at(0))


CRASH_SCRIPT = """
import asyncio, os, sys
from datetime import datetime, UTC
from pathlib import Path
from controller.store.secrets import TagVault
from controller.store.database import Store

async def main():
    vault = TagVault(bytes.fromhex(sys.argv[2]))
    store = await Store.open(Path(sys.argv[1]), vault)
    now = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    tx = await store.start_transaction("CP01", 2, "B02", vault.hash_tag("CARD"), 5000, now)
    await store.add_meter_samples([("CP01", 2, tx, now, 16.0, 16.0, 16.0, 11000.0, 5100.0)])
    print(tx, flush=True)
    os._exit(9)

asyncio.run(main())
"""


async def test_committed_transaction_survives_a_crash(db_path: Path, vault: TagVault) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_SCRIPT, str(db_path), SECRET.hex(),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 9, err.decode()
    tx = int(out.decode().strip())
    async with await Store.open(db_path, vault) as store:
        session = await store.session(tx)
        assert session is not None and session["stopped"] is None
        assert session["tag_hash"] == vault.hash_tag("CARD")
        assert session["energy_wh"] == 100
        assert [s["energy_wh"] for s in await store.meter_samples(tx)] == [5100.0]
        assert [s["id"] for s in await store.open_sessions()] == [tx]


# sessions and meter values


async def test_session_life(store: Store, vault: TagVault) -> None:
    h = vault.hash_tag(TAG)
    tx = await store.start_transaction("CP01", 1, "B01", h, 1000, at(0))
    assert isinstance(tx, int)
    s = await store.session(tx)
    assert s == {"id": tx, "charger": "CP01", "connector": 1, "bay": "B01", "started": "2026-11-28T13:05:09.123Z",
                 "stopped": None, "energy_wh": None, "tag_hash": h, "meter_start_wh": 1000,
                 "meter_stop_wh": None, "stop_reason": None, "charger_tx": None}
    await store.add_meter_samples([
        ("CP01", 1, tx, at(20), 16.0, 15.5, None, 7000.0, 1400.0),
        ("CP01", 1, tx, at(10), 8.0, 8.0, 8.0, 5000.0, 1200.0),
        ("CP01", 1, tx, at(30), 16.0, 16.0, 16.0, 11000.0, None),
    ])
    assert (await store.session(tx))["energy_wh"] == 400  # the latest register reading
    samples = await store.meter_samples(tx)
    assert [x["at"] for x in samples] == [wire_ts(at(10)), wire_ts(at(20)), wire_ts(at(30))]
    assert samples[1] == {"charger": "CP01", "connector": 1, "tx_id": tx, "at": wire_ts(at(20)), "l1_a": 16.0,
                          "l2_a": 15.5, "l3_a": None, "power_w": 7000.0, "energy_wh": 1400.0}
    assert [x["id"] for x in await store.open_sessions()] == [tx]

    stopped = await store.stop_transaction(tx, 2500, at(60), "EVDisconnected")
    assert stopped["stopped"] == wire_ts(at(60)) and stopped["energy_wh"] == 1500
    assert stopped["meter_stop_wh"] == 2500 and stopped["stop_reason"] == "EVDisconnected"
    again = await store.stop_transaction(tx, 9999, at(99), "Other")
    assert again == stopped  # a repeated stop changes nothing
    assert await store.open_sessions() == []
    assert await store.stop_transaction(tx + 100, 1, at(1), None) is None
    assert await store.session(tx + 100) is None


async def test_sessions_listing(store: Store, vault: TagVault) -> None:
    h = vault.hash_tag(TAG)
    ids = [await store.start_transaction("CP01", 1, None, h, 0, at(i * 100)) for i in range(5)]
    assert len(set(ids)) == 5
    assert [s["id"] for s in await store.sessions()] == ids
    assert [s["id"] for s in await store.sessions(limit=2)] == ids[-2:]
    assert [s["id"] for s in await store.sessions(since=at(200))] == ids[2:]
    assert [s["id"] for s in await store.sessions(since=at(150), limit=1)] == [ids[2]]


async def test_a_raw_tag_is_refused_as_tag_hash(store: Store) -> None:
    with pytest.raises(ValueError) as info:
        await store.start_transaction("CP01", 1, None, TAG, 0, at(0))
    assert TAG not in str(info.value)


async def test_samples_without_or_with_unknown_transaction_are_kept(store: Store) -> None:
    await store.add_meter_samples([])
    await store.add_meter_samples([("CP01", 1, None, at(0), 0.0, 0.0, 0.0, 0.0, 10.0),
                                   ("CP01", 1, 4242, at(1), 1.0, None, None, None, None)])
    assert [s["l1_a"] for s in await store.meter_samples(4242)] == [1.0]


async def test_samples_group_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.add_meter_samples([("CP01", 1, 7, at(0), 1.0, 1.0, 1.0, 1.0, 1.0),
                                       ("CP01", 1, 7, datetime(2026, 1, 1), 1.0, 1.0, 1.0, 1.0, 1.0)])
    assert await store.meter_samples(7) == []
    await store.add_meter_samples([("CP01", 1, 7, at(0), 1.0, 1.0, 1.0, 1.0, 1.0)])  # store still usable
    assert len(await store.meter_samples(7)) == 1


# events


async def test_events(store: Store) -> None:
    e1 = await store.add_event("boot", at(0), charger_id="CP01", message="booted", data={"fw": "1.2", "t": at(0)})
    e2 = await store.add_event("light", at(10), bay_id="B01", message="blue")
    e3 = await store.add_event("light", at(20), bay_id="B02")
    assert e1 < e2 < e3
    first = (await store.events())[0]
    assert first == {"id": e1, "ts": wire_ts(at(0)), "kind": "boot", "bay": None, "charger": "CP01",
                     "message": "booted", "data": {"fw": "1.2", "t": wire_ts(at(0))}}
    assert [e["id"] for e in await store.events()] == [e1, e2, e3]
    assert [e["id"] for e in await store.events(limit=2)] == [e2, e3]
    assert [e["id"] for e in await store.events(since=at(10))] == [e2, e3]
    assert [e["id"] for e in await store.events(since=at(0), limit=1)] == [e1]
    assert [e["id"] for e in await store.events(kind="light")] == [e2, e3]
    assert [e["id"] for e in await store.events(kind="light", bay_id="B02")] == [e3]
    assert (await store.events(bay_id="B01"))[0]["data"] is None
    with pytest.raises(TypeError):
        await store.add_event("bad", at(0), data={"x": object()})


# light commands


def command(seq: int, color: str = "blue") -> dict:
    return {"color": color, "text": "Alleen opladen", "pictogram": "charging", "seq": seq,
            "ts": wire_ts(at(seq)), "reason": "charging"}


async def test_light_command_seq_survives_reopen(db_path: Path, vault: TagVault) -> None:
    async with await Store.open(db_path, vault) as store:
        assert await store.light_commands() == {}
        await store.save_light_command("B01", command(1))
        await store.save_light_command("B01", command(2, "green"))
        await store.save_light_command("B01", command(2, "green"))  # a republish keeps its seq
        await store.save_light_command("B02", command(7))
    async with await Store.open(db_path, vault) as store:
        assert await store.light_commands() == {"B01": command(2, "green"), "B02": command(7)}
        with pytest.raises(ValueError):
            await store.save_light_command("B02", command(6))
        with pytest.raises(ValueError):
            await store.save_light_command("B03", {"color": "off"})
        assert (await store.light_commands())["B02"]["seq"] == 7


# overrides


async def test_overrides(store: Store) -> None:
    assert await store.overrides() == {}
    await store.set_override("B01", "green", at(1800), "Jan", "road works", at(0))
    await store.set_override("B02", "off", at(600), "", "", at(0))
    await store.set_override("B01", "blue", at(900), "Piet", "event", at(5))
    got = await store.overrides()
    assert got["B01"] == {"color": "blue", "until": at(900), "who": "Piet", "why": "event", "set_at": at(5)}
    assert got["B02"]["until"].tzinfo is not None
    assert await store.clear_override("B02") is True
    assert await store.clear_override("B02") is False
    assert list(await store.overrides()) == ["B01"]


# alarms


async def test_alarms_are_not_duplicated_and_log_events(store: Store) -> None:
    assert await store.raise_alarm("charger-offline:CP01", at(0), "CP01 offline", "bays shown green",
                                   charger_id="CP01") is True
    assert await store.raise_alarm("charger-offline:CP01", at(5), "CP01 offline", "bays shown green") is False
    assert await store.raise_alarm("light-no-ack:B01", at(10), "no ack", "retrying", bay_id="B01") is True
    alarms = await store.active_alarms()
    assert [a["key"] for a in alarms] == ["light-no-ack:B01", "charger-offline:CP01"]
    assert alarms[1] == {"key": "charger-offline:CP01", "since": wire_ts(at(0)), "message": "CP01 offline",
                         "action": "bays shown green", "bay": None, "charger": "CP01"}

    assert await store.clear_alarm("charger-offline:CP01", at(20)) is True
    assert await store.clear_alarm("charger-offline:CP01", at(21)) is False
    assert await store.clear_alarm("never-raised", at(21)) is False
    assert [a["key"] for a in await store.active_alarms()] == ["light-no-ack:B01"]
    assert await store.raise_alarm("charger-offline:CP01", at(30), "CP01 offline again", "bays shown green") is True
    assert (await store.active_alarms())[0]["since"] == wire_ts(at(30))

    events = await store.events()
    assert [(e["kind"], e["data"]["key"]) for e in events] == [
        ("alarm", "charger-offline:CP01"), ("alarm", "light-no-ack:B01"),
        ("alarm_cleared", "charger-offline:CP01"), ("alarm", "charger-offline:CP01")]
    assert events[0]["charger"] == "CP01" and events[2]["charger"] == "CP01"
    assert events[1]["bay"] == "B01" and events[1]["data"]["action"] == "retrying"


# tokens


async def test_token_statuses(store: Store, vault: TagVault) -> None:
    now = at(0)
    await store.tokens.put(TAG, "Accepted", at(3600), "G1")
    await store.tokens.put("BLOCKED1", "Blocked", None, None)
    await store.tokens.put("OLD1", "Accepted", at(-1), None)
    await store.tokens.put("FOREVER", "Accepted", None, None)
    assert await store.tokens.status(TAG, now) == "Accepted"
    assert await store.tokens.status(f" {TAG} ", now) == "Accepted"
    assert await store.tokens.status(TAG, at(3600)) == "Expired"
    assert await store.tokens.status("OLD1", now) == "Expired"
    assert await store.tokens.status("BLOCKED1", now) == "Blocked"
    assert await store.tokens.status("FOREVER", at(10**8)) == "Accepted"
    assert await store.tokens.status("UNKNOWN", now) == "Invalid"
    assert await store.tokens.status(TAG.lower(), now) == "Invalid"

    await store.tokens.put(TAG, "Blocked", None, "G2")  # change in place
    assert await store.tokens.status(TAG, now) == "Blocked"
    listed = {t["tag_hash"]: t for t in await store.tokens.all()}
    assert listed[vault.hash_tag(TAG)] == {"tag_hash": vault.hash_tag(TAG), "status": "Blocked",
                                          "expiry": None, "group": "G2"}
    assert listed[vault.hash_tag("OLD1")]["expiry"] == wire_ts(at(-1))
    assert TAG not in repr(await store.tokens.all())
    tags = {t["tag"]: t for t in await store.tokens.tags()}
    assert set(tags) == {TAG, "BLOCKED1", "OLD1", "FOREVER"}
    assert tags[TAG] == {"tag": TAG, "status": "Blocked", "expiry": None, "group": "G2"}

    assert await store.tokens.delete(TAG) is True
    assert await store.tokens.delete(TAG) is False
    assert await store.tokens.status(TAG, now) == "Invalid"
    with pytest.raises(ValueError):
        await store.tokens.put("X", "Maybe", None, None)
    with pytest.raises(ValueError):
        await store.tokens.put("  ", "Accepted", None, None)


async def test_tag_never_stored_in_plain_text(db_path: Path, vault: TagVault) -> None:
    async with await Store.open(db_path, vault) as store:
        h = vault.hash_tag(TAG)
        tx = await store.start_transaction("CP01", 1, "B01", h, 0, at(0))
        await store.add_event("authorize", at(0), charger_id="CP01", data={"tag_hash": h})
        await store.tokens.put(TAG, "Accepted", None, "G1")
        await store.stop_transaction(tx, 10, at(1), None)
        assert [t["tag"] for t in await store.tokens.tags()] == [TAG]
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        raw = b"".join(p.read_bytes() for p in files)
        assert h.encode() in raw  # the files are readable as written...
        assert TAG.encode() not in raw  # ...and the tag is not in them
        assert TAG.encode("utf-16-le") not in raw
    raw = db_path.read_bytes()
    assert h.encode() in raw and TAG.encode() not in raw


async def test_swapped_ciphertexts_of_two_rows_do_not_open(db_path: Path, vault: TagVault) -> None:
    """Someone who can write the database file must not be able to hand one card's rights to another
    by moving ciphertexts between rows: each blob is bound to the hash of the row it lies in."""
    async with await Store.open(db_path, vault) as store:
        await store.tokens.put("ALLOWED", "Accepted", None, None)
        await store.tokens.put("BLOCKED", "Blocked", None, None)
    raw = sqlite3.connect(db_path)
    try:
        (h1, b1), (h2, b2) = raw.execute("SELECT tag_hash, tag_enc FROM tokens").fetchall()
        raw.execute("UPDATE tokens SET tag_enc = ? WHERE tag_hash = ?", (b2, h1))
        raw.execute("UPDATE tokens SET tag_enc = ? WHERE tag_hash = ?", (b1, h2))
        raw.commit()
    finally:
        raw.close()
    async with await Store.open(db_path, vault) as store:
        with pytest.raises(SecretError):
            await store.tokens.tags()


async def test_a_schema_3_database_is_rekeyed_and_reads_after_the_upgrade(db_path: Path, vault: TagVault) -> None:
    """A database written before the keys were derived apart: its local list, its sessions'
    hashes and its event log carry on under the new hashes; the list still opens."""
    old = LegacyTagVault(SECRET)
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    try:
        lay_out(raw, 3)
        for tag, status in ((TAG, "Accepted"), ("BLOCKED1", "Blocked")):
            raw.execute("INSERT INTO tokens (tag_hash, tag_enc, status, updated_at) VALUES (?, ?, ?, ?)",
                        (old.hash_tag(tag), old.encrypt(tag), status, wire_ts(at(0))))
        for connector, tag in ((1, TAG), (2, ""), (3, "NOT-LISTED")):
            raw.execute("INSERT INTO sessions (charger_id, connector_id, tag_hash, meter_start_wh, started_at)"
                        " VALUES ('CP01', ?, ?, 0, ?)", (connector, old.hash_tag(tag), wire_ts(at(0))))
        raw.execute("INSERT INTO events (ts, kind, message, data) VALUES (?, 'token_set', ?, ?)",
                    (wire_ts(at(0)), f"local list: tag {old.hash_tag(TAG)[:8]}… set to Accepted",
                     json.dumps({"tag_hash": old.hash_tag(TAG)})))
        # a session start names its tag in the message only
        raw.execute("INSERT INTO events (ts, kind, message) VALUES (?, 'session_started', ?)",
                    (wire_ts(at(1)), f"CP01/1: session started, tag {old.hash_tag(TAG)[:8]}…, Accepted"))
        raw.commit()
    finally:
        raw.close()
    async with await Store.open(db_path, vault) as store:
        assert (await store.info())["schema_version"] == SCHEMA_VERSION >= 4
        assert sorted(t["tag"] for t in await store.tokens.tags()) == sorted(["BLOCKED1", TAG])
        assert await store.tokens.status(TAG, at(1)) == "Accepted"
        assert await store.tokens.status("BLOCKED1", at(1)) == "Blocked"
        hashes = {s["connector"]: s["tag_hash"] for s in await store.open_sessions()}
        assert hashes[1] == vault.hash_tag(TAG) != old.hash_tag(TAG)
        assert hashes[2] == vault.hash_tag("")  # still reads as "no tag"
        assert hashes[3] == old.hash_tag("NOT-LISTED")  # no tag to hash anew: kept until retention
        events = {e["kind"]: e for e in await store.events()}
        assert events["token_set"]["data"] == {"tag_hash": vault.hash_tag(TAG)}
        assert f"tag {vault.hash_tag(TAG)[:8]}…" in events["token_set"]["message"]
        assert f"tag {vault.hash_tag(TAG)[:8]}…" in events["session_started"]["message"]
        await store.tokens.put("NEW1", "Accepted", None, None)
        assert await store.tokens.status("NEW1", at(1)) == "Accepted"
    async with await Store.open(db_path, vault) as store:  # a second start does not rekey again
        assert sorted(t["tag"] for t in await store.tokens.tags()) == sorted(["BLOCKED1", "NEW1", TAG])


# retention


async def test_purge(store: Store, vault: TagVault) -> None:
    h = vault.hash_tag(TAG)
    old = await store.start_transaction("CP01", 1, "B01", h, 0, at(0))
    await store.add_meter_samples([("CP01", 1, old, at(1), 1.0, 1.0, 1.0, 1.0, 5.0),
                                   ("CP01", 2, None, at(1), 0.0, 0.0, 0.0, 0.0, 0.0)])
    await store.stop_transaction(old, 10, at(10), None)
    still_open = await store.start_transaction("CP01", 2, "B02", h, 0, at(5))
    await store.add_meter_samples([("CP01", 2, still_open, at(6), 1.0, 1.0, 1.0, 1.0, 5.0)])
    late_stop = await store.start_transaction("CP02", 1, "B03", h, 0, at(6))
    await store.add_meter_samples([("CP02", 1, late_stop, at(7), 1.0, 1.0, 1.0, 1.0, 5.0)])
    await store.stop_transaction(late_stop, 10, at(200), None)
    await store.add_event("old", at(50))
    await store.add_event("new", at(150))
    await store.raise_alarm("gone", at(0), "m", "a")
    await store.clear_alarm("gone", at(20))
    await store.raise_alarm("still", at(0), "m", "a")

    # the old session, its sample, the loose sample, the cleared alarm, and 4 events before the cutoff
    assert await store.purge_older_than(at(100)) == 1 + 1 + 1 + 1 + 4
    assert await store.session(old) is None
    assert await store.meter_samples(old) == []
    assert await store.session(still_open) is not None and len(await store.meter_samples(still_open)) == 1
    assert await store.session(late_stop) is not None and len(await store.meter_samples(late_stop)) == 1
    assert [e["kind"] for e in await store.events()] == ["new"]
    assert [a["key"] for a in await store.active_alarms()] == ["still"]
    assert await store.purge_older_than(at(100)) == 0

    # transaction ids are never reused, even once the newest session is purged
    await store.stop_transaction(still_open, 10, at(20), None)
    await store.purge_older_than(at(1000))
    assert await store.sessions() == []
    assert await store.start_transaction("CP01", 1, None, h, 0, at(2000)) > late_stop


async def test_cancelled_write_leaves_the_store_usable(store: Store, vault: TagVault) -> None:
    h = vault.hash_tag(TAG)
    for yields in range(8):
        task = asyncio.ensure_future(store.start_transaction("CP01", 1, None, h, 0, at(yields)))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.start_transaction("CP01", 1, None, h, 0, at(yields)) > 0
        assert (await store.info())["synchronous"] == "NORMAL"


async def test_a_chargers_set_up_is_remembered_across_a_restart_and_an_unreadable_one_is_sent_again(db_path: Path, vault: TagVault) -> None:
    at = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    async with await Store.open(db_path, vault) as store:
        await store.setups.put("CP01", {"meter": "5", "profile:990001": "{}"}, at)
        await store.setups.put("CP02", {"meter": "10"}, at)
        await store.setups.forget("CP02")
        async with store._conn.write() as db:
            await db.execute("INSERT INTO settings (key, value) VALUES ('setup:CP03', 'not json')")
    async with await Store.open(db_path, vault) as store:
        assert await store.setups.all() == {"CP01": ({"meter": "5", "profile:990001": "{}"}, at)}
