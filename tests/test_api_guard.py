"""The admin API against hostile clients, in-process over real sockets: token, Origin, Host, JSON only,
the charger call's action list, bounded JSON, control characters, slow clients and the connection cap."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.loader import load_config_text
from controller.api.server import AdminApi
from controller.cli.client import ApiClient
from controller.shell.cycle import Cycle
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract.events import ChargerConnected

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
TOKEN = "a-test-token-of-enough-length-0123"
CONFIG = """
[site]
id = "apitest"
[grid]
limit_a = 80
[api]
port = {port}
max_connections = 4
request_timeout_s = 1
{extra}
[[chargers]]
id = "CP01"
max_current_a = 32
[[chargers]]
id = "CP02"
max_current_a = 32
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
"""


class FakeOcpp:
    """CP01 speaks OCPP 1.6, CP02 2.0.1; every call is answered Accepted and remembered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []

    def connected(self) -> dict[str, str]:
        return {"CP01": "ocpp1.6", "CP02": "ocpp2.0.1"}

    async def call(self, charger_id: str, action: str, payload: dict) -> dict:
        self.calls.append((charger_id, action, payload))
        return {"status": "Accepted"}

    def tell_limits(self, charger_id: str, limits: dict) -> None:
        from drivers.ocpp.message_limits import told_limits

        self.told = (charger_id, told_limits(limits))


