"""OCPP security profiles 1 and 2 on the real daemon: Basic Auth with hashed passwords, the failed-login
lockout, a password set through the admin API, and wss:// with the gateway's own certificate; and, on
the OCPP endpoint alone, password checks that keep the event loop free under a flood."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.headers import build_authorization_basic

from controller.cli.check import check_main
from controller.store.passwords import ChargerPasswords, hash_password
from drivers.contract.events import Event
from drivers.ocpp.login_guard import LoginGuard
from drivers.ocpp.server import (
    MAX_PASSWORD_CHECKS_PENDING,
    PASSWORD_CHECK_THREADS,
    OcppServer,
)
from tests.certs import self_signed
from tests.integration.harness import Daemon, square_toml

pytestmark = pytest.mark.integration

PASSWORD = "Marktplein-CP-wachtwoord-01"
NEW_PASSWORD = "Nieuw-wachtwoord-via-de-API-02"
BOOT_16 = {"chargePointVendor": "Laadpaal BV", "chargePointModel": "LP-22"}


def login(url: str, charger_id: str, password: str | None, *, user: str | None = None, **kw):
    """A WebSocket handshake as charger `charger_id`, with Basic Auth when a password is given."""
    headers = {} if password is None else {"Authorization": build_authorization_basic(user or charger_id, password)}
    kw.setdefault("subprotocols", ["ocpp1.6"])
    return connect(f"{url}/{charger_id}", additional_headers=headers, open_timeout=5, **kw)


async def refused_with(url: str, charger_id: str, password: str | None, **kw) -> tuple[int, Headers]:
    """The HTTP status (and headers) a refused handshake got."""
    with pytest.raises(InvalidStatus) as refused:
        async with login(url, charger_id, password, **kw):
            pass
    response = refused.value.response
    return response.status_code, response.headers


async def call(ws: ClientConnection, action: str, payload: dict, message_id: str = "m1") -> list:
    """Send a CALL and return its answer, skipping the gateway's own CALLs (it asks for the status at once)."""
    await ws.send(json.dumps([2, message_id, action, payload]))
    async with asyncio.timeout(5):
        while True:
            frame = json.loads(await ws.recv())
            if frame[0] in (3, 4) and frame[1] == message_id:
                return frame


def log_lines(d: Daemon, pattern: str) -> list[str]:
    return [line for line in d.log().splitlines() if re.search(pattern, line)]


# ---- security profile 1: Basic Auth ----------------------------------------------------------------


async def test_a_missing_or_wrong_password_gets_401_and_a_log_line_and_the_right_one_connects(make_daemon):
    d = make_daemon(password=PASSWORD)
    d.start()
    assert (await refused_with(d.ocpp_url, "CP01", None))[0] == 401
    status, headers = await refused_with(d.ocpp_url, "CP01", "not-the-password")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert (await refused_with(d.ocpp_url, "CP01", PASSWORD, user="CP02"))[0] == 401  # user name must be the id
    async with login(d.ocpp_url, "CP01", PASSWORD) as ws:
        assert ws.subprotocol == "ocpp1.6"
        answer = await call(ws, "BootNotification", BOOT_16)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    assert len(log_lines(d, r"refused charger CP01 from 127\.0\.0\.1:\d+: no password given$")) == 1
    assert len(log_lines(d, r"refused charger CP01 from 127\.0\.0\.1:\d+: wrong password$")) == 1
    assert len(log_lines(d, r"refused charger CP01 from 127\.0\.0\.1:\d+: .*user name is not the charger id")) == 1
    assert PASSWORD not in d.log() and "not-the-password" not in d.log()


async def test_after_five_failures_even_the_right_password_gets_429_until_the_lockout_ends(make_daemon):
    d = make_daemon(password=PASSWORD, ocpp="login_lockout_s = 2\n")
    d.start()
    for i in range(5):
        assert (await refused_with(d.ocpp_url, "CP01", f"guess-{i}"))[0] == 401
    locked_at = time.monotonic()
    status, headers = await refused_with(d.ocpp_url, "CP01", "guess-5")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 2
    assert (await refused_with(d.ocpp_url, "CP01", PASSWORD))[0] == 429
    # Another charger from the same host is not locked out by CP01's failures.
    async with login(d.ocpp_url, "CP02", PASSWORD) as ws:
        assert ws.subprotocol == "ocpp1.6"
    await asyncio.sleep(max(0.0, locked_at + 2.2 - time.monotonic()))
    async with login(d.ocpp_url, "CP01", PASSWORD) as ws:
        assert (await call(ws, "Heartbeat", {}))[0] == 3
    assert len(log_lines(d, r"charger CP01 from 127\.0\.0\.1: 5 failed logins within 2 s; refusing it for 2 s")) == 1
    # Two refusals, one line: a flood of refusals is logged at most once a minute per charger and host.
    assert len(log_lines(d, r"refused charger CP01 from 127\.0\.0\.1:\d+ with 429 .*5 failed logins")) == 1


