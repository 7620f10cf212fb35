"""What every admin API request passes before a view sees it (interfaces.md §5), and hostile-input-proof JSON.

No web page may drive the gateway: a request with an `Origin` header or a Host the gateway is
not known by is refused (403), every request but a bare health check needs the bearer token
(401), and a body must be declared JSON (415). Bodies are parsed with bounds on size, nesting
and numbers, so that whatever a client sends is answered 400, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from config.schema_links import loopback_host

log = logging.getLogger("laadplein.api")

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 40  # more digits than any value of the API needs; Python's int parser is quadratic
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTHORIZED = web.RequestKey("authorized", bool)  # the request carried the bearer token


class BadRequest(Exception):
    """The request's body or parameters are wrong; the message says how."""


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


def allowed_hosts(host: str, port: int, names: Iterable[str] = ()) -> frozenset[str]:
    """Every Host header value (lower case) the API answers: its bind address, the configured names,
    and the loopback names when it listens on loopback; each bare and with the port."""
    bare = {n.lower() for n in names}
    if host not in _WILDCARDS:
        bare.add(f"[{host}]" if ":" in host and not host.startswith("[") else host.lower())
    if host in _WILDCARDS or loopback_host(host):
        bare.update(LOOPBACK_NAMES)
    return frozenset(bare | {f"{name}:{port}" for name in bare if name != "::1"})


class Guard:
    """The middleware: Origin, Host, bearer token and content type, then the view; BadRequest -> 400."""

    def __init__(self, token: str, hosts: frozenset[str]) -> None:
        self._expected = b"Bearer " + token.encode("ascii")
        self.hosts = hosts

    def authorized(self, request: web.BaseRequest) -> bool:
        """Whether the request carries the bearer token, compared as raw bytes in constant time."""
        given = [v for k, v in request.raw_headers if k.lower() == b"authorization"]
        return len(given) == 1 and hmac.compare_digest(given[0], self._expected)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if "Origin" in request.headers:
            return error(403, "requests from web pages (with an Origin header) are refused")
        host = request.headers.get("Host", "").lower()
        if host not in self.hosts:
            return error(403, "unknown Host: the admin API answers only to the names in api.host and api.host_names")
        request[AUTHORIZED] = self.authorized(request)
        if not request[AUTHORIZED] and not (request.method == "GET" and request.path == "/api/health"):
            return error(401, "missing or wrong bearer token")
        has_body = request.body_exists or "Content-Type" in request.headers
        if request.method in _BODY_METHODS and has_body and request.content_type != "application/json":
            return error(415, "a request body must be JSON (Content-Type: application/json)")
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, str(exc))


async def read_json(request: web.Request, timeout_s: float) -> Any:
    """The request's JSON body, read within `timeout_s`; BadRequest for anything but bounded JSON."""
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise BadRequest(f"the body did not arrive within {timeout_s:g} s") from None
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """`raw` as JSON, at most MAX_BODY_BYTES, MAX_JSON_DEPTH deep, no number longer than MAX_NUMBER_CHARS."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    depth = _depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"the body nests {depth} levels deep, at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON `text` (strings skipped), without recursion."""
    deepest = depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"a number of {len(text)} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the number {text} is out of range")
    return value


def _constant(text: str) -> float:
    raise BadRequest(f"{text} is not a JSON number")


def plain_text(value: object, name: str, max_chars: int) -> str:
    """An optional free text field (`who`, `why`): a string of at most `max_chars`, no control characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if len(value) > max_chars:
        raise BadRequest(f"{name} must be at most {max_chars} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise BadRequest(f"{name} must not contain control or format characters")
    return value
