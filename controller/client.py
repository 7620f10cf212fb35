"""A small client of the admin API for the operator's commands, finding the daemon as interfaces.md §1 says."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 2, 3, 4


class ClientError(Exception):
    """The command could not be done; `exit_code` says which kind of failure."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiClient:
    """JSON over HTTP to a running daemon, every request under a timeout."""

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 10.0, tz: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._tz = tz

    @classmethod
    def from_args(cls, *, api: str | None, token_file: str | None, config: Path | None) -> "ApiClient":
        if api:
            return cls(api, _read_token(Path(token_file)) if token_file else None)
        if config is None or not config.exists():
            raise ClientError(
                f"no config at {config}: give --config FILE, or --api URL [--token-file F], or set LAADPLEIN_CONFIG",
                EXIT_USAGE,
            )
        from config.loader import ConfigError, load_config

        try:
            cfg = load_config(config)
        except ConfigError as exc:
            raise ClientError("\n".join(str(i) for i in exc.issues), EXIT_USAGE) from None
        host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
        token = _read_token(cfg.api.token_file) if cfg.api.token_file else None
        return cls(f"http://{host}:{cfg.api.port}", token, tz=cfg.site.timezone)

    def request(self, method: str, path: str, body: dict | None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 401:
                raise ClientError(f"the daemon refused the token ({detail})", EXIT_REFUSED) from None
            raise ClientError(f"{method} {path}: HTTP {exc.code}: {detail}", EXIT_USAGE if exc.code < 500 else 1) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"daemon not reachable at {self.base_url} ({reason})", EXIT_UNREACHABLE) from None

    def get(self, path: str) -> object:
        return self.request("GET", path, None)

    def timezone(self) -> str:
        """The square's time zone (from the config, or asked of the daemon)."""
        if self._tz is None:
            status = self.get("/api/status")
            self._tz = status.get("timezone") or "UTC" if isinstance(status, dict) else "UTC"
        return self._tz


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ClientError(f"cannot read the token file {path} ({exc.strerror})", EXIT_USAGE) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        return str(body.get("error") or body)
    except (ValueError, AttributeError):
        return exc.reason
