"""Fixtures of the OCA test cases: one broker for the package, and the secured squares (Basic Auth over
ws://, and over wss:// with a certificate made for the test) that the 1.6 and 2.0.1 security cases share."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import self_signed
from tests.integration.harness import Daemon
from tests.integration.mosquitto import Mosquitto
from tests.integration.oca.stations import PASSWORD, running_square

SECURE_CHARGERS = 8  # CP01-CP04 for the 1.6 cases, CP05-CP08 for the 2.0.1 cases


@pytest.fixture(scope="package")
def oca_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path_factory.mktemp("oca-mosquitto"))
    with broker:
        yield broker


@pytest.fixture(scope="package")
def secure_square(tmp_path_factory: pytest.TempPathFactory, oca_broker: Mosquitto) -> Iterator[Daemon]:
    """Security profile 1: every charger has a password, chargers connect over ws://."""
    with running_square(tmp_path_factory.mktemp("oca-profile1"), oca_broker.port, chargers=SECURE_CHARGERS,
                        connectors=1, password=PASSWORD) as daemon:
        yield daemon


@pytest.fixture(scope="package")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its unencrypted key (PEM files)."""
    folder = tmp_path_factory.mktemp("oca-tls")
    return self_signed(folder / "gateway.crt", folder / "gateway.key", names=("127.0.0.1",))


@pytest.fixture(scope="package")
def tls_client(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A station's TLS context: it trusts only the gateway's certificate and checks the address dialled."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="package")
def tls_square(tmp_path_factory: pytest.TempPathFactory, oca_broker: Mosquitto, certificate: tuple[Path, Path]) -> Iterator[Daemon]:
    """Security profile 2: passwords as in profile 1, over wss:// with the gateway's certificate."""
    cert_file, key_file = certificate
    tls = f'tls_cert_file = "{cert_file}"\ntls_key_file = "{key_file}"\n'
    with running_square(tmp_path_factory.mktemp("oca-profile2"), oca_broker.port, chargers=SECURE_CHARGERS,
                        connectors=1, password=PASSWORD, ocpp=tls) as daemon:
        yield daemon
