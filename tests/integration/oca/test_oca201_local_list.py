"""OCA test cases for a CSMS, OCPP 2.0.1 blocks C (authorization) and D (local authorization list)
with `ocpp.auth = "local_list"`: tags are put through PUT /api/tokens; the gateway answers Authorize
from its list and keeps every station's list in step by itself (GetLocalListVersion, SendLocalList)."""

from __future__ import annotations

import uuid

import pytest
from ocpp import v201

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    boot201,
    connect,
    put_token,
    sessions,
    square_fixture,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v201.call
TOKENS = [("OCA-ACCEPTED-201", "Accepted"), ("OCA-BLOCKED-201", "Blocked"), ("OCA-EXPIRED-201", "Expired")]


def _tokens(daemon: Daemon) -> None:
    for tag, status in TOKENS:
        put_token(daemon, tag, status)


square = square_fixture("oca201-list", setup=_tokens, chargers=8, connectors=1, auth="local_list")


def token(tag: str) -> dict[str, str]:
    return {"id_token": tag, "type": "ISO14443"}


async def authorize(cs, tag: str) -> str:
    return (await cs.ask(call.Authorize(id_token=token(tag)))).id_token_info["status"]


async def test_TC_C_02_CSMS_local_start_transaction_authorization_invalid_unknown(square: Daemon) -> None:
    """TC_C_02_CSMS "Local start transaction - Authorization Invalid/Unknown": an idToken not on the list is Invalid."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs, evses=1)
        assert await authorize(cs, "OCA-UNKNOWN-201") == "Invalid"
        assert await authorize(cs, "OCA-ACCEPTED-201") == "Accepted"


async def test_TC_C_06_CSMS_local_start_transaction_authorization_blocked(square: Daemon) -> None:
    """TC_C_06_CSMS "Local start transaction - Authorization Blocked": a Blocked idToken is Blocked."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs, evses=1)
        assert await authorize(cs, "OCA-BLOCKED-201") == "Blocked"


async def test_TC_C_07_CSMS_local_start_transaction_authorization_expired(square: Daemon) -> None:
    """TC_C_07_CSMS "Local start transaction - Authorization Expired": an Expired idToken, and an
    Accepted one past its expiry, are Expired."""
    put_token(square, "OCA-PASTDUE-201", "Accepted", expiry=wire_time(-60))
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs, evses=1)
        assert await authorize(cs, "OCA-EXPIRED-201") == "Expired"
        assert await authorize(cs, "OCA-PASTDUE-201") == "Expired"


async def cached_authorization(cs, tag: str) -> str:
    """Reusable state EVConnectedPreSession, then the idToken from the station's cache (no Authorize)."""
    tx_id = str(uuid.uuid4())
    for seq, (kind, trigger, extra) in enumerate((("Started", "CablePluggedIn", {}), ("Updated", "Authorized", {"id_token": token(tag)}))):
        answer = await cs.ask(call.TransactionEvent(
            event_type=kind, timestamp=wire_time(), trigger_reason=trigger, seq_no=seq,
            transaction_info={"transaction_id": tx_id, "charging_state": "EVConnected"}, evse={"id": 1, "connector_id": 1}, **extra))
    return answer.id_token_info["status"]


async def test_TC_C_08_CSMS_authorization_through_authorization_cache_accepted(square: Daemon) -> None:
    """TC_C_08_CSMS "Authorization through authorization cache - Accepted": an idToken the station
    took from its cache (TransactionEvent Authorized, no AuthorizeRequest) is checked: Accepted."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs, evses=1)
        assert await cached_authorization(cs, "OCA-ACCEPTED-201") == "Accepted"


async def test_TC_C_20_CSMS_authorization_through_authorization_cache_invalid(square: Daemon) -> None:
    """TC_C_20_CSMS "Authorization through authorization cache - Invalid": a cached idToken the list
    does not hold is answered Invalid."""
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs, evses=1)
        assert await cached_authorization(cs, "OCA-CACHED-201") == "Invalid"


async def test_TC_E_16_CSMS_stop_transaction_options_deauthorized_invalid_idtoken(square: Daemon) -> None:
    """TC_E_16_CSMS "Stop transaction options - Deauthorized - Invalid idToken".

    A transaction started with the cable (no idToken) is then authorized with an unknown idToken:
    the gateway answers Invalid; the station ends it (Deauthorized, stoppedReason DeAuthorized) and
    the session closes with that reason.
    """
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs, evses=1)
        tx_id = str(uuid.uuid4())

        def event(kind: str, seq: int, trigger: str, state: str, **extra):
            return call.TransactionEvent(event_type=kind, timestamp=wire_time(), trigger_reason=trigger, seq_no=seq,
                                         transaction_info={"transaction_id": tx_id, "charging_state": state, **extra.pop("info", {})},
                                         evse={"id": 1, "connector_id": 1}, **extra)

        assert (await cs.ask(event("Started", 0, "CablePluggedIn", "EVConnected"))).id_token_info is None
        answer = await cs.ask(event("Updated", 1, "Authorized", "EVConnected", id_token=token("OCA-STRANGER-201")))
        assert answer.id_token_info == {"status": "Invalid"}
        await cs.ask(event("Ended", 2, "Deauthorized", "EVConnected", info={"stopped_reason": "DeAuthorized"}))
    (session,) = [s for s in sessions(square, "CP02") if s["id"] == tx_id]
    assert session["stop_reason"] == "DeAuthorized" and session["stopped"] is not None


async def test_TC_D_09_CSMS_get_local_list_version_no_list_available(square: Daemon) -> None:
    """TC_D_09_CSMS "Get Local List Version - No list available".

    On connect the gateway switches the list on (LocalAuthListCtrlr.Enabled), reads ItemsPerMessage
    and sends GetLocalListVersion (empty payload); the station's 0 (no list) brings it a Full list.
    """
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs, evses=1)
        enable = await cs.expect("SetVariables", lambda p: p["setVariableData"][0]["component"]["name"] == "LocalAuthListCtrlr")
        assert enable == {"setVariableData": [{"attributeValue": "true", "component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Enabled"}}]}
        assert await cs.expect("GetVariables", lambda p: p["getVariableData"][0]["component"]["name"] == "LocalAuthListCtrlr")
        assert await cs.expect("GetLocalListVersion") == {}
        assert (await cs.expect("SendLocalList"))["updateType"] == "Full"


async def test_TC_D_01_CSMS_send_local_authorization_list_full(square: Daemon) -> None:
    """TC_D_01_CSMS "Send Local Authorization List - Full".

    updateType Full, versionNumber > 0, a non-empty list, each idToken unique and with idTokenInfo.
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs, evses=1)
        full = await cs.expect("SendLocalList")
        assert full["updateType"] == "Full" and full["versionNumber"] > 0
        entries = full["localAuthorizationList"]
        tags = [e["idToken"]["idToken"] for e in entries]
        assert len(tags) == len(set(tags)) and {tag for tag, _ in TOKENS} <= set(tags)
        assert all(e["idToken"]["type"] == "ISO14443" and e["idTokenInfo"]["status"] for e in entries)
        assert {e["idToken"]["idToken"]: e["idTokenInfo"]["status"] for e in entries if e["idToken"]["idToken"] in dict(TOKENS)} == dict(TOKENS)
        assert cs.list_version == full["versionNumber"]


