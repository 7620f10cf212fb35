"""The gateway's own secret and what it protects: keyed hashes of id tags and their encryption.

An id tag identifies a person (spec §8). Everywhere but the local authorization list it is
kept only as `TagVault.hash_tag`; the list keeps the tag itself, encrypted with `TagVault.encrypt`.
The hashing key and the encryption key are derived apart from the secret (HKDF, RFC 5869), so
neither the secret nor one key ever serves two purposes; `LegacyTagVault` reads what the
gateway wrote before that, for the database's migration only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("laadplein.store")

SECRET_BYTES = 32
# The name of the systemd credential that holds the secret (docs/install-debian.md).
CREDENTIAL_NAME = "laadplein.secret"
NONCE_BYTES = 12
_HASH_INFO = b"laadplein id-tag hash v2"
_ENCRYPTION_INFO = b"laadplein id-tag encryption v1"
# Before schema 4: tags were hashed with the secret itself, and every encrypted tag carried the
# same associated data, so two rows could swap their ciphertexts unnoticed.
_LEGACY_AAD = b"laadplein.id-tag.v1"
_AAD_PREFIX = b"laadplein.id-tag.v2:"


class SecretError(Exception):
    """The secret file is unusable, or an encrypted tag does not open with this secret."""


def load_or_create_secret(path: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """Read the gateway's 32-byte secret from `path`, creating it (mode 0600) at first start.

    A file of the wrong size raises `SecretError` and is left alone: every stored tag hash and
    the encrypted token list depend on it, so replacing it would silently orphan them.

    Under systemd, a credential named `laadplein.secret` (`LoadCredentialEncrypted=`, kept
    encrypted on disk) is the secret instead: it is read from $CREDENTIALS_DIRECTORY and never
    made there. A file still at `path` must then hold the same secret (it is a leftover of the
    move to the credential; another secret there means the wrong file was encrypted).
    """
    path = Path(path)
    folder = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    credential = Path(folder) / CREDENTIAL_NAME if folder else None
    if credential is not None and credential.exists():
        secret = _read_secret(credential)
        log.info("gateway secret read from the systemd credential %s", credential)
        try:
            on_disk = _read_secret(path)
        except FileNotFoundError:
            return secret
        if not hmac.compare_digest(on_disk, secret):
            raise SecretError(
                f"the credential {CREDENTIAL_NAME} and {path} hold different gateway secrets; the "
                "stored tag hashes and the token list depend on the one they were made with"
            )
        log.warning("%s is the credential %s unencrypted: remove it", path, CREDENTIAL_NAME)
        return secret
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = os.urandom(SECRET_BYTES)
    # Written under a private name and hard-linked into place, so the secret appears whole or
    # not at all, and a concurrent first start cannot overwrite a secret already in use.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created a new gateway secret at %s", path)
    return secret


def _read_secret(path: Path) -> bytes:
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read(SECRET_BYTES + 1)
    if len(data) != SECRET_BYTES:
        raise SecretError(
            f"{path}: a gateway secret is {SECRET_BYTES} bytes, this file has "
            f"{'more' if len(data) > SECRET_BYTES else len(data)}; it is not replaced, "
            "because stored tag hashes and the token list depend on it"
        )
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); it should be 0600", path, mode & 0o777)
    return data


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the link itself is done
    finally:
        os.close(fd)


def normalise_tag(tag: str) -> str:
    """An id tag as compared and stored: surrounding whitespace removed, case kept."""
    return tag.strip()


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for one purpose, derived from the gateway secret (HKDF-SHA256, no salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


def _check_secret(secret: bytes) -> None:
    if len(secret) != SECRET_BYTES:
        raise SecretError(f"a gateway secret is {SECRET_BYTES} bytes, got {len(secret)}")


def _open(aead: AESGCM, blob: bytes, aad: bytes) -> str:
    if len(blob) < NONCE_BYTES + 16:
        raise SecretError("encrypted tag is too short")
    try:
        plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SecretError("encrypted tag does not open with this gateway secret under its hash") from None
    return plain.decode("utf-8")


class TagVault:
    """Keyed hashing and encryption of id tags, each with its own key derived from the gateway's secret."""

    def __init__(self, secret: bytes) -> None:
        _check_secret(secret)
        self._hash_key = derive_key(secret, _HASH_INFO)
        self._aead = AESGCM(derive_key(secret, _ENCRYPTION_INFO))
        self.legacy = LegacyTagVault(secret)  # read by the migration to schema 4 only

    def __repr__(self) -> str:
        return "TagVault(<secret>)"

    def hash_tag(self, tag: str) -> str:
        """HMAC-SHA256 of the normalised tag under the hashing key, as 64 lowercase hex digits."""
        message = normalise_tag(tag).encode("utf-8")
        return hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()

    def encrypt(self, tag: str) -> bytes:
        """AES-GCM of the normalised tag: a random 12-byte nonce followed by the ciphertext.

        The tag's hash is the associated data: a blob opens only beside the hash it was stored
        under, so one row's ciphertext moved to another row no longer decrypts.
        """
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, normalise_tag(tag).encode("utf-8"), self._aad(self.hash_tag(tag)))

    def decrypt(self, blob: bytes, tag_hash: str) -> str:
        """The tag inside a blob made by `encrypt` and stored under `tag_hash`; `SecretError` if
        it was made with another secret, for another hash, or altered."""
        return _open(self._aead, blob, self._aad(tag_hash))

    @staticmethod
    def _aad(tag_hash: str) -> bytes:
        return _AAD_PREFIX + tag_hash.encode("ascii")


class LegacyTagVault:
    """The hashing and encryption the gateway used before schema 4, read by its migration only."""

    def __init__(self, secret: bytes) -> None:
        _check_secret(secret)
        self._hash_key = bytes(secret)
        self._aead = AESGCM(derive_key(secret, _ENCRYPTION_INFO))

    def __repr__(self) -> str:
        return "LegacyTagVault(<secret>)"

    def hash_tag(self, tag: str) -> str:
        """The old hash: HMAC-SHA256 keyed with the secret itself."""
        return hmac.new(self._hash_key, normalise_tag(tag).encode("utf-8"), hashlib.sha256).hexdigest()

    def decrypt(self, blob: bytes) -> str:
        """A tag encrypted before schema 4 (the same associated data for every row)."""
        return _open(self._aead, blob, _LEGACY_AAD)

    def encrypt(self, tag: str) -> bytes:
        """A blob as the gateway wrote it before schema 4: for tests of the migration."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, normalise_tag(tag).encode("utf-8"), _LEGACY_AAD)