async def test_twenty_failures_from_one_host_lock_out_every_charger_id_from_it(make_daemon):
    d = make_daemon(password=PASSWORD, chargers=5, connectors=1, ocpp="login_lockout_s = 30\n")
    d.start()
    for n in range(1, 6):
        for i in range(4):  # one short of each charger's own lockout
            assert (await refused_with(d.ocpp_url, f"CP{n:02d}", f"guess-{i}"))[0] == 401
    for charger_id, password in (("CP05", PASSWORD), ("CP01", PASSWORD), ("CP99", None)):
        status, headers = await refused_with(d.ocpp_url, charger_id, password)
        assert status == 429 and 25 <= int(headers["Retry-After"]) <= 30
    assert len(log_lines(d, r"host 127\.0\.0\.1: 20 failed logins or unknown charger ids within 30 s; refusing every charger id from it")) == 1
    # The lockout is the host's: the same charger from another address of this machine gets in.
    async with login(d.ocpp_url, "CP01", PASSWORD, local_addr=("127.0.0.2", 0)) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_chargers_that_logged_in_before_get_in_behind_a_locked_out_host(make_daemon):
    # One LTE router for the square: every charger has its address. Four are misconfigured.
    d = make_daemon(password=PASSWORD, chargers=7, connectors=1, ocpp="login_lockout_s = 30\n")
    d.start()
    for charger_id in ("CP05", "CP06"):
        async with login(d.ocpp_url, charger_id, PASSWORD):
            pass
    for n in range(1, 5):
        for i in range(5):
            assert (await refused_with(d.ocpp_url, f"CP{n:02d}", f"old-password-{i}"))[0] == 401
    assert log_lines(d, r"host 127\.0\.0\.1: 20 failed logins or unknown charger ids within 30 s; refusing every charger id from it "
                        r"but those that logged in from it in the last 24 h")
    for charger_id in ("CP05", "CP06"):  # known good: still let in
        async with login(d.ocpp_url, charger_id, PASSWORD) as ws:
            assert (await call(ws, "Heartbeat", {}))[0] == 3
    # Never logged in from here (CP07, an unknown id) or locked out by its own failures (CP01): refused.
    for charger_id, password in (("CP07", PASSWORD), ("CP99", PASSWORD), ("CP01", PASSWORD)):
        assert (await refused_with(d.ocpp_url, charger_id, password))[0] == 429


async def test_a_password_set_through_the_api_replaces_the_configs_and_is_stored_only_hashed(make_daemon):
    d = make_daemon(password=PASSWORD)
    d.start()
    assert (await d.aapi("PUT", "/api/chargers/CP99/password", {"password": NEW_PASSWORD}))[0] == 404
    for body in ({"password": ""}, {"password": "x" * 65}, {"password": 12345678}, {}):
        assert (await d.aapi("PUT", "/api/chargers/CP01/password", body))[0] == 400
    async with login(d.ocpp_url, "CP01", PASSWORD) as connected:
        status, answer = await d.aapi("PUT", "/api/chargers/CP01/password", {"password": NEW_PASSWORD})
        assert status == 200 and answer["ok"] is True
        # The charger already connected keeps its connection; the new password counts from its next connect.
        assert (await call(connected, "Heartbeat", {}))[0] == 3
    assert (await refused_with(d.ocpp_url, "CP01", PASSWORD))[0] == 401
    async with login(d.ocpp_url, "CP01", NEW_PASSWORD) as ws:
        assert (await call(ws, "Heartbeat", {}))[0] == 3
    # CP02 still has the config's password.
    async with login(d.ocpp_url, "CP02", PASSWORD):
        pass
    assert d.stop() == 0
    d.start()  # the stored hash outlives a restart and still beats the config's password
    assert (await refused_with(d.ocpp_url, "CP01", PASSWORD))[0] == 401
    async with login(d.ocpp_url, "CP01", NEW_PASSWORD):
        pass
    assert d.stop() == 0
    stored = b"".join(p.read_bytes() for p in (d.folder / "state").iterdir() if p.is_file())
    assert b"scrypt$" in stored
    for secret in (PASSWORD, NEW_PASSWORD):
        assert secret.encode() not in stored
        assert secret not in d.log()
    assert log_lines(d, r"charger CP01: new Basic Auth password set")