async def test_TC_D_08_CSMS_get_local_list_version_success(square: Daemon) -> None:
    """TC_D_08_CSMS "Get Local List Version - Success".

    A station that reports the version the gateway holds is in step: no SendLocalList follows.
    """
    async with connect(square, "CP05", "2.0.1") as cs:
        await boot201(cs, evses=1)
        version = (await cs.expect("SendLocalList"))["versionNumber"]
    async with connect(square, "CP05", "2.0.1") as cs:
        cs.list_version = version
        await boot201(cs, evses=1)
        await cs.expect("GetLocalListVersion")
        await cs.absent("SendLocalList", for_s=1.5)


async def test_TC_D_02_CSMS_send_local_authorization_list_differential_update(square: Daemon) -> None:
    """TC_D_02_CSMS "Send Local Authorization List - Differential Update".

    A tag added through the API goes to the station in step as a Differential with only that idToken
    (with its idTokenInfo) and a versionNumber above the one it holds.
    """
    async with connect(square, "CP06", "2.0.1") as cs:
        await boot201(cs, evses=1)
        held = (await cs.expect("SendLocalList"))["versionNumber"]
        mark = cs.mark()
        put_token(square, "OCA-ADDED-201", "Accepted", group="OCA-GROUP")
        update = await cs.expect("SendLocalList", after=mark)
        assert update["updateType"] == "Differential" and update["versionNumber"] > held
        assert update["localAuthorizationList"] == [{
            "idToken": {"idToken": "OCA-ADDED-201", "type": "ISO14443"},
            "idTokenInfo": {"status": "Accepted", "groupIdToken": {"idToken": "OCA-GROUP", "type": "Central"}},
        }]


async def test_TC_D_03_CSMS_send_local_authorization_list_differential_remove(square: Daemon) -> None:
    """TC_D_03_CSMS "Send Local Authorization List - Differential Remove".

    A tag deleted through the API goes out as a Differential entry without idTokenInfo (removal).
    """
    put_token(square, "OCA-REMOVED-201", "Accepted")
    async with connect(square, "CP07", "2.0.1") as cs:
        await boot201(cs, evses=1)
        held = (await cs.expect("SendLocalList"))["versionNumber"]
        mark = cs.mark()
        assert (await square.aapi("DELETE", "/api/tokens", {"tag": "OCA-REMOVED-201"}))[0] == 200
        removal = await cs.expect("SendLocalList", after=mark)
        assert removal["updateType"] == "Differential" and removal["versionNumber"] > held
        assert removal["localAuthorizationList"] == [{"idToken": {"idToken": "OCA-REMOVED-201", "type": "ISO14443"}}]
        assert await authorize(cs, "OCA-REMOVED-201") == "Invalid"


async def test_TC_D_04_CSMS_send_local_authorization_list_full_with_empty_list(square: Daemon) -> None:
    """TC_D_04_CSMS "Send Local Authorization List - Full with empty list".

    Once every tag is deleted, a station holding a version the gateway cannot bring in step by
    changes (one it never gave out) gets a Full update without localAuthorizationList: its list is
    emptied.
    """
    for tag in [t for t, _ in TOKENS] + ["OCA-PASTDUE-201", "OCA-ADDED-201"]:
        await square.aapi("DELETE", "/api/tokens", {"tag": tag})
    assert (await square.aapi("GET", "/api/tokens"))[1] == []
    async with connect(square, "CP08", "2.0.1") as cs:
        cs.list_version = 9999
        await boot201(cs, evses=1)
        empty = await cs.expect("SendLocalList")
        assert empty["updateType"] == "Full" and empty["versionNumber"] > 0 and "localAuthorizationList" not in empty
        assert cs.list_version == empty["versionNumber"]
