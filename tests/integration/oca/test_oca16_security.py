"""OCA test cases for a Central System, OCPP 1.6J security (the security whitepaper's profiles 1 and 2):
Basic Auth, TLS with Basic Auth, the password change and the WebSocket subprotocol."""

from __future__ import annotations

import binascii
import ssl

import pytest
from ocpp import v16
from websockets.exceptions import InvalidStatus

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    PASSWORD,
    boot16,
    call_api,
    charger,
    connect,
    until,
)

pytestmark = pytest.mark.integration


async def test_TC_085_CSMS_basic_auth_valid_username_password(secure_square: Daemon) -> None:
    """TC_085_CSMS "Basic Authentication - Valid username/password combination".

    The gateway validates the Basic Auth credentials (user name = charge point id) of the HTTP upgrade,
    upgrades to a WebSocket and accepts the BootNotification that follows.
    """
    async with connect(secure_square, "CP01", password=PASSWORD) as cp:
        boot = await boot16(cp, connectors=1)
        assert boot.status == "Accepted" and boot.interval == 60 and boot.current_time.endswith("Z")
        await until(lambda: charger(secure_square, "CP01")["online"], "CP01 online")
        assert charger(secure_square, "CP01")["ocpp"] == "ocpp1.6"


async def test_TC_088_CSMS_websocket_subprotocol_negotiation(secure_square: Daemon) -> None:
    """TC_088_CSMS "WebSocket Subprotocol negotiation".

    Offered only an unsupported subprotocol (ocpp0.1), the gateway refuses the upgrade; offered
    "ocpp0.1, ocpp1.6" it selects ocpp1.6 and says so in the Sec-WebSocket-Protocol header.
    """
    with pytest.raises(InvalidStatus) as refused:
        async with connect(secure_square, "CP02", password=PASSWORD, subprotocols=["ocpp0.1"]):
            pass
    assert refused.value.response.status_code == 400
    async with connect(secure_square, "CP02", password=PASSWORD, subprotocols=["ocpp0.1", "ocpp1.6"]) as cp:
        assert cp._connection.subprotocol == "ocpp1.6"
        assert cp._connection.response.headers["Sec-WebSocket-Protocol"] == "ocpp1.6"
        assert (await boot16(cp, connectors=1)).status == "Accepted"


async def test_TC_073_CSMS_update_charge_point_password_for_basic_auth(secure_square: Daemon) -> None:
    """TC_073_CSMS "Update Charge Point Password for HTTP Basic Authentication".

    The operator stores the new password (PUT /api/chargers/<id>/password) and sends it to the charge
    point as AuthorizationKey (hex, 16-20 bytes) through the call endpoint; when the charge point
    reconnects the gateway takes only the new password.
    """
    new_password = "oca-new-password-20c"
    async with connect(secure_square, "CP03", password=PASSWORD) as cp:
        await boot16(cp, connectors=1)
        code, body = await secure_square.aapi("PUT", "/api/chargers/CP03/password", {"password": new_password})
        assert code == 200 and body == {"ok": True, "charger": "CP03"}
        key_hex = binascii.hexlify(new_password.encode()).decode()
        code, answer = await call_api(secure_square, "CP03", "ChangeConfiguration", {"key": "AuthorizationKey", "value": key_hex})
        assert (code, answer) == (200, {"status": "Accepted"})
        sent = await cp.expect("ChangeConfiguration", lambda p: p["key"] == "AuthorizationKey")
        assert sent == {"key": "AuthorizationKey", "value": key_hex} and 32 <= len(key_hex) <= 40
    with pytest.raises(InvalidStatus) as refused:
        async with connect(secure_square, "CP03", password=PASSWORD):
            pass
    assert refused.value.response.status_code == 401
    async with connect(secure_square, "CP03", password=new_password) as cp:
        assert (await boot16(cp, connectors=1)).status == "Accepted"


async def test_TC_086_CSMS_tls_server_side_certificate_valid(tls_square: Daemon, tls_client: ssl.SSLContext) -> None:
    """TC_086_CSMS "TLS - server-side certificate - Valid certificate" (security profile 2).

    The gateway serves wss:// with its certificate (TLS 1.2 or newer), which the charge point
    verifies against the address it dialled; Basic Auth still applies: a wrong password is refused
    with 401, the right one is accepted and the charge point boots.
    """
    with pytest.raises(InvalidStatus) as refused:
        async with connect(tls_square, "CP01", password="not-the-password-16", tls=tls_client):
            pass
    assert refused.value.response.status_code == 401
    async with connect(tls_square, "CP01", password=PASSWORD, tls=tls_client) as cp:
        assert cp._connection.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        boot = await boot16(cp, connectors=1)
        assert boot.status == "Accepted"
        heartbeat = await cp.ask(v16.call.Heartbeat())
        assert heartbeat.current_time.endswith("Z")