# ---- security profile 2: TLS -----------------------------------------------------------------------


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files in `folder`."""
    return self_signed(folder / "ocpp-cert.pem", folder / "ocpp-key.pem")


TLS_KEYS = 'tls_cert_file = "tls/ocpp-cert.pem"\ntls_key_file = "tls/ocpp-key.pem"\n'  # relative to the config


async def test_wss_with_the_gateways_certificate_serves_both_subprotocols_and_plain_ws_fails(make_daemon):
    d = make_daemon(password=PASSWORD, ocpp=TLS_KEYS)
    cert_path, _ = make_certificate(d.folder / "tls")
    d.start()
    url = f"wss://127.0.0.1:{d.ocpp_port}/ocpp"
    trusting = ssl.create_default_context(cafile=str(cert_path))
    tls12 = ssl.create_default_context(cafile=str(cert_path))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # many chargers speak no more than TLS 1.2
    async with login(url, "CP01", PASSWORD, ssl=tls12) as ws:
        assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.2"
        answer = await call(ws, "BootNotification", BOOT_16)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    async with login(url, "CP01", PASSWORD, ssl=trusting, subprotocols=["ocpp2.0.1", "ocpp1.6"]) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
    async with login(url, "CP02", PASSWORD, ssl=trusting, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:
        assert ws.subprotocol == "ocpp1.6"
    # Profile 2 is still Basic Auth: TLS alone does not let a charger in.
    assert (await refused_with(url, "CP01", "wrong", ssl=trusting))[0] == 401
    # A client that does not trust the gateway's certificate refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        async with login(url, "CP01", PASSWORD, ssl=ssl.create_default_context()):
            pass
    # Plain ws:// to the TLS port gets no HTTP answer at all.
    with pytest.raises((InvalidMessage, ConnectionError, EOFError, TimeoutError)):
        async with login(f"ws://127.0.0.1:{d.ocpp_port}/ocpp", "CP01", PASSWORD):
            pass
    assert log_lines(d, rf"listening on wss://127\.0\.0\.1:{d.ocpp_port}/ocpp/")


async def test_a_missing_certificate_stops_the_daemon_and_check_names_the_file(make_daemon, capsys):
    d = make_daemon(ocpp=TLS_KEYS)
    missing = d.folder / "tls" / "ocpp-cert.pem"
    with pytest.raises(RuntimeError, match="exited with 2"):
        d.start(timeout_s=20)
    assert log_lines(d, re.escape(f"ocpp.tls_cert_file: {missing}: no such file"))
    assert check_main(str(d.config_path)) == 2
    out = capsys.readouterr().out
    assert re.search(rf"square.toml:\d+: ocpp.tls_cert_file: {re.escape(str(missing))}: no such file", out), out


def test_check_refuses_a_key_that_is_not_the_certificates_and_a_file_that_is_no_certificate(tmp_path, capsys):
    cert_path, key_path = make_certificate(tmp_path / "a")
    _, other_key = make_certificate(tmp_path / "b")
    config = tmp_path / "square.toml"
    text = square_toml(ocpp_port=9000, api_port=8080, mqtt_port=1883, chargers=1, connectors=1)

    def check(cert: Path, key: Path) -> tuple[int, str]:
        tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        config.write_text(text.replace("call_timeout_s = 5\n", "call_timeout_s = 5\n" + tls))
        return check_main(str(config)), capsys.readouterr().out

    code, out = check(cert_path, other_key)
    assert code == 2 and f"ocpp.tls_key_file: {other_key}: not the key of the certificate in {cert_path}" in out, out
    code, out = check(other_key, other_key)
    assert code == 2 and re.search(r"square.toml:\d+: ocpp.tls_cert_file: .*not a PEM certificate", out), out
    code, out = check(cert_path, cert_path)
    assert code == 2 and re.search(r"square.toml:\d+: ocpp.tls_key_file: .*not a PEM private key", out), out
    locked = tmp_path / "a" / "locked-key.pem"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"geheim")))
    code, out = check(cert_path, locked)
    assert code == 2 and f"ocpp.tls_key_file: {locked}: the key is encrypted" in out, out
    code, out = check(cert_path, key_path)
    assert code == 0 and "wss://" in out, out


# ---- password checks off the event loop (the OCPP endpoint alone, in this process) ---------------------


class PasswordSquare:
    """Just enough of a square for handshakes: chargers with real scrypt hashes, and who checked them where."""

    def __init__(self, passwords: ChargerPasswords) -> None:
        self.passwords = passwords
        self.check_threads: set[int] = set()
        self.running = self.most_running = 0
        self._lock = threading.Lock()

    def charger_known(self, charger_id: str) -> bool:
        return self.passwords.required(charger_id)

    def charger_password_known(self, charger_id: str, password: str | None) -> bool | None:
        return self.passwords.known(charger_id, password)

    def charger_password_ok(self, charger_id: str, password: str | None) -> bool:
        with self._lock:
            self.check_threads.add(threading.get_ident())
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return self.passwords.check(charger_id, password)
        finally:
            with self._lock:
                self.running -= 1

    def charger_lenient(self, charger_id: str) -> bool:
        return False

    def connector_count(self, charger_id: str) -> int:
        return 1

    def record(self, event: Event) -> None:
        pass


@asynccontextmanager
async def endpoint(backend: PasswordSquare) -> AsyncIterator[str]:
    """A running OCPP endpoint (port 0); its URL. No lockouts: the flood must reach the password checks."""
    guard = LoginGuard(max_charger_failures=10**6, max_host_failures=10**6)
    server = OcppServer("127.0.0.1", 0, "/ocpp", backend, login_guard=guard)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as tasks:
        ready = asyncio.Event()
        running = tasks.create_task(server.run(ready), name="server")
        async with asyncio.timeout(5):
            await ready.wait()
        try:
            yield f"ws://127.0.0.1:{server.port}/ocpp"
        finally:
            running.cancel()


async def ticking(gaps: list[float], stop: asyncio.Event) -> None:
    """Sleep 10 ms again and again, noting how long each sleep really took: the event loop's stalls."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        gaps.append(time.perf_counter() - started)