class Publisher:
    def publish_light(self, bay_id: str, command: dict) -> None:
        pass

    def publish_state(self, snapshot: dict) -> None:
        pass

    def published_at(self, bay_id: str) -> datetime | None:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, api: AdminApi, state: SquareState, ocpp: FakeOcpp, port: int) -> None:
        self.api, self.state, self.ocpp, self.port = api, state, ocpp, port

    async def raw(self, data: bytes, *, timeout_s: float = 10) -> tuple[int, bytes]:
        """Send `data` as is; the answer's status and body (0, b"" when the server closed without one)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(timeout_s):
                answer = await reader.read()
        finally:
            writer.close()
        if not answer:
            return 0, b""
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def request(self, method: str, path: str, body: object = None, *, token: str | None = TOKEN,
                      headers: dict[str, str] | None = None, raw_body: bytes | None = None) -> tuple[int, object]:
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close",
                 f"Content-Length: {len(data)}"]
        if data and raw_body is None:
            lines.append("Content-Type: application/json")
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        status, answer = await self.raw(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        try:
            return status, json.loads(answer) if answer else None
        except ValueError:
            return status, answer.decode(errors="replace")


@pytest.fixture
async def served(tmp_path: Path, request):
    extra = getattr(request, "param", "")
    port = _free_port()
    cfg = load_config_text(CONFIG.format(port=port, extra=extra))
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as store:
        state = SquareState(cfg, store, clock=lambda: T0)
        for charger, version in (("CP01", "ocpp1.6"), ("CP02", "ocpp2.0.1")):
            state.record(ChargerConnected(charger_id=charger, ocpp_version=version, at=T0))
        ocpp = FakeOcpp()
        api = AdminApi(state, Cycle(state, Publisher()), ocpp, token=TOKEN)
        ready = asyncio.Event()
        task = asyncio.create_task(api.run("127.0.0.1", port, ready))
        await asyncio.wait_for(ready.wait(), timeout=5)
        try:
            yield Served(api, state, ocpp, port)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


# ---- token ----------------------------------------------------------------------------------


async def test_every_request_needs_the_token_and_health_says_no_more_than_alive_without_it(served):
    assert (await served.request("GET", "/api/status", token=None))[0] == 401
    assert (await served.request("GET", "/api/status", token="wrong"))[0] == 401
    assert (await served.request("GET", "/api/status", token=TOKEN + "x"))[0] == 401
    assert (await served.request("GET", "/api/status"))[0] == 200
    assert await served.request("GET", "/api/health", token=None) == (200, {"ok": True})
    status, health = await served.request("GET", "/api/health")
    assert status == 200 and health["chargers"] == 2
    assert (await served.request("POST", "/api/chargers/CP01/call/Reset", {"type": "Soft"}, token=None))[0] == 401
    assert served.ocpp.calls == []


async def test_a_non_utf8_authorization_header_is_refused_not_a_crash(served):
    head = (f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nConnection: close\r\n"
            "Authorization: Bearer ").encode() + b"\xff\xfe\xc3(" + b"\r\n\r\n"
    assert (await served.raw(head))[0] == 401


# ---- web pages: Origin, Host, content type --------------------------------------------------


async def test_a_web_pages_text_plain_post_never_reaches_a_charger(served):
    # what a hostile page's fetch(..., {mode: "no-cors", body: "..."}) sends: no token, an Origin, text/plain
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert (await served.request("POST", "/api/chargers/CP01/call/Reset", token=None, headers=page,
                                 raw_body=b'{"type": "Hard"}'))[0] == 403
    # and with the token, still no Origin and no other content type
    assert (await served.request("GET", "/api/status", headers={"Origin": "null"}))[0] == 403
    assert (await served.request("POST", "/api/chargers/CP01/call/Reset", headers={"Content-Type": "text/plain"},
                                 raw_body=b'{"type": "Hard"}'))[0] == 415
    assert served.ocpp.calls == []


async def test_a_foreign_host_is_refused_and_the_loopback_names_are_not(served):
    async def with_host(host: str) -> int:
        req = (f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
               f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
        return (await served.raw(req))[0]

    assert await with_host("rebound.evil.example") == 403
    assert await with_host(f"rebound.evil.example:{served.port}") == 403
    assert await with_host("") == 403
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert await with_host(f"{name}:{served.port}") == 200, name


# ---- the charger call -----------------------------------------------------------------------


async def test_only_requests_a_central_system_sends_in_the_chargers_version_are_forwarded(served):
    for action in ("BootNotification", "Foo", "Reset.json", "schemas", "A" * 65):
        status, body = await served.request("POST", f"/api/chargers/CP01/call/{action}", {})
        assert status in (400, 404) and status != 200, (action, status, body)
    # a 2.0.1 request to a 1.6 charger, and the other way round
    assert (await served.request("POST", "/api/chargers/CP01/call/RequestStartTransaction", {}))[0] == 400
    assert (await served.request("POST", "/api/chargers/CP02/call/RemoteStartTransaction", {}))[0] == 400
    assert served.ocpp.calls == []
    assert await served.request("POST", "/api/chargers/CP01/call/Reset", {"type": "Soft"}) == (200, {"status": "Accepted"})
    assert served.ocpp.calls == [("CP01", "Reset", {"type": "Soft"})]


async def test_firmware_and_certificate_requests_need_allow_risky_calls(served):
    for action in ("UpdateFirmware", "InstallCertificate", "DeleteCertificate", "CertificateSigned", "SignedUpdateFirmware",
                   "GetDiagnostics"):
        status, body = await served.request("POST", f"/api/chargers/CP01/call/{action}", {})
        assert status == 403 and "allow_risky_calls" in body["error"], (action, body)
    for action in ("GetLog", "CustomerInformation"):  # OCPP 2.0.1: logs or a customer's data sent elsewhere
        status, body = await served.request("POST", f"/api/chargers/CP02/call/{action}", {})
        assert status == 403 and "allow_risky_calls" in body["error"], (action, body)
    assert served.ocpp.calls == []


async def test_security_settings_need_allow_risky_calls_and_other_settings_do_not(served):
    for key in ("SecurityProfile", "AdditionalRootCertificateCheck", "CpoName"):
        status, body = await served.request("POST", "/api/chargers/CP01/call/ChangeConfiguration",
                                            {"key": key, "value": "0"})
        assert status == 403 and "allow_risky_calls" in body["error"] and key in body["error"], (key, body)
    for component, variable in (("SecurityCtrlr", "SecurityProfile"), ("SecurityCtrlr", "Identity"),
                                ("OCPPCommCtrlr", "NetworkConfigurationPriority")):
        data = [{"attributeValue": "1", "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}},
                {"attributeValue": "x", "component": {"name": component}, "variable": {"name": variable}}]
        status, body = await served.request("POST", "/api/chargers/CP02/call/SetVariables", {"setVariableData": data})
        assert status == 403 and f"{component}.{variable}" in body["error"], (component, body)
    assert served.ocpp.calls == []
    # an everyday setting goes through
    assert (await served.request("POST", "/api/chargers/CP01/call/ChangeConfiguration",
                                 {"key": "MeterValueSampleInterval", "value": "10"}))[0] == 200
    assert served.ocpp.calls == [("CP01", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "10"})]


async def test_a_new_charger_password_goes_out_only_once_the_gateway_holds_it(served):
    new = "a-new-password-of-20c"
    key = {"key": "AuthorizationKey", "value": new.encode().hex()}
    basic = {"setVariableData": [{"attributeValue": new, "component": {"name": "SecurityCtrlr"},
                                  "variable": {"name": "BasicAuthPassword"}}]}
    # a password the gateway does not hold would lock the charger out
    for charger, action, payload in (("CP01", "ChangeConfiguration", key), ("CP02", "SetVariables", basic),
                                     ("CP01", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "zz"})):
        status, body = await served.request("POST", f"/api/chargers/{charger}/call/{action}", payload)
        assert status == 403 and "PUT /api/chargers" in body["error"], (action, body)
    assert served.ocpp.calls == []
    for charger in ("CP01", "CP02"):
        assert (await served.request("PUT", f"/api/chargers/{charger}/password", {"password": new}))[0] == 200
    assert (await served.request("POST", "/api/chargers/CP01/call/ChangeConfiguration", key))[0] == 200
    assert (await served.request("POST", "/api/chargers/CP02/call/SetVariables", basic))[0] == 200
    assert served.ocpp.calls == [("CP01", "ChangeConfiguration", key), ("CP02", "SetVariables", basic)]
    # a key whose hex digits are themselves the password (chargers that log in with the digits, as the
    # OCTT's TC_073 does): the gateway must hold the digits
    digits = {"key": "AuthorizationKey", "value": "AABBCCDDEEFF00112233445566778899AABBCCDD"}
    assert (await served.request("POST", "/api/chargers/CP01/call/ChangeConfiguration", digits))[0] == 403
    assert (await served.request("PUT", "/api/chargers/CP01/password", {"password": digits["value"]}))[0] == 200
    assert (await served.request("POST", "/api/chargers/CP01/call/ChangeConfiguration", digits))[0] == 200
    assert served.ocpp.calls[-1] == ("CP01", "ChangeConfiguration", digits)


@pytest.mark.parametrize("served", ["allow_risky_calls = true"], indirect=True)
async def test_with_allow_risky_calls_a_firmware_update_is_forwarded(served):
    payload = {"location": "https://fw.example/cp.bin", "retrieveDate": "2026-11-28T13:00:00Z"}
    assert (await served.request("POST", "/api/chargers/CP01/call/UpdateFirmware", payload))[0] == 200
    assert served.ocpp.calls == [("CP01", "UpdateFirmware", payload)]


async def test_every_call_is_in_the_event_log_with_who_action_and_result_never_the_tag(served):
    await served.request("POST", "/api/chargers/CP01/call/RemoteStartTransaction", {"idTag": "SECRET-TAG-0042"})
    await served.request("POST", "/api/chargers/CP02/call/RequestStartTransaction",
                         {"remoteStartId": 1, "idToken": {"idToken": "SECRET-TAG-0043", "type": "ISO14443"}})
    await served.request("POST", "/api/chargers/CP01/call/UpdateFirmware", {})
    calls = [e for e in served.state.pending_log if e.kind == "charger_call"]
    assert [(e.charger_id, e.data["action"], e.data["status"]) for e in calls] == [
        ("CP01", "RemoteStartTransaction", 200), ("CP02", "RequestStartTransaction", 200), ("CP01", "UpdateFirmware", 403)]
    for e in calls:
        assert e.data["who"] == "admin" and e.data["peer"] == "127.0.0.1" and "admin at 127.0.0.1" in e.message
        assert "SECRET-TAG" not in e.message + json.dumps(e.data)


# ---- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize("raw_body", [
    b"[" * 30_000 + b"]" * 30_000,
    b'{"color": "blue", "minutes": ' + b"9" * 5000 + b"}",
    b'{"color": "blue", "minutes": 1e999}',
    b'{"color": "blue", "minutes": NaN}',
    b'{"color": "blue", "minutes": 5, "who": "\\u001b[2J"}',
    b'{"color": "blue", "minutes": 5, "why": "line\\nforged: line"}',
    b'{"color": "blue", "minutes": 5, "who": 7}',
    b"\xff\xfe not utf-8",
])
async def test_hostile_bodies_are_answered_400(served, raw_body):
    status, body = await served.request("PUT", "/api/bays/B01/override", raw_body=raw_body,
                                        headers={"Content-Type": "application/json"})
    assert status == 400, body
    assert "B01" not in served.state.overrides


async def test_a_body_over_64_kib_is_refused_without_a_crash(served):
    status, _ = await served.request("PUT", "/api/bays/B01/override", raw_body=b" " * 70_000 + b"{}",
                                     headers={"Content-Type": "application/json"})
    assert status == 413


@pytest.mark.parametrize("since", ["99999-01-01T00:00:00Z", "0001-01-01T00:00:00%2B01:00", "garbage",
                                   "9999-12-31T23:59:59-05:00", "%00", "2026-13-01"])
async def test_an_out_of_range_or_garbage_since_is_400(served, since):
    for path in ("/api/events", "/api/sessions", "/api/bays/B01/history"):
        assert (await served.request("GET", f"{path}?since={since}"))[0] == 400, (path, since)


@pytest.mark.parametrize("query", ["limit=%C2%B2", "limit=%FF", "limit=" + "9" * 5000, "after_id=%C2%B2",
                                   "after_id=%FF", "since=%FF%FE", "since=" + "9" * 5000])
async def test_garbage_in_the_query_is_400(served, query):
    assert (await served.request("GET", f"/api/events?{query}"))[0] == 400, query


async def test_garbage_in_the_path_is_404_or_400(served):
    for path in ("/api/bays/%FF/history", "/api/bays/%00/override", "/api/chargers/%FF%FE/call/Reset"):
        method = "GET" if path.endswith("history") else "PUT" if path.endswith("override") else "POST"
        status, _ = await served.request(method, path, {"color": "blue", "minutes": 5})
        assert status in (400, 404), (path, status)


@pytest.mark.parametrize("tag", ["TAG\n01", "TAG\x1b[0m", "TAG\u202e10"])
async def test_tags_with_control_characters_are_refused(served, tag):
    assert (await served.request("PUT", "/api/tokens", {"tag": tag}))[0] == 400
    assert (await served.request("DELETE", "/api/tokens", {"tag": tag}))[0] == 400


async def test_a_lights_test_by_a_who_with_control_characters_is_refused(served):
    assert (await served.request("POST", "/api/lights/test", {"who": "tech\x1b]0;pwned\x07"}))[0] == 400
    assert served.api.lights.progress() is None  # it never started


async def test_an_override_cleared_by_a_who_with_control_characters_is_refused(served):
    assert (await served.request("PUT", "/api/bays/B01/override", {"color": "blue", "minutes": 5}))[0] == 200
    assert (await served.request("DELETE", "/api/bays/B01/override?who=%1B%5B2J"))[0] == 400
    assert "B01" in served.state.overrides


# ---- slow clients and the connection cap ----------------------------------------------------


async def test_a_client_that_never_finishes_its_headers_is_cut_off(served):
    # request_timeout_s = 1: the server closes the connection; 10 s is a generous bound for that
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()


async def test_a_client_that_never_finishes_its_body_is_answered_400(served):
    head = (f"PUT /api/bays/B01/override HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nConnection: close\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(head)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.readline()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]


async def test_connections_over_the_cap_get_503_and_the_api_serves_again_once_they_close(served):
    idle = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(4)]  # max_connections = 4
    await asyncio.sleep(0.1)
    assert (await served.request("GET", "/api/status"))[0] == 503
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.2)
    assert (await served.request("GET", "/api/status"))[0] == 200
    assert served.api.port == served.port


# ---- the CLI's client -----------------------------------------------------------------------


async def test_the_cli_never_sends_the_token_through_a_proxy(served, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: a proxied request fails
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = ApiClient(f"http://127.0.0.1:{served.port}", TOKEN)
    assert (await asyncio.to_thread(client.get, "/api/health"))["chargers"] == 2


async def test_a_chargers_message_limits_from_the_operator(served):
    status, body = await served.request("PUT", "/api/chargers/CP02/message-limits", {"GetVariables": {"items": 4, "bytes": 4096}})
    assert status == 200 and body["ok"] and served.ocpp.told[1].items == {"GetVariables": 4}
    for junk in ({"GetVariables": {"items": 0}}, {"Reset": {"items": 2}}, {"GetVariables": "4"}):
        status, body = await served.request("PUT", "/api/chargers/CP02/message-limits", junk)
        assert status == 400 and body["error"], junk
    assert (await served.request("PUT", "/api/chargers/NOPE/message-limits", {"GetVariables": {"items": 4}}))[0] == 404
