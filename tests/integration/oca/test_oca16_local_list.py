"""OCA test cases for a Central System, OCPP 1.6J authorization with `ocpp.auth = "local_list"`: the
answers to Authorize for tags of the list (put through PUT /api/tokens) and unknown ones, and the
Local Auth List Management profile, which the gateway drives by itself on connect and on every change."""

from __future__ import annotations

import pytest
from ocpp import v16
from ocpp.exceptions import NotSupportedError

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    boot16,
    call_api,
    charger,
    connect,
    events,
    put_token,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v16.call
TOKENS = [  # tag, status, expiry (offset from now in s), the status the list carries for it
    ("OCA-ACCEPTED-1", "Accepted", None, "Accepted"),
    ("OCA-BLOCKED-1", "Blocked", None, "Blocked"),
    ("OCA-EXPIRED-1", "Expired", None, "Expired"),
    ("OCA-PASTDUE-1", "Accepted", -3600, "Expired"),
    ("OCA-FUTURE-1", "Accepted", 86400, "Accepted"),
]


def _tokens(daemon: Daemon) -> None:
    for tag, status, expiry_s, _ in TOKENS:
        put_token(daemon, tag, status, **({"expiry": wire_time(expiry_s)} if expiry_s is not None else {}))


square = square_fixture("oca16-list", setup=_tokens, chargers=9, connectors=1, auth="local_list")


async def authorize(cp, tag: str) -> str:
    return (await cp.ask(call.Authorize(id_tag=tag))).id_tag_info["status"]


async def test_TC_023_1_CSMS_start_charging_session_authorize_invalid(square: Daemon) -> None:
    """TC_023_1_CSMS "Start Charging Session – Authorize invalid": a tag not on the list is Invalid."""
    async with connect(square, "CP01") as cp:
        await boot16(cp, connectors=1)
        assert await authorize(cp, "OCA-UNKNOWN-1") == "Invalid"
        assert await authorize(cp, "OCA-ACCEPTED-1") == "Accepted"


async def test_TC_023_2_CSMS_start_charging_session_authorize_expired(square: Daemon) -> None:
    """TC_023_2_CSMS "Start Charging Session – Authorize expired".

    A tag set Expired, and an Accepted tag whose expiry has passed, are answered Expired; one that
    expires tomorrow is still Accepted.
    """
    async with connect(square, "CP01") as cp:
        await boot16(cp, connectors=1)
        assert await authorize(cp, "OCA-EXPIRED-1") == "Expired"
        assert await authorize(cp, "OCA-PASTDUE-1") == "Expired"
        assert await authorize(cp, "OCA-FUTURE-1") == "Accepted"


async def test_TC_023_3_CSMS_start_charging_session_authorize_blocked(square: Daemon) -> None:
    """TC_023_3_CSMS "Start Charging Session – Authorize blocked": a Blocked tag is answered Blocked,
    also on StartTransaction (the charge point records the transaction, the gateway says Blocked)."""
    async with connect(square, "CP01") as cp:
        await boot16(cp, connectors=1)
        assert await authorize(cp, "OCA-BLOCKED-1") == "Blocked"
        started = await cp.ask(call.StartTransaction(connector_id=1, id_tag="OCA-BLOCKED-1", meter_start=0, timestamp=wire_time()))
        assert started.id_tag_info == {"status": "Blocked"} and started.transaction_id > 0


