"""Chargers' Basic Auth passwords: scrypt hashes, their check and its cache, and the charger_passwords table."""

from __future__ import annotations

import base64
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import controller.store.passwords as pw
from config.schema import ChargerConfig
from controller.store.database import Store
from controller.store.passwords import (
    MAX_PASSWORD_CHARS,
    ChargerPasswords,
    PasswordError,
    change_password,
    hash_password,
    password_problem,
    restore_passwords,
    verify_password,
)
from controller.store.secrets import TagVault

T0 = datetime(2026, 11, 28, 13, 5, 9, tzinfo=UTC)
FAST = {"n": 2**4, "r": 1, "p": 1}  # cheap parameters where the cost itself is not under test
SECRET_TEXT = "Zonnepaneel-Marktplein-2026!"


def charger(charger_id: str, password: str | None) -> ChargerConfig:
    return ChargerConfig(id=charger_id, max_current_a=32, password=password)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full (scrypt) verification the check runs, by the hash it ran against."""
    calls: list[str] = []
    real = pw.verify_password

    def counting(password: str, encoded: str) -> bool:
        calls.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(pw, "verify_password", counting)
    return calls


@pytest.fixture
async def store(tmp_path: Path):
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as s:
        yield s


# ---- hashing -------------------------------------------------------------------------------------


def test_hash_is_self_describing_scrypt_with_the_default_parameters_and_a_random_salt() -> None:
    first, second = hash_password(SECRET_TEXT), hash_password(SECRET_TEXT)
    name, n, r, p, salt, digest = first.split("$")
    assert (name, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert first != second  # a fresh salt each time
    assert SECRET_TEXT not in first
    assert verify_password(SECRET_TEXT, first) and verify_password(SECRET_TEXT, second)
    assert not verify_password(SECRET_TEXT.lower(), first)
    assert not verify_password(SECRET_TEXT + " ", first)


def test_a_hash_made_with_other_parameters_still_verifies_by_its_own() -> None:
    encoded = hash_password("kort-maar-goed", n=2**10, r=4, p=2)
    assert encoded.startswith("scrypt$1024$4$2$")
    assert verify_password("kort-maar-goed", encoded)
    assert not verify_password("kort-maar-fout", encoded)


def test_a_fixed_salt_gives_a_fixed_hash() -> None:
    salt = bytes(16)
    assert hash_password("abc", salt=salt, **FAST) == hash_password("abc", salt=salt, **FAST)
    assert hash_password("abc", salt=salt, **FAST) != hash_password("abd", salt=salt, **FAST)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=MAX_PASSWORD_CHARS), st.text(min_size=1, max_size=MAX_PASSWORD_CHARS))
def test_only_the_password_itself_verifies(password: str, other: str) -> None:
    encoded = hash_password(password, **FAST)
    assert verify_password(password, encoded)
    assert verify_password(other, encoded) == (other == password)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain-text-password",
        "pbkdf2$16384$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==",  # no hash part
        "scrypt$16384$8$1$!!notbase64$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$abc$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # N not a power of two
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # would take forever
        "scrypt$16384$0$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16384$8$1$$AAAAAAAAAAAAAAAAAAAAAA==",  # no salt
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # a hash too short to mean anything
    ],
)
def test_an_unreadable_hash_is_an_error_not_a_match(encoded: str) -> None:
    with pytest.raises(PasswordError):
        verify_password("anything", encoded)


@pytest.mark.parametrize(
    ("password", "ok"),
    [(None, False), ("", False), (42, False), ("x", True), ("a" * MAX_PASSWORD_CHARS, True),
     ("a" * (MAX_PASSWORD_CHARS + 1), False), ("wachtwoord met spaties: en €", True),
     ("\ud800" * 20, False), ("regel\neen", False), ("esc\x1b[2J", False)],
)
def test_password_problem(password: object, ok: bool) -> None:
    assert (password_problem(password) is None) == ok


# ---- the check and its cache ---------------------------------------------------------------------


def test_config_passwords_are_kept_only_as_hashes() -> None:
    passwords = ChargerPasswords.from_config([charger("CP01", SECRET_TEXT), charger("CP02", None)])
    assert passwords.required("CP01") and not passwords.required("CP02") and not passwords.required("CP99")
    held = repr(vars(passwords)) + repr(passwords._outcomes) + repr(passwords._hashes)
    assert SECRET_TEXT not in held
    assert SECRET_TEXT.encode() not in b"".join(passwords._outcomes)


def test_check_refuses_a_missing_or_wrong_password_and_accepts_the_right_one() -> None:
    passwords = ChargerPasswords.from_config([charger("CP01", SECRET_TEXT), charger("CP02", None)])
    assert passwords.check("CP01", SECRET_TEXT)
    assert not passwords.check("CP01", None)
    assert not passwords.check("CP01", "")
    assert not passwords.check("CP01", "wrong")
    assert not passwords.check("CP01", SECRET_TEXT[:-1])
    # No password set: any or none will do (security profile 0 for this charger).
    assert passwords.check("CP02", None) and passwords.check("CP02", "whatever")
    assert passwords.check("CP99", None)


def test_a_known_password_and_a_repeated_one_cost_no_scrypt(counted: list[str]) -> None:
    passwords = ChargerPasswords()
    encoded = hash_password(SECRET_TEXT, **FAST)
    passwords.set_hash("CP01", encoded, known_password=SECRET_TEXT)
    for _ in range(3):
        assert passwords.check("CP01", SECRET_TEXT)
    assert counted == []  # the password was known when its hash was made
    for _ in range(3):
        assert not passwords.check("CP01", "wrong")
    assert counted == [encoded] * 3  # a wrong one is not remembered: the login lockout limits its cost


def test_a_new_hash_voids_what_was_remembered_of_the_old_one(counted: list[str]) -> None:
    passwords = ChargerPasswords()
    old = hash_password("oud-wachtwoord-123", **FAST)
    passwords.set_hash("CP01", old)
    assert passwords.check("CP01", "oud-wachtwoord-123")
    new = hash_password("nieuw-wachtwoord-456", **FAST)
    passwords.set_hash("CP01", new)
    assert not passwords.check("CP01", "oud-wachtwoord-123")
    assert passwords.check("CP01", "nieuw-wachtwoord-456")
    assert counted == [old, new, new]


def test_the_same_password_for_another_charger_is_checked_against_that_chargers_hash(counted: list[str]) -> None:
    passwords = ChargerPasswords()
    passwords.set_hash("CP01", hash_password("gedeeld", **FAST), known_password="gedeeld")
    passwords.set_hash("CP02", hash_password("anders", **FAST))
    assert not passwords.check("CP02", "gedeeld")
    assert len(counted) == 1


def test_the_cache_is_bounded() -> None:
    passwords = ChargerPasswords(cache_entries=4)
    for n in range(20):
        passwords.set_hash(f"CP{n:02d}", hash_password(f"goed-{n}", **FAST))
        assert passwords.check(f"CP{n:02d}", f"goed-{n}")
    assert len(passwords._outcomes) == 4
    assert passwords.known("CP19", "goed-19") is True and passwords.known("CP00", "goed-0") is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40))
def test_wrong_passwords_never_push_a_good_one_out_of_the_cache(guesses: list[str]) -> None:
    passwords = ChargerPasswords(cache_entries=2)
    passwords.set_hash("CP01", hash_password("goed", **FAST), known_password="goed")
    for guess in guesses:
        assert passwords.check("CP01", guess) is (guess == "goed")
        assert passwords.known("CP01", guess) is (True if guess == "goed" else None)
    assert passwords.known("CP01", "goed") is True


def test_an_unreadable_stored_hash_refuses_the_charger_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    passwords = ChargerPasswords()
    passwords.set_hash("CP01", "scrypt$garbage")
    with caplog.at_level(logging.ERROR, logger="laadplein.passwords"):
        assert not passwords.check("CP01", "anything")
        assert not passwords.check("CP01", "something else")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "CP01" in errors[0].getMessage() and "anything" not in errors[0].getMessage()


def test_known_answers_without_a_scrypt_or_says_it_cannot(counted: list[str]) -> None:
    passwords = ChargerPasswords()
    encoded = hash_password(SECRET_TEXT, **FAST)
    passwords.set_hash("CP01", encoded, known_password=SECRET_TEXT)
    assert passwords.known("CP99", None) is True  # no password needed
    assert passwords.known("CP01", None) is False  # needed and not given
    assert passwords.known("CP01", SECRET_TEXT) is True  # known when its hash was made
    assert passwords.known("CP01", "wrong") is None  # only a scrypt can tell
    assert passwords.known("CP01", "wrong") is None  # asking does not remember anything
    assert counted == []
    assert not passwords.check("CP01", "wrong")
    assert passwords.known("CP01", "wrong") is None  # a wrong one is never remembered
    assert counted == [encoded]
    passwords.set_hash("CP01", hash_password("nieuw", **FAST))
    assert passwords.known("CP01", SECRET_TEXT) is None and passwords.known("CP01", "wrong") is None


def test_an_unreadable_hash_is_known_to_refuse_once_it_was_tried() -> None:
    passwords = ChargerPasswords()
    passwords.set_hash("CP01", "scrypt$garbage")
    assert passwords.known("CP01", "anything") is None
    assert not passwords.check("CP01", "anything")
    assert passwords.known("CP01", "something else") is False
    passwords.set_hash("CP01", hash_password("goed", **FAST))
    assert passwords.known("CP01", "goed") is None and passwords.check("CP01", "goed")


def test_checks_from_several_threads_agree_with_one_at_a_time() -> None:
    passwords = ChargerPasswords(cache_entries=8)  # small: entries are evicted while others are read
    for n in range(4):
        passwords.set_hash(f"CP{n}", hash_password(f"goed-{n}", **FAST))
    attempts = [(f"CP{i % 4}", f"goed-{i % 4}" if i % 3 == 0 else f"fout-{i % 7}") for i in range(400)]

    def run(share: list[tuple[str, str]]) -> list[bool]:
        # The answer just remembered may already be evicted by the other threads, never be wrong.
        return [passwords.check(c, p) is (right := p == f"goed-{c[2:]}") and passwords.known(c, p) in (None, right) for c, p in share]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, [attempts[i::4] for i in range(4)]))
    assert all(all(r) for r in results)
    assert len(passwords._outcomes) <= 8


# ---- storage ---------------------------------------------------------------------------------------


async def test_a_changed_password_is_stored_hashed_and_survives_a_restart(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = ChargerPasswords.from_config([charger("CP01", "uit-de-config-1234")])
    with caplog.at_level(logging.INFO, logger="laadplein.passwords"):
        await change_password(store, passwords, "CP01", SECRET_TEXT, T0)
    assert passwords.check("CP01", SECRET_TEXT) and not passwords.check("CP01", "uit-de-config-1234")
    assert SECRET_TEXT not in caplog.text and "CP01" in caplog.text
    rows = await store._conn.fetch("SELECT * FROM charger_passwords")
    assert [(r["charger_id"], r["set_at"]) for r in rows] == [("CP01", "2026-11-28T13:05:09.000Z")]
    assert verify_password(SECRET_TEXT, rows[0]["hash"])
    # After a restart the config's password is hashed again, and the stored one replaces it.
    again = ChargerPasswords.from_config([charger("CP01", "uit-de-config-1234")])
    assert await restore_passwords(store, again) == 1
    assert again.check("CP01", SECRET_TEXT) and not again.check("CP01", "uit-de-config-1234")


async def test_a_charger_without_a_config_password_gets_one_through_the_store(store: Store) -> None:
    passwords = ChargerPasswords.from_config([charger("CP02", None)])
    assert passwords.check("CP02", None)
    await change_password(store, passwords, "CP02", "nu-wel-een-wachtwoord", T0)
    assert not passwords.check("CP02", None)
    fresh = ChargerPasswords.from_config([charger("CP02", None)])
    await restore_passwords(store, fresh)
    assert fresh.required("CP02") and fresh.check("CP02", "nu-wel-een-wachtwoord")


async def test_the_database_file_holds_no_clear_password(store: Store, tmp_path: Path) -> None:
    passwords = ChargerPasswords()
    await change_password(store, passwords, "CP01", SECRET_TEXT, T0)
    await change_password(store, passwords, "CP01", "tweede-" + SECRET_TEXT, T0)
    await store.close()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file())
    assert b"scrypt$" in blob  # the hashes are there (so the search below looks at the right bytes)
    for text in (SECRET_TEXT, "tweede-" + SECRET_TEXT):
        assert text.encode() not in blob and text.encode("utf-16-le") not in blob
    with sqlite3.connect(tmp_path / "state" / "laadplein.db") as db:
        assert db.execute("SELECT COUNT(*) FROM charger_passwords").fetchone()[0] == 1


@pytest.mark.parametrize("password", ["", "x" * (MAX_PASSWORD_CHARS + 1)])
async def test_change_password_refuses_what_password_problem_refuses(store: Store, password: str) -> None:
    passwords = ChargerPasswords()
    with pytest.raises(ValueError):
        await change_password(store, passwords, "CP01", password, T0)
    assert not passwords.required("CP01")
    assert await store._conn.fetch("SELECT * FROM charger_passwords") == []


async def test_a_short_password_is_accepted_with_a_warning(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    passwords = ChargerPasswords()
    with caplog.at_level(logging.WARNING, logger="laadplein.passwords"):
        await change_password(store, passwords, "CP01", "kort", T0)
    assert passwords.check("CP01", "kort")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "16" in warnings[0] and "kort" not in warnings[0]
