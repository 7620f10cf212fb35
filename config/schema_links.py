"""The square's network links in its configuration: the OCPP endpoint chargers connect to and the MQTT
broker the bay lights hang on, with the checks on their TLS and credential files.

Part of `config.schema` (interfaces.md §2), apart because these sections are about who may reach the
gateway, not about the square's electrics.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.issues import CrossCheckError, Loc


def loopback_host(host: str) -> bool:
    """True when listening on `host` reaches only this machine (127.0.0.0/8, ::1, localhost).

    Any other name counts as reachable from outside: a name may resolve to anything.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ocpp_issues(ocpp: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    for cert_key, key_key in (("tls_cert_file", "tls_key_file"), ("tls_ecdsa_cert_file", "tls_ecdsa_key_file")):
        cert, key = ocpp.get(cert_key), ocpp.get(key_key)
        if (cert is None) == (key is None):
            continue
        given, missing = (cert_key, key_key) if key is None else (key_key, cert_key)
        issues.append(((missing,), f"missing: {given} is set, and TLS needs both the certificate and its key"))
    if ocpp.get("tls_ecdsa_cert_file") is not None and ocpp.get("tls_cert_file") is None:
        message = "missing: the ECDSA pair (tls_ecdsa_cert_file) stands beside an RSA pair, tls_cert_file and tls_key_file"
        issues.append((("tls_cert_file",), message))
    return issues


class OcppConfig(BaseModel):
    """The OCPP endpoint: chargers connect to ws://host:port/path/<charger id> (wss:// with a TLS certificate)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field("0.0.0.0", min_length=1)
    port: int = Field(9000, ge=1, le=65535)
    path: str = Field("/ocpp", pattern=r"^(/[A-Za-z0-9._~-]+)+$")
    auth: Literal["free", "local_list"] = "free"
    heartbeat_interval_s: int = Field(300, ge=10, le=86400)
    allow_unknown_chargers: bool = False
    call_timeout_s: float = Field(30, ge=1, le=120)
    # A WebSocket ping every ping_interval_s, answered within as long: a half-open connection
    # (a cut cable, a charger that froze) is noticed within twice the interval plus a second.
    ping_interval_s: float = Field(20, ge=1, le=30)
    # A connector reported free this long (by a charger connected this long) while the gateway still
    # has a session open on it: the session ended unseen and the gateway closes it itself.
    reconcile_after_s: float = Field(60, ge=5, le=3600)
    # Security profile 2: the gateway's certificate (PEM, chain after it) and its unencrypted key make
    # the endpoint wss://, TLS 1.2 or newer. Both or neither; relative to the config file's folder.
    tls_cert_file: Path | None = Field(None, strict=False)
    tls_key_file: Path | None = Field(None, strict=False)
    # An ECDSA certificate and key beside the pair above (then an RSA one): OCPP 2.0.1 asks the central
    # system to offer both ECDSA and RSA cipher suites, and a charger takes the one it supports.
    tls_ecdsa_cert_file: Path | None = Field(None, strict=False)
    tls_ecdsa_key_file: Path | None = Field(None, strict=False)
    # Connections still in their opening handshake from one address, and OCPP connections open in all
    # (handshakes included); beyond either a new connection is closed at once. Unset: the number of
    # chargers plus 16, and twice the number of chargers plus 32 (SquareConfig.ocpp_max_*).
    max_handshakes_per_host: int | None = Field(None, ge=1, le=100_000)
    max_connections: int | None = Field(None, ge=1, le=100_000)
    # Failed Basic Auth logins count for this long: 5 of one charger id from one host, or 20 from one
    # host, and it is refused (HTTP 429) for as long again without a password check.
    login_lockout_s: float = Field(60, ge=1, le=3600)
    # Per charger: messages a second on average, with a burst of message_burst; more are answered
    # later (its socket is read more slowly). Meter readings (meterValue entries) per frame; the
    # newest are kept. Both alarm. A charger sends a message every few seconds and one reading each.
    max_messages_per_s: float = Field(10, ge=0.1, le=10_000)
    message_burst: int = Field(100, ge=1, le=100_000)
    max_samples_per_frame: int = Field(50, ge=1, le=10_000)
    # For certification runs (OCTT): the gateway sends no request of its own to chargers (no set-up,
    # no leases, no status triggers, no local-list push); every charger counts at its maximum and an
    # alarm says so. Requests posted to the admin API's call endpoint still go out.
    conformance_mode: bool = False

    @model_validator(mode="after")
    def _tls_pair(self) -> OcppConfig:
        issues = ocpp_issues(self.model_dump())
        if issues:
            raise CrossCheckError(issues)
        return self

    @property
    def on_loopback(self) -> bool:
        """True when chargers can reach the endpoint only from this machine (see `loopback_host`)."""
        return loopback_host(self.host)


class MqttConfig(BaseModel):
    """The MQTT broker; topics live under <topic_prefix>/<site.id>/."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("laadplein", min_length=1, max_length=128)
    # Credentials and TLS come from files, never inline: the config is readable by the gateway's group,
    # a password file by its user only. Relative paths are taken from the config file's folder.
    username: str | None = Field(None, min_length=1, max_length=128)
    password_file: Path | None = Field(None, strict=False)
    ca_file: Path | None = Field(None, strict=False)  # TLS (mqtts) when set: the CA that signed the broker's certificate
    cert_file: Path | None = Field(None, strict=False)  # a client certificate, with key_file; needs ca_file
    key_file: Path | None = Field(None, strict=False)
    keepalive_s: int = Field(30, ge=5, le=3600)

    @field_validator("topic_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise ValueError(f"{value!r} must not contain the MQTT wildcards '+' or '#'")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{value!r} must not start or end with '/'")
        if "\x00" in value or "//" in value:
            raise ValueError(f"{value!r} must not contain an empty topic level or a NUL character")
        return value

    @model_validator(mode="after")
    def _files_fit(self) -> MqttConfig:
        issues = mqtt_issues(self.model_dump())
        if issues:
            raise CrossCheckError(issues)
        return self


def mqtt_issues(mqtt: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    if mqtt.get("password_file") is not None and mqtt.get("username") is None:
        issues.append((("username",), "missing: password_file is set, and the broker needs the user name with it"))
    cert, key = mqtt.get("cert_file"), mqtt.get("key_file")
    if (cert is None) != (key is None):
        given, missing = ("cert_file", "key_file") if key is None else ("key_file", "cert_file")
        issues.append(((missing,), f"missing: {given} is set, and a client certificate needs both the certificate and its key"))
    if cert is not None and mqtt.get("ca_file") is None:
        issues.append((("ca_file",), "missing: a client certificate is only sent over TLS, which ca_file switches on"))
    return issues
