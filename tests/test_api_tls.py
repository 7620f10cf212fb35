"""The admin API over TLS: served with the config's certificate, and the CLI's client trusting exactly
that certificate (found through the config), whatever name it reaches the daemon by."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
from pathlib import Path

import pytest

from config.loader import load_config
from controller.api.listener import TlsSetupError, tls_context
from controller.api.server import AdminApi
from controller.api.token import load_or_create_token
from controller.cli.client import ApiClient, ClientError
from controller.shell.cycle import Cycle
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from tests.certs import self_signed
from tests.test_api_guard import T0, FakeOcpp, Publisher

CONFIG = """
[site]
id = "tlstest"
[grid]
limit_a = 80
[api]
host = "127.0.0.1"
port = {port}
max_connections = 4
cert_file = "api-cert.pem"
key_file = "api-key.pem"
[storage]
path = "state/laadplein.db"
[[chargers]]
id = "CP01"
max_current_a = 32
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
"""


def leaf_certificate(folder: Path) -> None:
    """A self-signed leaf (not a CA) naming only gateway.example, so that no hostname check can pass."""
    self_signed(folder / "api-cert.pem", folder / "api-key.pem", names=("gateway.example",), ca=False)


@pytest.fixture
async def tls_square(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    leaf_certificate(tmp_path)
    (tmp_path / "square.toml").write_text(CONFIG.format(port=port))
    cfg = load_config(tmp_path / "square.toml")
    token = load_or_create_token(cfg.api_token_file)
    async with await Store.open(cfg.storage.path, TagVault(bytes(range(32)))) as store:
        state = SquareState(cfg, store, clock=lambda: T0)
        api = AdminApi(state, Cycle(state, Publisher()), FakeOcpp(), token=token,
                       tls=tls_context(cfg.api.cert_file, cfg.api.key_file))
        ready = asyncio.Event()
        task = asyncio.create_task(api.run("127.0.0.1", port, ready))
        await asyncio.wait_for(ready.wait(), timeout=5)
        try:
            yield tmp_path / "square.toml", port, token
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_the_cli_finds_the_https_api_through_the_config_and_trusts_its_certificate(tls_square):
    config, port, _ = tls_square
    client = ApiClient.from_args(api=None, token_file=None, config=config)
    assert client.base_url == f"https://127.0.0.1:{port}"
    health = await asyncio.to_thread(client.get, "/api/health")
    assert health["chargers"] == 1  # the token went along: the whole answer


async def test_a_client_that_does_not_pin_the_certificate_refuses_it(tls_square):
    _, port, token = tls_square
    client = ApiClient(f"https://127.0.0.1:{port}", token, timeout_s=5)
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(client.get, "/api/health")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


async def test_plain_http_gets_no_answer_from_the_tls_port(tls_square):
    _, port, token = tls_square
    client = ApiClient(f"http://127.0.0.1:{port}", token, timeout_s=5)
    with pytest.raises(ClientError):
        await asyncio.to_thread(client.get, "/api/health")


def test_a_key_that_does_not_fit_the_certificate_names_the_files(tmp_path):
    leaf_certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    leaf_certificate(other)
    with pytest.raises(TlsSetupError, match="api.cert_file"):
        tls_context(tmp_path / "api-cert.pem", other / "api-key.pem")
    assert isinstance(tls_context(tmp_path / "api-cert.pem", tmp_path / "api-key.pem"), ssl.SSLContext)


def test_the_cli_trusts_the_daemons_certificate_not_the_issuer_chained_after_it(tmp_path):
    """A full-chain file names its issuer: trusting that would let any certificate it signed stand in."""
    from controller.cli.client import pinned_context

    own, _ = self_signed(tmp_path / "own.pem", tmp_path / "own-key.pem", names=("gateway.example",), ca=False)
    issuer, _ = self_signed(tmp_path / "issuer.pem", tmp_path / "issuer-key.pem", names=("issuer.example",))
    chain = tmp_path / "fullchain.pem"
    chain.write_bytes(own.read_bytes() + issuer.read_bytes())
    # One certificate, the daemon's leaf; not the issuer (a CA) and none of the system's CAs.
    assert pinned_context(chain).cert_store_stats() == {"x509": 1, "crl": 0, "x509_ca": 0}


async def test_failed_tls_handshakes_give_their_connection_slots_back(tls_square):
    """A handshake that fails never reaches the HTTP protocol's connection_lost: its slot must still
    come back within a second, not whenever the garbage collector runs (here: never, it is off)."""
    config, port, _ = tls_square
    gc.disable()
    try:
        for _ in range(12):  # three times api.max_connections (4)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # plain text: no TLS
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # dropped, no answer
            writer.close()
        await asyncio.sleep(1.1)  # the listener looks for freed slots at most once a second
        client = ApiClient.from_args(api=None, token_file=None, config=config)
        health = await asyncio.to_thread(client.get, "/api/health")
        assert health["chargers"] == 1
    finally:
        gc.enable()


def test_an_encrypted_key_is_refused_without_asking_for_its_password(tmp_path):
    """A daemon must never wait on the terminal for a passphrase: an encrypted key is an error naming it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_file = self_signed(tmp_path / "api-cert.pem", tmp_path / "api-key.pem", key=key)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TlsSetupError) as refused:
        tls_context(cert, key_file)
    assert "needs a password" in str(refused.value) and "api-key.pem" in str(refused.value)
