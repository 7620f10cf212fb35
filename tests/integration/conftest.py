"""Integration fixtures: a real mosquitto per test, and daemons made on it."""

import pytest

from tests.integration.harness import Daemon, square_toml
from tests.integration.mosquitto import mosquitto  # noqa: F401
from tests.integration.ports import free_port


@pytest.fixture
def make_daemon(tmp_path, mosquitto):  # noqa: F811
    """A maker of daemons on the test's broker (square_toml keywords; `token` writes a token file); stopped at the end."""
    made: list[Daemon] = []

    def make(**kw) -> Daemon:
        ocpp_port, api_port = free_port(), free_port()
        token = kw.pop("token", None)
        if token:
            (tmp_path / "api-token").write_text(token + "\n")
            (tmp_path / "api-token").chmod(0o600)
            kw["token_file"] = str(tmp_path / "api-token")
        text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, **kw)
        d = Daemon(tmp_path / f"d{len(made)}", text, api_port=api_port, ocpp_port=ocpp_port, token=token)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
