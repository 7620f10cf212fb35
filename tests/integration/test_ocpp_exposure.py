"""The OCPP endpoint reachable from the network, on the real daemon: chargers without a (long enough)
password refused on a non-loopback host unless stated insecure, unknown ids counted towards the host's
lockout, the cipher suites OCPP 2.0.1 asks for with an RSA and an ECDSA certificate side by side, and a
flood of sockets from one address that leaves the API and the chargers served."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controller.cli.check import check_main
from tests.certs import self_signed
from tests.integration.harness import Daemon, square_toml
from tests.integration.ports import free_port
from tests.integration.test_ocpp_security import (
    BOOT_16,
    call,
    log_lines,
    login,
    refused_with,
)

pytestmark = pytest.mark.integration

LONG = "Marktplein-CP-wachtwoord-01"  # 27 characters
SHORT = "kort-wachtwoord"  # 15: one under what OCPP asks for


def make_square(tmp_path: Path, mosquitto, *, host: str, chargers: dict[str, str], ocpp: str = "") -> Daemon:
    """A daemon on `host` whose chargers CP01.. get the extra `[[chargers]]` lines given per id."""
    ocpp_port, api_port = free_port(host if host != "0.0.0.0" else "127.0.0.1"), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=len(chargers),
                       connectors=1, ocpp=ocpp)
    text = text.replace('[ocpp]\nhost = "127.0.0.1"\n', f'[ocpp]\nhost = "{host}"\n')
    for charger_id, lines in chargers.items():
        text = text.replace(f'id = "{charger_id}"\n', f'id = "{charger_id}"\n{lines}')
    return Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)


@pytest.fixture
def square(tmp_path, mosquitto):
    made: list[Daemon] = []

    def make(**kw) -> Daemon:
        d = make_square(tmp_path, mosquitto, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


# ---- a non-loopback host: passwords or insecure = true -----------------------------------------------


async def test_on_a_non_loopback_host_a_charger_without_a_password_is_refused_unless_stated_insecure(square):
    d = square(host="0.0.0.0", chargers={"CP01": "", "CP02": "insecure = true\n", "CP03": f'password = "{LONG}"\n'})
    d.start()
    # The start names the one that will be refused.
    assert log_lines(d, r"ocpp\.host 0\.0\.0\.0 is not loopback, and 1 charger\(s\) have no password: CP01;")
    for _ in range(3):  # it retries; the technician gets one line a minute, not one per try
        status, headers = await refused_with(d.ocpp_url, "CP01", None)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    lines = log_lines(d, r"refused charger CP01 from 127\.0\.0\.1:\d+: it has no password, and ocpp\.host 0\.0\.0\.0 "
                         r"is not loopback")
    assert len(lines) == 1 and "insecure = true" in lines[0] and "PUT /api/chargers/CP01/password" in lines[0], lines
    async with login(d.ocpp_url, "CP02", None) as ws:  # stated insecure
        assert (await call(ws, "BootNotification", BOOT_16))[2]["status"] == "Accepted"
    async with login(d.ocpp_url, "CP03", LONG) as ws:
        assert (await call(ws, "BootNotification", BOOT_16))[2]["status"] == "Accepted"
    # A password set through the API counts: CP01 gets one and is let in with it.
    assert (await d.aapi("PUT", "/api/chargers/CP01/password", {"password": LONG}))[0] == 200
    async with login(d.ocpp_url, "CP01", LONG) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_on_a_non_loopback_host_a_password_under_16_characters_is_refused_unless_insecure(square):
    d = square(host="0.0.0.0", chargers={"CP01": f'password = "{SHORT}"\n',
                                         "CP02": f'password = "{SHORT}"\ninsecure = true\n', "CP03": ""})
    d.start()
    assert (await refused_with(d.ocpp_url, "CP01", SHORT))[0] == 401
    assert log_lines(d, r"refused charger CP01 from .*: its password has 15 characters, fewer than the 16 it needs")
    assert SHORT not in d.log()
    async with login(d.ocpp_url, "CP02", SHORT) as ws:
        assert ws.subprotocol == "ocpp1.6"
    # The API refuses to set a short one for a charger that is not insecure, and takes one for CP02.
    status, body = await d.aapi("PUT", "/api/chargers/CP03/password", {"password": SHORT})
    assert status == 400 and "at least 16 characters" in str(body), body
    assert (await d.aapi("PUT", "/api/chargers/CP02/password", {"password": "ook-kort"}))[0] == 200
    assert (await d.aapi("PUT", "/api/chargers/CP03/password", {"password": LONG}))[0] == 200
    async with login(d.ocpp_url, "CP03", LONG) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_on_loopback_a_charger_without_a_password_and_a_short_one_still_connect(square):
    d = square(host="127.0.0.1", chargers={"CP01": "", "CP02": f'password = "{SHORT}"\n'})
    d.start()
    async with login(d.ocpp_url, "CP01", None) as ws:
        assert ws.subprotocol == "ocpp1.6"
    async with login(d.ocpp_url, "CP02", SHORT) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_unknown_charger_ids_count_towards_the_hosts_lockout(square):
    d = square(host="127.0.0.1", chargers={"CP01": f'password = "{LONG}"\n', "CP02": f'password = "{LONG}"\n'},
               ocpp="login_lockout_s = 30\n")
    d.start()
    async with login(d.ocpp_url, "CP02", LONG):  # known good from this address
        pass
    for n in range(20):
        assert (await refused_with(d.ocpp_url, f"GUESS{n:02d}", None))[0] == 404
    status, headers = await refused_with(d.ocpp_url, "GUESS99", None)
    assert status == 429 and 25 <= int(headers["Retry-After"]) <= 30
    assert (await refused_with(d.ocpp_url, "CP01", LONG))[0] == 429  # never logged in from here
    async with login(d.ocpp_url, "CP02", LONG) as ws:  # known good: still let in
        assert ws.subprotocol == "ocpp1.6"
    assert len(log_lines(d, r"host 127\.0\.0\.1: 20 failed logins or unknown charger ids within 30 s")) == 1


# ---- TLS: the suites of OCPP 2.0.1 part 2 A00.FR.318, an RSA and an ECDSA certificate side by side ---------


def write_certificate(folder: Path, name: str, key) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 with `key` (RSA or EC), and the key, as PEM files."""
    return self_signed(folder / f"{name}-cert.pem", folder / f"{name}-key.pem", key=key)


