"""The `[api]` section: the admin HTTP API's address, its token file, TLS and its limits (interfaces.md §5).

Split from `config.schema` (which re-exports it) because the API's safety rules are its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.issues import CrossCheckError, Loc
from config.schema_links import loopback_host

__all__ = ["API_TOKEN_FILE_NAME", "ApiConfig", "api_issues"]

# The token file's name when the config names none: beside the database, in the daemon's own
# writable state folder (/var/lib/laadplein under systemd), where it can make it at first start.
API_TOKEN_FILE_NAME = "api-token"


class ApiConfig(BaseModel):
    """The admin HTTP API: address, bearer token file, TLS (needed off loopback), connection limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    # Every request needs "Authorization: Bearer <the file's content>"; the daemon makes the file
    # (mode 0600) at first start when it is missing. None: `api-token` beside the database.
    token_file: Path | None = Field(None, strict=False)
    # TLS (PEM certificate with its chain, and its unencrypted key): required when host is not loopback.
    cert_file: Path | None = Field(None, strict=False)
    key_file: Path | None = Field(None, strict=False)
    # More names a client may reach the API by (the Host header it sends), e.g. the gateway's DNS
    # name; the bind address, and the loopback names when it covers loopback, are always accepted.
    host_names: list[str] = Field(default_factory=list, max_length=16)
    # Requests that change a charger's firmware or certificates (UpdateFirmware, InstallCertificate, ...).
    allow_risky_calls: bool = False
    # Open connections at once; more wait in the kernel's queue until one closes.
    max_connections: int = Field(64, ge=4, le=1024)
    # s a client may take to send a request's headers and body; a slower one is cut off.
    request_timeout_s: float = Field(10, ge=1, le=120)

    @field_validator("host_names")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or len(name) > 253 or not all(c.isalnum() or c in ".-:[]" for c in name):
                raise ValueError(f"{name!r} is not a host name or address (letters, digits, '.', '-', ':', '[]')")
        return names

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> ApiConfig:
        issues = api_issues(self.model_dump())
        if issues:
            raise CrossCheckError(issues)
        return self


def api_issues(api: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Cross-field problems of a raw `[api]` table: TLS is both files or neither, and needed off loopback."""
    cert, key, host = api.get("cert_file"), api.get("key_file"), api.get("host", "127.0.0.1")
    if (cert is None) != (key is None):
        given, missing = ("cert_file", "key_file") if key is None else ("key_file", "cert_file")
        return [((missing,), f"missing: {given} is set, and TLS needs both the certificate and its key")]
    if cert is None and isinstance(host, str) and host and not loopback_host(host):
        return [(("host",), f"{host!r} is not loopback: the admin API then needs TLS (set cert_file and key_file)")]
    return []
