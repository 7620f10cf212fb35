"""The admin API of the real daemon: the token it makes at its first start, the token file's mode,
web pages kept out, and hostile requests answered without harm."""

from __future__ import annotations

import socket
import stat

import pytest

from tests.integration.harness import chargers


async def test_the_daemon_makes_an_owner_only_token_at_first_start_and_keeps_it(make_daemon):
    d = make_daemon()
    d.start()
    token_file = d.folder / "state" / "api-token"  # beside the database: the config names no token file
    assert d.token_file == token_file and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = d.token
    assert token and len(token) >= 40
    assert str(token_file) in d.log() and token not in d.log()
    assert (await d.aapi("GET", "/api/status", token="not-the-token"))[0] == 401
    assert (await d.aapi("GET", "/api/status"))[0] == 200
    assert d.stop() == 0
    d.start()
    assert d.token == token  # the same token after a restart
    assert (await d.aapi("GET", "/api/status"))[0] == 200


async def test_a_token_file_others_may_read_stops_the_start_with_exit_2_naming_it(make_daemon, tmp_path):
    d = make_daemon(token="a-token-that-others-can-read")
    (tmp_path / "api-token").chmod(0o644)
    with pytest.raises(RuntimeError, match="exited with 2"):
        d.start()
    assert f"api.token_file {tmp_path / 'api-token'}" in d.log() and "chmod 600" in d.log()
    assert "a-token-that-others-can-read" not in d.log()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_web_page_cannot_reset_a_charger_and_hostile_requests_are_400_not_500(make_daemon):
    d = make_daemon(chargers=1)
    d.start()
    async with chargers(d, "CP01"):
        connected_at = (await d.aapi("GET", "/api/chargers"))[1][0]["connected_at"]
        page = (f"POST /api/chargers/CP01/call/Reset HTTP/1.1\r\nHost: 127.0.0.1:{d.api_port}\r\n"
                "Origin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
                'Connection: close\r\n\r\n{"type": "Hard"}').encode()
        assert _raw(d.api_port, page).startswith(b"HTTP/1.1 403")
        rebound = (f"GET /api/status HTTP/1.1\r\nHost: evil.example:{d.api_port}\r\n"
                   f"Authorization: Bearer {d.token}\r\nConnection: close\r\n\r\n").encode()
        assert _raw(d.api_port, rebound).startswith(b"HTTP/1.1 403")
        bad_auth = (f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{d.api_port}\r\nConnection: close\r\n"
                    "Authorization: Bearer \xff\xfe\r\n\r\n").encode("latin-1")
        assert _raw(d.api_port, bad_auth).startswith(b"HTTP/1.1 401")
        nested: list = []
        for _ in range(40):
            nested = [nested]
        assert (await d.aapi("POST", "/api/chargers/CP01/call/Reset", {"type": "Hard", "x": nested}))[0] == 400
        huge = '{"type": "Hard", "n": ' + "9" * 5000 + "}"
        big = (f"POST /api/chargers/CP01/call/Reset HTTP/1.1\r\nHost: 127.0.0.1:{d.api_port}\r\n"
               f"Authorization: Bearer {d.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(huge)}\r\nConnection: close\r\n\r\n{huge}").encode()
        assert _raw(d.api_port, big).startswith(b"HTTP/1.1 400")
        assert (await d.aapi("GET", "/api/events?since=99999-01-01T00:00:00Z"))[0] == 400
        assert (await d.aapi("POST", "/api/chargers/CP01/call/UpdateFirmware", {}))[0] == 403
        assert (await d.aapi("POST", "/api/chargers/CP01/call/BootNotification", {}))[0] == 400
        # no Reset reached the charger: it would have rebooted and connected again
        assert (await d.aapi("GET", "/api/chargers"))[1][0]["connected_at"] == connected_at
        # a real call still goes through, and is in the event log with who and the result
        status, answer = await d.aapi("POST", "/api/chargers/CP01/call/TriggerMessage",
                                      {"requestedMessage": "Heartbeat"})
        assert status == 200, answer
        events = (await d.aapi("GET", "/api/events?limit=1000"))[1]
        calls = [e for e in events if e["kind"] == "charger_call"]
        assert [(e["data"]["action"], e["data"]["status"]) for e in sorted(calls, key=lambda e: e["id"])] == [
            ("Reset", 400), ("Reset", 400), ("UpdateFirmware", 403), ("BootNotification", 400),
            ("TriggerMessage", 200)], calls
        assert "Traceback" not in d.log()
    assert (await d.aapi("GET", "/api/health"))[0] == 200
