"""The admin API's bearer token: read from its file, or made (mode 0600) at the daemon's first start.

The token is never logged, only its file's name. A token file that other users can read (any
group or other permission bit) is refused rather than mended: it may already have been read,
so only the owner can judge whether a new token is needed (delete the file; a new one is made).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("laadplein.api")

TOKEN_BYTES = 32  # 256 bits of `secrets`, as 43 URL-safe characters
MIN_TOKEN_CHARS = 16  # a hand-made token shorter than this is guessable


class TokenFileError(Exception):
    """The token file cannot be used; the message names the file and says what to do."""


def load_or_create_token(path: Path) -> str:
    """The token in `path`; a new random one written there (0600) when the file is missing."""
    path = Path(path)
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_EXCL: a file that appeared meanwhile is read, never overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and path.exists():
            return read_token(path)
        raise TokenFileError(
            f"api.token_file {path}: it does not exist and cannot be made ({exc.strerror}); "
            "make it (one line, mode 0600, owned by the daemon's user) or point api.token_file elsewhere"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("admin API: made a new token in %s (mode 0600); clients read it from there", path)
    return token


def read_token(path: Path) -> str:
    """The token in `path`; FileNotFoundError when missing, TokenFileError when unusable."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            raw = f.read(4097)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TokenFileError(f"api.token_file {path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"api.token_file {path}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise TokenFileError(
            f"api.token_file {path}: other users may read or change it (mode {mode:04o}); "
            f"make it owner-only (chmod 600 {path}) and, if it may have been read, delete it "
            "so that the daemon makes a new token at its next start"
        )
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"api.token_file {path}: the token must be printable ASCII") from None
    if len(raw) > 4096 or not token.isprintable() or " " in token:
        raise TokenFileError(f"api.token_file {path}: the token must be one line of printable ASCII without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(
            f"api.token_file {path}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} are needed "
            "(delete the file and the daemon makes a random one)"
        )
    return token