TWO_PAIRS = (
    'tls_cert_file = "tls/rsa-cert.pem"\ntls_key_file = "tls/rsa-key.pem"\n'
    'tls_ecdsa_cert_file = "tls/ecdsa-cert.pem"\ntls_ecdsa_key_file = "tls/ecdsa-key.pem"\n'
)


def tls12_client(ca_file: Path, ciphers: str) -> ssl.SSLContext:
    """A charger's TLS 1.2 that offers only `ciphers` (OpenSSL names)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


async def test_tls_offers_the_ocpp_suites_with_an_rsa_and_an_ecdsa_certificate(square):
    d = square(host="127.0.0.1", chargers={"CP01": f'password = "{LONG}"\n'}, ocpp=TWO_PAIRS)
    rsa_cert, _ = write_certificate(d.folder / "tls", "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ecdsa_cert, _ = write_certificate(d.folder / "tls", "ecdsa", ec.generate_private_key(ec.SECP256R1()))
    trusted = d.folder / "tls" / "both.pem"
    trusted.write_bytes(rsa_cert.read_bytes() + ecdsa_cert.read_bytes())
    d.start()
    url = f"wss://127.0.0.1:{d.ocpp_port}/ocpp"
    # The four suites A00.FR.318 names, each offered alone by a TLS 1.2 charger, and the certificate it needs.
    for suite, certificate in (
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDSA"),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDSA"),
        ("AES128-GCM-SHA256", "RSA"),
        ("AES256-GCM-SHA384", "RSA"),
    ):
        async with login(url, "CP01", LONG, ssl=tls12_client(trusted, suite)) as ws:
            tls = ws.transport.get_extra_info("ssl_object")
            assert (tls.version(), tls.cipher()[0]) == ("TLSv1.2", suite)
            der = tls.getpeercert(binary_form=True)
            key = x509.load_der_x509_certificate(der).public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey if certificate == "ECDSA" else rsa.RSAPublicKey)
            assert (await call(ws, "BootNotification", BOOT_16))[2]["status"] == "Accepted"
    # A charger that offers only suites outside the list gets no connection.
    for outside in ("ECDHE-RSA-CHACHA20-POLY1305", "AES128-SHA256", "ECDHE-ECDSA-AES128-SHA256"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            async with login(url, "CP01", LONG, ssl=tls12_client(trusted, outside)):
                pass
    # TLS 1.3 keeps OpenSSL's own suites.
    async with login(url, "CP01", LONG, ssl=ssl.create_default_context(cafile=str(trusted))) as ws:
        assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert "Traceback" not in d.log()


def test_a_missing_or_wrong_ecdsa_pair_stops_the_daemon_and_check_names_the_file(square, capsys):
    d = square(host="127.0.0.1", chargers={"CP01": f'password = "{LONG}"\n'}, ocpp=TWO_PAIRS)
    rsa_cert, rsa_key = write_certificate(d.folder / "tls", "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    missing = d.folder / "tls" / "ecdsa-cert.pem"
    with pytest.raises(RuntimeError, match="exited with 2"):
        d.start(timeout_s=20)
    assert log_lines(d, re.escape(f"ocpp.tls_ecdsa_cert_file: {missing}: no such file"))
    assert check_main(str(d.config_path)) == 2
    out = capsys.readouterr().out
    assert re.search(rf"square.toml:\d+: ocpp.tls_ecdsa_cert_file: {re.escape(str(missing))}: no such file", out), out
    # An ECDSA pair whose key is not its certificate's, and an RSA certificate given as the ECDSA one.
    write_certificate(d.folder / "tls", "ecdsa", ec.generate_private_key(ec.SECP256R1()))
    _, other_key = write_certificate(d.folder / "other", "ecdsa", ec.generate_private_key(ec.SECP256R1()))
    (d.folder / "tls" / "ecdsa-key.pem").write_bytes(other_key.read_bytes())
    assert check_main(str(d.config_path)) == 2
    assert re.search(r"square.toml:\d+: ocpp.tls_ecdsa_key_file: .*not the key of the certificate", capsys.readouterr().out)
    (d.folder / "tls" / "ecdsa-cert.pem").write_bytes(rsa_cert.read_bytes())
    (d.folder / "tls" / "ecdsa-key.pem").write_bytes(rsa_key.read_bytes())
    assert check_main(str(d.config_path)) == 2
    assert re.search(r"square.toml:\d+: ocpp.tls_ecdsa_cert_file: .*not an ECDSA certificate", capsys.readouterr().out)


# ---- a flood of sockets from one address --------------------------------------------------------------


async def test_a_flood_of_sockets_from_one_host_leaves_the_api_and_a_charger_served(square):
    d = square(host="127.0.0.1", chargers={"CP01": f'password = "{LONG}"\n', "CP02": f'password = "{LONG}"\n'})
    d.start()
    assert d.proc is not None
    # A small gateway's limit: what the flood below would exhaust without the caps.
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    flood: list[socket.socket] = []
    files = Path(f"/proc/{d.proc.pid}/fd")
    most_files = 0
    try:
        for n in range(600):  # connect and say nothing (each holds a handshake until its timeout), or garbage
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", d.ocpp_port))
            flood.append(sock)
            if n % 20 == 0:
                most_files = max(most_files, len(list(files.iterdir())))
                await asyncio.sleep(0)
        await asyncio.sleep(0.5)
        for sock in flood[:5]:
            with contextlib.suppress(OSError):
                sock.send(b"GARBAGE\r\n\r\n")
        status, body = await d.aapi("GET", "/api/health")
        assert status == 200, body
        # A charger from another address of the square gets in while the flood's sockets are held.
        async with login(d.ocpp_url, "CP01", LONG, local_addr=("127.0.0.2", 0)) as ws:
            assert (await call(ws, "BootNotification", BOOT_16))[2]["status"] == "Accepted"
    finally:
        for sock in flood:
            sock.close()
    # The handshakes the flood began end without one: a line a minute for the address, no traceback each.
    async with asyncio.timeout(10):
        while not log_lines(d, r"a connection from 127\.0\.0\.1 ended without a valid WebSocket handshake"):
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert (await d.aapi("GET", "/api/health"))[0] == 200
    log = d.log()
    assert "Traceback" not in log and "out of system resource" not in log, (most_files, log[-3000:])
    capped = log_lines(d, r"closed a new connection from 127\.0\.0\.1 at once: 18 connections from it are still in "
                          r"their opening handshake \(ocpp\.max_handshakes_per_host\)")
    assert len(capped) == 1, capped
    assert len(log_lines(d, r"ended without a valid WebSocket handshake")) == 1
    assert d.proc.poll() is None
