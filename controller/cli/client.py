"""A small client of the admin API for the operator's commands, finding the daemon as interfaces.md §1 says."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 2, 3, 4
DEFAULT_CONFIG = Path("/etc/laadplein/laadplein.toml")
# HTTP answers that mean the request itself was wrong (a bay or charger that does not exist, a bad value)
USAGE_STATUSES = frozenset({400, 404, 405, 413, 422})
# With --api the daemon's OCPP call timeout is unknown: wait out the longest the config allows (120 s)
UNKNOWN_CALL_TIMEOUT_S = 125.0


class ClientError(Exception):
    """The command could not be done; `exit_code` says which kind of failure.

    `status` and `body` are the HTTP status and JSON answer when the daemon answered with an error.
    """

    def __init__(self, message: str, exit_code: int, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.body = body


def config_path(config: str | None) -> Path:
    """The config to read: the one given, else $LAADPLEIN_CONFIG, else the default."""
    if config:
        return Path(config)
    env = os.environ.get("LAADPLEIN_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


class ApiClient:
    """JSON over HTTP to a running daemon, every request under a timeout."""

    def __init__(
        self, base_url: str, token: str | None, *, timeout_s: float = 10.0, tz: str | None = None,
        call_timeout_s: float | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._tz = tz
        self.call_timeout_s = call_timeout_s  # the daemon's OCPP call timeout (s), when its config is known
        # No proxy, whatever http_proxy or https_proxy say: the token must go to the gateway only.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls or ssl.create_default_context()),
        )

    @classmethod
    def from_args(cls, *, api: str | None, token_file: str | None, config: str | Path | None) -> ApiClient:
        """Find the daemon: `--api URL` (with `--token-file`), else the config's [api] and token file."""
        if api:
            if config:
                raise ClientError("give either --config FILE or --api URL, not both", EXIT_USAGE)
            if not api.startswith(("http://", "https://")):
                raise ClientError(f"--api must be a URL like http://127.0.0.1:8080, not {api!r}", EXIT_USAGE)
            # Without --token-file no token is sent, and the daemon's refusal says so (exit 4).
            return cls(api, _read_token(Path(token_file)) if token_file else None)
        path = config_path(str(config) if config else None)
        if not path.exists():
            raise ClientError(
                f"no config at {path}: give --config FILE, or --api URL [--token-file F], or set LAADPLEIN_CONFIG",
                EXIT_USAGE,
            )
        from config.loader import ConfigError, load_config

        try:
            cfg = load_config(path)
        except ConfigError as exc:
            raise ClientError("\n".join(str(i) for i in exc.issues), EXIT_USAGE) from None
        host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
        if ":" in host:
            host = f"[{host}]"
        token = _read_token(Path(token_file) if token_file else cfg.api_token_file)
        tls = pinned_context(cfg.api.cert_file) if cfg.api.cert_file is not None else None
        scheme = "https" if tls is not None else "http"
        return cls(f"{scheme}://{host}:{cfg.api.port}", token, tz=cfg.site.timezone,
                   call_timeout_s=cfg.ocpp.call_timeout_s, tls=tls)

    def request(self, method: str, path: str, body: dict | None, *, timeout_s: float | None = None) -> Any:
        """The daemon's JSON answer; ClientError with the exit code that fits any failure."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        wait_s = timeout_s or self.timeout_s
        try:
            with self._opener.open(req, timeout=wait_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            answer, detail = _error_body(exc)
            if exc.code in (401, 403):
                raise ClientError(f"the daemon refused the token ({detail})", EXIT_REFUSED, status=exc.code, body=answer) from None
            code = EXIT_USAGE if exc.code in USAGE_STATUSES else EXIT_FAILED
            raise ClientError(detail, code, status=exc.code, body=answer) from None
        except TimeoutError:
            raise ClientError(f"daemon not reachable at {self.base_url} (no answer within {wait_s:g} s)", EXIT_UNREACHABLE) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            why = str(reason) or type(reason).__name__
            raise ClientError(f"daemon not reachable at {self.base_url} ({why})", EXIT_UNREACHABLE) from None
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise ClientError(f"no laadplein daemon at {self.base_url} (its answer to {path} is not JSON)", EXIT_UNREACHABLE) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path, None)

    def call_charger(self, charger_id: str, action: str, payload: dict) -> Any:
        """An OCPP request through the daemon, waiting as long as the daemon waits for the charger."""
        wait_s = (self.call_timeout_s or UNKNOWN_CALL_TIMEOUT_S) + 5.0
        return self.request("POST", f"/api/chargers/{quote_part(charger_id)}/call/{action}", payload, timeout_s=max(wait_s, self.timeout_s))

    def timezone(self) -> str:
        """The square's time zone (from the config, or asked of the daemon)."""
        if self._tz is None:
            status = self.get("/api/status")
            zone = status.get("timezone") if isinstance(status, dict) else None
            self._tz = zone if isinstance(zone, str) and zone else "UTC"
        return self._tz


def quote_part(part: str) -> str:
    """An id (bay, charger) as one segment of a URL path."""
    return urllib.request.quote(part, safe="")


def pinned_context(cert_file: Path) -> ssl.SSLContext:
    """TLS that trusts exactly the daemon's own certificate (from its config), by whatever name it is reached.

    Only the file's first certificate is trusted: a chain after it names an issuer, and trusting that
    issuer would let any certificate it signed, for any name, stand in for the daemon.
    """
    # No system CAs: with the host name unchecked, any certificate a public CA signed would pass.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the certificate itself is the trust anchor: nothing else chains to it
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        text = cert_file.read_text(encoding="ascii", errors="replace")
        end = "-----END CERTIFICATE-----"
        start = text.find("-----BEGIN CERTIFICATE-----")
        if start < 0 or end not in text[start:]:
            raise ssl.SSLError(f"no PEM certificate in {cert_file}")
        context.load_verify_locations(cadata=text[start:text.index(end, start) + len(end)] + "\n")
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"cannot read the admin API's certificate {cert_file} ({exc})", EXIT_USAGE) from None
    return context


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        hint = " (the daemon makes it at its first start)" if isinstance(exc, FileNotFoundError) else ""
        raise ClientError(f"cannot read the token file {path} ({exc.strerror}){hint}", EXIT_USAGE) from None


def _error_body(exc: urllib.error.HTTPError) -> tuple[Any, str]:
    """The error answer (JSON when it is) and the words to show for it."""
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None, f"HTTP {exc.code} {exc.reason}"
    if isinstance(body, dict) and body.get("error"):
        return body, str(body["error"])
    return body, f"HTTP {exc.code} {exc.reason}"
