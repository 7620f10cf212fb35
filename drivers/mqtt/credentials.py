"""The gateway's broker credentials from files: the password file and the TLS client context of `[mqtt]`.

Secrets never sit in the config itself (it is readable by the gateway's group); each error names the
config key and the file, so `laadplein check` and the daemon say what to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["MAX_PASSWORD_BYTES", "MqttFileError", "read_password", "tls_client_context"]

MAX_PASSWORD_BYTES = 4096  # a password file bigger than this is the wrong file


class MqttFileError(ValueError):
    """A credentials file of `[mqtt]` cannot be used: `key` is the config key, `message` names the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _read(key: str, path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise MqttFileError(key, f"{path}: cannot read it ({exc.strerror or exc})") from None


def read_password(path: Path) -> str:
    """The broker password: the file's first line, without its line end. Raises MqttFileError naming the file."""
    key = "mqtt.password_file"
    data = _read(key, path)
    if len(data) > MAX_PASSWORD_BYTES:
        raise MqttFileError(key, f"{path}: over {MAX_PASSWORD_BYTES} bytes, not a password file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MqttFileError(key, f"{path}: not UTF-8 text") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise MqttFileError(key, f"{path}: the file is empty (the password is its first line)")
    return password


def tls_client_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or newer to the broker, its certificate checked against `ca_file` and its host name.

    With `cert_file` and `key_file` the gateway shows its own certificate. Raises MqttFileError naming
    the file that is missing, unreadable, or not a certificate or key.
    """
    _read("mqtt.ca_file", ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, ValueError) as exc:
        raise MqttFileError("mqtt.ca_file", f"{ca_file}: not a PEM CA certificate ({exc})") from None
    if cert_file is not None and key_file is not None:
        _read("mqtt.cert_file", cert_file)
        key_text = _read("mqtt.key_file", key_file)
        if b"ENCRYPTED" in key_text:
            raise MqttFileError("mqtt.key_file", f"{key_file}: the key is encrypted; the gateway needs it "
                                "unencrypted (readable only by the gateway's user)")
        try:
            context.load_cert_chain(str(cert_file), str(key_file), password=_no_key_password)
        except (ssl.SSLError, ValueError) as exc:
            raise MqttFileError("mqtt.cert_file", f"{cert_file} with {key_file}: not a PEM certificate and its key "
                                f"({exc})") from None
    return context


def _no_key_password() -> str:
    raise ValueError("the key is encrypted")
