"""OCA test cases for a CSMS, OCPP 2.0.1 block A (security profiles 1 and 2) and the WebSocket
subprotocol case of block B."""

from __future__ import annotations

import ssl

import pytest
from ocpp import v201
from websockets.exceptions import InvalidMessage, InvalidStatus

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    PASSWORD,
    boot201,
    call_api,
    charger,
    connect,
    parse_ts_or_none,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration


async def refused(daemon: Daemon, charger_id: str, **kw) -> int:
    """The HTTP status with which the gateway refuses a station's upgrade request."""
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(daemon, charger_id, "2.0.1", **kw):
            pass
    return refusal.value.response.status_code


async def test_TC_A_01_CSMS_basic_auth_valid_username_password(secure_square: Daemon) -> None:
    """TC_A_01_CSMS "Basic Authentication - Valid username/password combination".

    With "Authorization: Basic <charging station id>:<password>" the gateway upgrades the connection,
    answers the BootNotification Accepted and takes the connectors' status.
    """
    async with connect(secure_square, "CP05", "2.0.1", password=PASSWORD) as cs:
        boot = await boot201(cs, evses=1)
        assert boot.status == "Accepted" and boot.interval == 60 and boot.current_time.endswith("Z")
        await until(lambda: charger(secure_square, "CP05")["connectors"][0]["status"] == "Available", "CP05 Available")
        assert charger(secure_square, "CP05")["ocpp"] == "ocpp2.0.1"


async def test_TC_A_02_CSMS_basic_auth_username_not_charging_station_id(secure_square: Daemon) -> None:
    """TC_A_02_CSMS "Basic Authentication - Username does not equal ChargingStationId".

    The right password under another user name is refused (HTTP 401), the connection not upgraded.
    """
    assert await refused(secure_square, "CP06", password=PASSWORD, user="CP06Invalid") == 401
    assert not charger(secure_square, "CP06")["online"]


async def test_TC_A_03_CSMS_basic_auth_invalid_password(secure_square: Daemon) -> None:
    """TC_A_03_CSMS "Basic Authentication - Invalid password".

    A wrong password, or none, is refused with 401 and a Basic challenge; the right one still works.
    """
    assert await refused(secure_square, "CP07", password=PASSWORD + "x") == 401
    with pytest.raises(InvalidStatus) as no_password:
        async with connect(secure_square, "CP07", "2.0.1"):
            pass
    assert no_password.value.response.status_code == 401
    assert no_password.value.response.headers["WWW-Authenticate"].startswith("Basic ")
    async with connect(secure_square, "CP07", "2.0.1", password=PASSWORD) as cs:
        assert (await boot201(cs, evses=1)).status == "Accepted"


async def test_TC_A_09_CSMS_update_basic_auth_password_accepted(secure_square: Daemon) -> None:
    """TC_A_09_CSMS "Update Charging Station Password for HTTP Basic Authentication - Accepted".

    The operator stores the new password (PUT /api/chargers/<id>/password) and sets it on the station
    (SetVariables SecurityCtrlr.BasicAuthPassword through the call endpoint); from the next upgrade
    request on the gateway takes only the new credentials.
    """
    new_password = "oca-new-password-201"
    async with connect(secure_square, "CP08", "2.0.1", password=PASSWORD) as cs:
        await boot201(cs, evses=1)
        assert (await secure_square.aapi("PUT", "/api/chargers/CP08/password", {"password": new_password}))[0] == 200
        request = {"setVariableData": [{"attributeValue": new_password, "component": {"name": "SecurityCtrlr"},
                                        "variable": {"name": "BasicAuthPassword"}}]}
        code, answer = await call_api(secure_square, "CP08", "SetVariables", request)
        assert code == 200 and answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        assert await cs.expect("SetVariables", lambda p: p == request)
    assert await refused(secure_square, "CP08", password=PASSWORD) == 401
    async with connect(secure_square, "CP08", "2.0.1", password=new_password) as cs:
        assert (await boot201(cs, evses=1)).status == "Accepted"


async def test_TC_B_58_CSMS_websocket_subprotocol_validation(secure_square: Daemon) -> None:
    """TC_B_58_CSMS "WebSocket Subprotocol validation".

    Offered only ocpp0.1 the gateway refuses the upgrade; offered "ocpp0.1, ocpp2.0.1" it selects
    ocpp2.0.1 and answers with "Sec-WebSocket-Protocol: ocpp2.0.1".
    """
    assert await refused(secure_square, "CP06", password=PASSWORD, subprotocols=["ocpp0.1"]) == 400
    async with connect(secure_square, "CP06", "2.0.1", password=PASSWORD, subprotocols=["ocpp0.1", "ocpp2.0.1"]) as cs:
        assert cs._connection.response.headers["Sec-WebSocket-Protocol"] == "ocpp2.0.1"
        assert (await boot201(cs, evses=1)).status == "Accepted"


async def test_TC_A_04_CSMS_tls_server_side_certificate_valid(tls_square: Daemon, tls_client: ssl.SSLContext) -> None:
    """TC_A_04_CSMS "TLS - server-side certificate - Valid certificate" (security profile 2).

    The station verifies the gateway's certificate for the address it dialled over TLS 1.2 or newer,
    then authenticates with Basic Auth and boots; a plain ws:// connection gets no WebSocket.
    """
    async with connect(tls_square, "CP05", "2.0.1", password=PASSWORD, tls=tls_client) as cs:
        assert cs._connection.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        assert (await boot201(cs, evses=1)).status == "Accepted"
        heartbeat = await cs.ask(v201.call.Heartbeat())
        assert abs((parse_ts_or_none(heartbeat.current_time) - parse_ts_or_none(wire_time())).total_seconds()) < 5
    with pytest.raises(InvalidMessage):  # a TLS port answers a plain upgrade request with no HTTP at all
        async with connect(tls_square, "CP05", "2.0.1", password=PASSWORD):
            pass

