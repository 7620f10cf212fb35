"""Chargers' OCPP Basic Auth passwords (security profiles 1 and 2), kept only as salted scrypt hashes:
the config's hashed at start, the ones set through the admin API in the `charger_passwords` table."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from config.schema import EXPOSED_MIN_PASSWORD_CHARS

if TYPE_CHECKING:
    from config.schema import ChargerConfig
    from controller.store.database import Store

__all__ = [
    "MAX_PASSWORD_CHARS",
    "RECOMMENDED_MIN_CHARS",
    "ChargerPasswords",
    "PasswordError",
    "change_password",
    "hash_password",
    "min_password_chars",
    "password_problem",
    "restore_passwords",
    "verify_password",
]

log = logging.getLogger("laadplein.passwords")

# scrypt's "interactive login" parameters: 16 MiB and ~40 ms a hash. Kept in every hash string, so
# they can change without invalidating the stored ones.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD_CHARS = 64
# OCPP 2.0.1 (BasicAuthPassword) and the 1.6 security whitepaper ask for 16 to 40 characters.
RECOMMENDED_MIN_CHARS = EXPOSED_MIN_PASSWORD_CHARS
# Bounds on a stored hash's parameters: a tampered database must not stall the handshake for seconds
# or ask for gigabytes.
_MAX_N = 2**17
_MAX_R = 32
_MAX_P = 16
_MAX_MEM_BYTES = 256 * 1024 * 1024
CACHE_ENTRIES = 256


class PasswordError(ValueError):
    """A stored password hash that cannot be read (corrupted, or made with unsupported parameters)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM_BYTES, dklen=length
    )


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P, salt: bytes | None = None
) -> str:
    """The self-describing hash `scrypt$N$r$p$<salt base64>$<hash base64>` of `password`, with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PasswordError("not a scrypt$N$r$p$salt$hash string")
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise PasswordError("a parameter, the salt or the hash does not read") from None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise PasswordError(f"scrypt parameters N={n} r={r} p={p} are out of the supported range")
    if 128 * n * r + 1024 * 1024 > _MAX_MEM_BYTES or not salt or len(digest) < 16:
        raise PasswordError("scrypt memory, salt or hash length out of the supported range")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` hashes to `encoded` (a `hash_password` string); PasswordError when it does not read."""
    n, r, p, salt, digest = _parse(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def min_password_chars(*, exposed: bool, insecure: bool) -> int:
    """The fewest characters a charger's password may have: OCPP's 16 on a non-loopback OCPP endpoint
    (`exposed`), unless the charger's config says insecure = true; else 1."""
    return RECOMMENDED_MIN_CHARS if exposed and not insecure else 1


def password_problem(password: object, *, min_chars: int = 1) -> str | None:
    """Why `password` cannot be a charger's Basic Auth password, or None when it can.

    `min_chars`: see `min_password_chars`.
    """
    if not isinstance(password, str) or not password:
        return "password must be a non-empty string"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"password must be at most {MAX_PASSWORD_CHARS} characters, not {len(password)}"
    if len(password) < min_chars:
        return (f"password must be at least {min_chars} characters on a non-loopback ocpp.host (unless the "
                f"charger's config says insecure = true), not {len(password)}")
    try:
        password.encode("utf-8")  # a lone surrogate (JSON "\ud800") has no bytes to hash or send
    except UnicodeEncodeError:
        return "password must be text that UTF-8 can carry (no lone surrogates)"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in password):
        return "password must not hold control characters"
    return None