async def test_TC_037_3_CSMS_offline_start_transaction_invalid_idtag(square: Daemon) -> None:
    """TC_037_3_CSMS "Offline Start Transaction - Invalid IdTag - StopTransactionOnInvalidId = true".

    A transaction the charge point started offline with a tag the list does not hold: its queued
    StartTransaction is answered Invalid (with a transaction id all the same); the charge point
    stops it (DeAuthorized) and the session closes with that reason.
    """
    async with connect(square, "CP08") as cp:
        await boot16(cp, connectors=1)
    async with connect(square, "CP08") as cp:
        started = await cp.ask(call.StartTransaction(connector_id=1, id_tag="OCA-STRANGER-1", meter_start=100, timestamp=wire_time(-300)))
        assert started.id_tag_info == {"status": "Invalid"} and started.transaction_id > 0
        await cp.ask(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await cp.ask(call.StopTransaction(meter_stop=150, timestamp=wire_time(), transaction_id=started.transaction_id, reason="DeAuthorized"))
        await cp.ask(call.StatusNotification(connector_id=1, error_code="NoError", status="Finishing"))
    code, rows = await square.aapi("GET", "/api/sessions")
    (session,) = [r for r in rows if r["charger"] == "CP08"]
    assert code == 200 and session["stop_reason"] == "DeAuthorized" and session["energy_wh"] == 50


async def test_TC_042_2_CSMS_get_local_list_version_empty(square: Daemon) -> None:
    """TC_042_2_CSMS "Get Local List Version (empty)".

    On connect the gateway switches the charge point's list on (LocalAuthListEnabled), asks how many
    entries one message may carry and asks for the list version (GetLocalListVersion, empty
    payload); the charge point's 0 (empty list) makes the gateway send its list.
    """
    async with connect(square, "CP02") as cp:
        await boot16(cp, connectors=1)
        enable = await cp.expect("ChangeConfiguration", lambda p: p["key"] == "LocalAuthListEnabled")
        assert enable == {"key": "LocalAuthListEnabled", "value": "true"}
        assert await cp.expect("GetConfiguration", lambda p: p == {"key": ["SendLocalListMaxLength"]})
        assert await cp.expect("GetLocalListVersion") == {}
        assert (await cp.expect("SendLocalList"))["updateType"] == "Full"


async def test_TC_043_4_CSMS_send_local_authorization_list_full(square: Daemon) -> None:
    """TC_043_4_CSMS "Send Local Authorization List - Full".

    A charge point that holds another version gets the whole list: updateType Full, the gateway's
    list version, every tag with an idTagInfo (an Accepted tag past its expiry as Expired, one that
    expires later with its expiryDate); after its Accepted the charge point is in step.
    """
    async with connect(square, "CP03") as cp:
        cp.list_version = 0
        await boot16(cp, connectors=1)
        full = await cp.expect("SendLocalList")
        assert full["updateType"] == "Full" and full["listVersion"] >= len(TOKENS)
        entries = {e["idTag"]: e["idTagInfo"] for e in full["localAuthorizationList"]}
        assert {tag: info["status"] for tag, info in entries.items()} == {tag: sent for tag, _, _, sent in TOKENS}
        assert "expiryDate" in entries["OCA-FUTURE-1"] and entries["OCA-FUTURE-1"]["expiryDate"].endswith("Z")
        assert cp.list_version == full["listVersion"]
        await cp.absent("SendLocalList", after=cp.mark(), for_s=1.5)  # in step: nothing more to send


async def test_TC_043_5_CSMS_send_local_authorization_list_differential(square: Daemon) -> None:
    """TC_043_5_CSMS "Send Local Authorization List - Differential".

    With the charge point in step, a tag added through the API goes out as a Differential carrying
    only that tag (with its idTagInfo) and a higher list version; a removed tag as a Differential
    entry without idTagInfo.
    """
    async with connect(square, "CP04") as cp:
        await boot16(cp, connectors=1)
        initial = (await cp.expect("SendLocalList"))["listVersion"]
        mark = cp.mark()
        put_token(square, "OCA-ADDED-1", "Accepted")
        added = await cp.expect("SendLocalList", after=mark)
        assert added["updateType"] == "Differential" and added["listVersion"] > initial
        assert added["localAuthorizationList"] == [{"idTag": "OCA-ADDED-1", "idTagInfo": {"status": "Accepted"}}]
        mark = cp.mark()
        assert (await square.aapi("DELETE", "/api/tokens", {"tag": "OCA-ADDED-1"}))[0] == 200
        removed = await cp.expect("SendLocalList", after=mark)
        assert removed["updateType"] == "Differential" and removed["listVersion"] > added["listVersion"]
        assert removed["localAuthorizationList"] == [{"idTag": "OCA-ADDED-1"}]
        assert await authorize(cp, "OCA-ADDED-1") == "Invalid"


async def test_TC_043_3_CSMS_send_local_authorization_list_failed(square: Daemon) -> None:
    """TC_043_3_CSMS "Send Local Authorization List - Failed".

    The charge point answers the Full list with Failed: the gateway takes it as a failure to retry
    later (not as a charge point without a list) and the connection carries on.
    """
    async with connect(square, "CP05") as cp:
        cp.answers["SendLocalList"] = {"status": "Failed"}
        await boot16(cp, connectors=1)
        assert (await cp.expect("SendLocalList"))["updateType"] == "Full"
        await cp.absent("SendLocalList", after=cp.mark(), for_s=1.5)  # no retry storm
        assert events(square, "local_list_unsupported", "CP05") == []
        assert (await cp.ask(call.Heartbeat())).current_time.endswith("Z") and charger(square, "CP05")["online"]


async def test_TC_042_1_CSMS_get_local_list_version_not_supported(square: Daemon) -> None:
    """TC_042_1_CSMS "Get Local List Version (not supported)".

    A charge point answering -1 has no local list: the gateway sends it no list and records why.
    One that answers GetLocalListVersion with a CALLERROR NotSupported is left alone alike, and the
    operator's own GetLocalListVersion gets 502 with that code.
    """
    async with connect(square, "CP06") as cp:
        cp.answers["GetLocalListVersion"] = {"listVersion": -1}
        await boot16(cp, connectors=1)
        await cp.expect("GetLocalListVersion")
        await until(lambda: events(square, "local_list_unsupported", "CP06"), "CP06 reported without a list")
        await cp.absent("SendLocalList", for_s=0.5)
    async with connect(square, "CP07") as cp:
        cp.answers["GetLocalListVersion"] = NotSupportedError(description="no local list")
        await boot16(cp, connectors=1)
        await until(lambda: events(square, "local_list_unsupported", "CP07"), "CP07 reported without a list")
        code, body = await call_api(square, "CP07", "GetLocalListVersion", {})
        assert code == 502 and body["code"] == "NotSupported" and body["description"] == "no local list"
        assert cp.frames("SendLocalList") == []


async def test_TC_043_1_CSMS_send_local_authorization_list_not_supported(square: Daemon) -> None:
    """TC_043_1_CSMS "Send Local Authorization List - NotSupported".

    The charge point answers the Full list with NotSupported: the gateway records that it has no
    list and sends it no more, not even the next change.
    """
    async with connect(square, "CP09") as cp:
        cp.answers["SendLocalList"] = {"status": "NotSupported"}
        await boot16(cp, connectors=1)
        assert (await cp.expect("SendLocalList"))["updateType"] == "Full"
        await until(lambda: events(square, "local_list_unsupported", "CP09"), "CP09 reported without a list")
        mark = cp.mark()
        put_token(square, "OCA-LATE-1", "Accepted")
        await cp.absent("SendLocalList", after=mark, for_s=1.5)