async def test_a_flood_of_wrong_passwords_does_not_stall_the_event_loop(caplog):
    # Costlier than the default (~4x): the difference between a stalled loop and a free one is plain.
    slow = {"n": 2**15, "r": 16, "p": 1}
    passwords = ChargerPasswords()
    passwords.set_hash("CP01", hash_password(PASSWORD, **slow), known_password=PASSWORD)  # logged in before
    passwords.set_hash("CP02", hash_password(NEW_PASSWORD, **slow))  # not yet: its check costs a scrypt
    started = time.perf_counter()
    assert not passwords.check("CP02", "one-scrypt")
    scrypt_s = time.perf_counter() - started
    backend = PasswordSquare(passwords)
    flood = 3 * MAX_PASSWORD_CHECKS_PENDING
    loop_thread = threading.get_ident()
    with caplog.at_level(logging.WARNING, logger="laadplein.ocpp"):
        async with endpoint(backend) as url:
            gaps: list[float] = []
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                ticker = tasks.create_task(ticking(gaps, stop))
                attempts = [
                    tasks.create_task(refused_with(url, "CP01" if i % 2 else "CP02", f"guess-{i}")) for i in range(flood)
                ]
                await asyncio.sleep(scrypt_s / 2)  # the checks are busy
                # A charger that logged in before gets in at once, though every check thread is taken.
                async with asyncio.timeout(scrypt_s), login(url, "CP01", PASSWORD) as ws:
                    assert ws.subprotocol == "ocpp1.6"
                statuses = [status for status, _ in await asyncio.gather(*attempts)]
                stop.set()
                await ticker
            # After the flood a charger seen for the first time is checked (a scrypt) and let in.
            async with login(url, "CP02", NEW_PASSWORD) as ws:
                assert ws.subprotocol == "ocpp1.6"
    # A synchronous check would hold the loop for a whole scrypt once per wrong password it admits (10 or more
    # here). A busy machine may stall the loop once for other reasons, so one long gap is forgiven, not two.
    stalls = [gap for gap in gaps if gap >= 0.8 * scrypt_s]
    assert len(gaps) > 10 and len(stalls) <= 1, (stalls, scrypt_s)
    assert loop_thread not in backend.check_threads
    assert backend.most_running <= PASSWORD_CHECK_THREADS
    # What cannot wait is refused with 429, not queued; each one admitted got its answer.
    assert set(statuses) == {401, 429} and statuses.count(401) >= MAX_PASSWORD_CHECKS_PENDING
    busy = [r.getMessage() for r in caplog.records if "password checks already running or waiting" in r.getMessage()]
    assert len(busy) == 1 and "guess" not in busy[0]