class ChargerPasswords:
    """Which chargers need Basic Auth and the check of a presented password, from hashes only.

    One scrypt costs ~40 ms on a desktop core (more on a gateway's), too long for the event loop.
    So correct passwords are remembered: a charger logging in again with the same password costs one
    HMAC, and `known` answers it on the loop. Wrong ones are not: a flood of guesses would push the
    good ones out, and the login lockout already limits how often a guess costs a scrypt. A password
    is filed under an HMAC, keyed with a secret made
    at start and never stored, of the charger id, its hash and the presented password: a new hash
    voids it, and the cache holds nothing a password can be read or cheaply guessed from without
    that key. Only a password not seen before pays the scrypt, in `check`, which is safe to run in
    worker threads; the OCPP endpoint runs few at once and `drivers.ocpp.login_guard` limits how often.
    """

    def __init__(self, *, cache_entries: int = CACHE_ENTRIES) -> None:
        self._hashes: dict[str, str] = {}
        self._cache_key = secrets.token_bytes(32)  # only in memory: the cache dies with the process
        self._outcomes: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_entries = cache_entries
        self._unreadable: set[str] = set()  # chargers whose broken hash was already logged
        # `check` runs in worker threads: the cache's reads-then-writes must not interleave. Never
        # held during a scrypt.
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, chargers: Iterable[ChargerConfig]) -> ChargerPasswords:
        """The config's passwords, hashed (~40 ms each); the clear text is not kept here."""
        passwords = cls()
        for charger in chargers:
            if charger.password:
                passwords.set_hash(charger.id, hash_password(charger.password), known_password=charger.password)
        return passwords

    def required(self, charger_id: str) -> bool:
        """True when the charger must log in with Basic Auth."""
        return charger_id in self._hashes

    def set_hash(self, charger_id: str, encoded: str, *, known_password: str | None = None) -> None:
        """Make `encoded` the charger's password hash from now on (its next connect).

        `known_password`: the password just hashed into `encoded`, so its first check costs no scrypt.
        """
        with self._lock:
            self._hashes[charger_id] = encoded
            self._unreadable.discard(charger_id)
            if known_password is not None:
                self._remember(self._cache_slot(charger_id, encoded, known_password))

    def known(self, charger_id: str, password: str | None) -> bool | None:
        """The outcome of `check` when it costs no scrypt (no password needed or given, or a correct one seen
        before), or None when only `check` can tell. Cheap: for the event loop."""
        with self._lock:
            encoded = self._hashes.get(charger_id)
            if encoded is None:
                return True
            if password is None or charger_id in self._unreadable:
                return False
            slot = self._cache_slot(charger_id, encoded, password)
            outcome = self._outcomes.get(slot)
            if outcome is not None:
                self._outcomes.move_to_end(slot)
            return outcome

    def check(self, charger_id: str, password: str | None) -> bool:
        """True when the charger needs no password, or `password` is its password.

        May cost a scrypt (~40 ms): call it from a worker thread, or after `known` returned None.
        """
        outcome = self.known(charger_id, password)
        if outcome is not None or password is None:
            return bool(outcome)
        with self._lock:
            encoded = self._hashes[charger_id]  # there is one, or `known` had answered; hashes are never removed
            slot = self._cache_slot(charger_id, encoded, password)
        try:
            ok = verify_password(password, encoded)
        except PasswordError as exc:
            # Refuse rather than let the charger in: a technician sets a new password through the API.
            with self._lock:
                first = charger_id not in self._unreadable and self._hashes.get(charger_id) == encoded
                if first:
                    self._unreadable.add(charger_id)
            if first:
                log.error("charger %s: its stored password hash does not read (%s); it is refused until a new "
                          "password is set (PUT /api/chargers/%s/password)", charger_id, exc, charger_id)
            return False
        if ok:
            with self._lock:
                self._remember(slot)
        return ok

    def _cache_slot(self, charger_id: str, encoded: str, password: str) -> bytes:
        message = f"{charger_id}\0{encoded}\0".encode() + password.encode("utf-8")
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()

    def _remember(self, slot: bytes) -> None:
        self._outcomes[slot] = True
        self._outcomes.move_to_end(slot)
        while len(self._outcomes) > self._cache_entries:
            self._outcomes.popitem(last=False)


# ---- storage: the charger_passwords table -------------------------------------------------------


async def restore_passwords(store: Store, passwords: ChargerPasswords) -> int:
    """Put the hashes set through the API (they replace the config's) into `passwords`; how many there were."""
    rows = await store.charger_password_hashes()
    for row in rows:
        passwords.set_hash(row["charger_id"], row["hash"])
        log.info("charger %s: Basic Auth password as set through the admin API at %s (it replaces the config's)",
                 row["charger_id"], row["set_at"])
    return len(rows)


async def change_password(
    store: Store, passwords: ChargerPasswords, charger_id: str, password: str, at: datetime
) -> None:
    """Hash `password` (off the event loop), store the hash durably, and make it the charger's from its next connect.

    Raises ValueError for a password `password_problem` refuses. The password itself is never logged.
    """
    problem = password_problem(password)
    if problem is not None:
        raise ValueError(problem)
    encoded = await asyncio.to_thread(hash_password, password)
    await store.put_charger_password(charger_id, encoded, at)
    passwords.set_hash(charger_id, encoded, known_password=password)
    log.info("charger %s: new Basic Auth password set; it counts from the charger's next connect "
             "(a charger connected now keeps its connection)", charger_id)
    if len(password) < RECOMMENDED_MIN_CHARS:
        log.warning("charger %s: the new password has %d characters; OCPP security asks for %d to 40",
                    charger_id, len(password), RECOMMENDED_MIN_CHARS)
