"""The local authorization list on the wire: its payloads (checked against the ocpp library's schemas),
the answers read, the split into messages, and the list's version in the store. The keeper that
carries the list to chargers is tested in test_local_list_keeper.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.messages import Call, CallResult, MessageType, get_validator, validate_payload

from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.ocpp import local_list as wire
from drivers.ocpp.local_list import (
    DIFFERENTIAL,
    FULL,
    V16,
    V201,
    ListEntry,
    Push,
    Support,
)

T0 = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
LIB = {V16: "1.6", V201: "2.0.1"}
LONG_TAG = "E0040150A1B2C3D4E5F6A7B8C9"  # 26 characters: a 2.0.1 IdToken, too long for 1.6


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def valid_call(version: str, action: str, payload: dict) -> None:
    await validate_payload(Call("1", action, payload), LIB[version])


# ---- payloads --------------------------------------------------------------------------------


ENTRIES = (
    ListEntry("04A1B2C3D4", "Accepted", at(3600), "G1"),
    ListEntry("BLOCKED01", "Blocked"),
    ListEntry("OLDCARD1", "Accepted", at(-60)),
    ListEntry("GONE0001", "Invalid", None, "G2"),
)


@pytest.mark.parametrize("version", [V16, V201])
async def test_full_and_differential_fit_the_schema(version: str) -> None:
    full = wire.send_local_list(version, Push(FULL, 7, ENTRIES), T0)
    await valid_call(version, "SendLocalList", full)
    diff = wire.send_local_list(version, Push(DIFFERENTIAL, 8, (ListEntry("BLOCKED01", None), ENTRIES[0])), T0)
    await valid_call(version, "SendLocalList", diff)
    empty_full = wire.send_local_list(version, Push(FULL, 1, ()), T0)
    await valid_call(version, "SendLocalList", empty_full)
    for request in (wire.enable_request(version), wire.items_request(version), wire.version_request(version)):
        await valid_call(version, *request)


async def test_ocpp16_entries_on_the_wire() -> None:
    full = wire.send_local_list(V16, Push(FULL, 7, ENTRIES), T0)
    assert full["listVersion"] == 7 and full["updateType"] == "Full"
    by_tag = {e["idTag"]: e for e in full["localAuthorizationList"]}
    assert by_tag["04A1B2C3D4"] == {
        "idTag": "04A1B2C3D4",
        "idTagInfo": {"status": "Accepted", "expiryDate": "2026-11-28T14:00:00.000Z", "parentIdTag": "G1"},
    }
    assert by_tag["BLOCKED01"] == {"idTag": "BLOCKED01", "idTagInfo": {"status": "Blocked"}}
    # Accepted but already past its expiry: the charger is told Expired, not left to work it out.
    assert by_tag["OLDCARD1"]["idTagInfo"]["status"] == "Expired"
    removal = wire.send_local_list(V16, Push(DIFFERENTIAL, 8, (ListEntry("BLOCKED01", None),)), T0)
    assert removal == {"listVersion": 8, "updateType": "Differential", "localAuthorizationList": [{"idTag": "BLOCKED01"}]}
    assert wire.send_local_list(V16, Push(FULL, 1, ()), T0)["localAuthorizationList"] == []


async def test_ocpp201_entries_on_the_wire() -> None:
    full = wire.send_local_list(V201, Push(FULL, 7, ENTRIES), T0)
    assert full["versionNumber"] == 7 and full["updateType"] == "Full"
    by_tag = {e["idToken"]["idToken"]: e for e in full["localAuthorizationList"]}
    assert by_tag["04A1B2C3D4"] == {
        "idToken": {"idToken": "04A1B2C3D4", "type": "ISO14443"},
        "idTokenInfo": {
            "status": "Accepted",
            "cacheExpiryDateTime": "2026-11-28T14:00:00.000Z",
            "groupIdToken": {"idToken": "G1", "type": "Central"},
        },
    }
    assert by_tag["OLDCARD1"]["idTokenInfo"]["status"] == "Expired"
    removal = wire.send_local_list(V201, Push(DIFFERENTIAL, 8, (ListEntry("BLOCKED01", None),)), T0)
    assert removal["localAuthorizationList"] == [{"idToken": {"idToken": "BLOCKED01", "type": "ISO14443"}}]
    # 2.0.1 allows no empty list: an empty Full clears the charger's list by leaving it out.
    assert wire.send_local_list(V201, Push(FULL, 1, ()), T0) == {"versionNumber": 1, "updateType": "Full"}


def test_accepted_tag_expires_exactly_at_its_expiry() -> None:
    entry = ListEntry("A", "Accepted", at(10))
    assert wire.wire_status(entry, at(9.999)) == "Accepted"
    assert wire.wire_status(entry, at(10)) == "Expired"
    assert wire.wire_status(ListEntry("B", "Blocked", at(10)), at(20)) == "Blocked"
    assert wire.wire_status(ListEntry("C", None), at(20)) is None


async def test_tags_and_groups_too_long_for_ocpp16() -> None:
    long_group = "G" * 30
    entries = (ListEntry(LONG_TAG, "Accepted"), ListEntry("SHORT1", "Accepted", None, long_group))
    p16 = wire.send_local_list(V16, Push(FULL, 3, entries), T0)
    await valid_call(V16, "SendLocalList", p16)
    assert p16["localAuthorizationList"] == [{"idTag": "SHORT1", "idTagInfo": {"status": "Accepted"}}]
    p201 = wire.send_local_list(V201, Push(FULL, 3, entries), T0)
    await valid_call(V201, "SendLocalList", p201)
    assert [e["idToken"]["idToken"] for e in p201["localAuthorizationList"]] == [LONG_TAG, "SHORT1"]
    assert p201["localAuthorizationList"][1]["idTokenInfo"]["groupIdToken"]["idToken"] == long_group
    with pytest.raises(ValueError):
        wire.entry_payload(V16, ListEntry(LONG_TAG, "Accepted"), T0)


def test_wrong_pushes_are_refused() -> None:
    with pytest.raises(ValueError):
        wire.send_local_list(V16, Push(FULL, 2, (ListEntry("A", None),)), T0)
    with pytest.raises(ValueError):
        wire.send_local_list(V16, Push("Partial", 2, ()), T0)
    with pytest.raises(ValueError):
        wire.send_local_list("ocpp2.1", Push(FULL, 2, ()), T0)


def test_entry_repr_hides_the_tag() -> None:
    text = repr(ListEntry("04A1B2C3D4", "Accepted", None, "GROUP77")) + repr(Push(FULL, 1, (ListEntry("04A1B2C3D4", None),)))
    assert "04A1B2C3D4" not in text and "GROUP77" not in text


# ---- answers ---------------------------------------------------------------------------------


async def valid_answer(version: str, action: str, payload: dict) -> dict:
    await validate_payload(CallResult("1", payload, action=action), LIB[version])
    return payload


def set_variable_result(status: str) -> dict:
    return {"setVariableResult": [
        {"attributeStatus": status, "component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Enabled"}}
    ]}


def get_variable_result(status: str, value: str | None = None) -> dict:
    result = {"attributeStatus": status, "component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "ItemsPerMessage"}}
    if value is not None:
        result["attributeValue"] = value
    return {"getVariableResult": [result]}


@pytest.mark.parametrize(
    ("version", "answer", "support"),
    [
        (V16, {"status": "Accepted"}, Support.YES),
        (V16, {"status": "RebootRequired"}, Support.YES),
        (V16, {"status": "Rejected"}, Support.REFUSED),
        (V16, {"status": "NotSupported"}, Support.NO),
        (V201, set_variable_result("Accepted"), Support.YES),
        (V201, set_variable_result("Rejected"), Support.REFUSED),
        (V201, set_variable_result("UnknownComponent"), Support.NO),
        (V201, set_variable_result("UnknownVariable"), Support.NO),
    ],
)
async def test_enable_answers(version: str, answer: dict, support: Support) -> None:
    action = wire.enable_request(version)[0]
    assert wire.enable_answer(version, await valid_answer(version, action, answer))[0] is support


async def test_items_per_message_answers() -> None:
    def conf(value: str) -> dict:
        return {"configurationKey": [{"key": "SendLocalListMaxLength", "readonly": True, "value": value}]}

    assert wire.items_answer(V16, await valid_answer(V16, "GetConfiguration", conf("20"))) == 20
    assert wire.items_answer(V16, await valid_answer(V16, "GetConfiguration", conf(" 7 "))) == 7
    for unusable in (conf("0"), conf("lots"), {"unknownKey": ["SendLocalListMaxLength"]}, {}):
        assert wire.items_answer(V16, unusable) == wire.DEFAULT_ITEMS_PER_MESSAGE
    assert wire.items_answer(V201, await valid_answer(V201, "GetVariables", get_variable_result("Accepted", "12"))) == 12
    unknown = await valid_answer(V201, "GetVariables", get_variable_result("UnknownVariable"))
    assert wire.items_answer(V201, unknown, default=9) == 9


async def test_list_version_answers() -> None:
    assert wire.version_answer(V16, await valid_answer(V16, "GetLocalListVersion", {"listVersion": 4})) == 4
    assert wire.version_answer(V16, await valid_answer(V16, "GetLocalListVersion", {"listVersion": 0})) == 0
    assert wire.version_answer(V16, await valid_answer(V16, "GetLocalListVersion", {"listVersion": -1})) is None
    assert wire.version_answer(V201, await valid_answer(V201, "GetLocalListVersion", {"versionNumber": 9})) == 9
    assert wire.version_answer(V201, {"versionNumber": True}) is None
    assert wire.send_answer(V201, await valid_answer(V201, "SendLocalList", {"status": "VersionMismatch"})) == "VersionMismatch"
    assert wire.unsupported_callerror("NotImplemented") and wire.unsupported_callerror("NotSupported")
    assert not wire.unsupported_callerror("InternalError")


# ---- splitting into messages -----------------------------------------------------------------


def test_full_list_split_by_items_per_message() -> None:
    entries = [ListEntry(f"T{i:02d}", "Accepted") for i in range(5)]
    pushes = wire.plan_full(entries, 10, 2)
    assert [(p.update_type, p.list_version, len(p.entries)) for p in pushes] == [
        (FULL, 8, 2), (DIFFERENTIAL, 9, 2), (DIFFERENTIAL, 10, 1)]
    assert [e for p in pushes for e in p.entries] == entries
    assert wire.plan_full([], 1, 50) == (Push(FULL, 1, ()),)
    with pytest.raises(ValueError):
        wire.plan_full(entries, 2, 2)  # three parts cannot end at version 2
    with pytest.raises(ValueError):
        wire.plan_full(entries, 10, 0)


def test_differential_split_and_bounds() -> None:
    changes = [ListEntry(f"T{i}", "Accepted") for i in range(3)]
    assert [(p.list_version, len(p.entries)) for p in wire.plan_differential(changes, 4, 7, 2)] == [(6, 2), (7, 1)]
    assert wire.plan_differential([], 4, 5, 2) == (Push(DIFFERENTIAL, 5, ()),)
    with pytest.raises(ValueError):
        wire.plan_differential(changes, 6, 7, 2)  # version 6 is the charger's already


def test_changes_between_keeps_the_latest_per_tag() -> None:
    journal = {5: ListEntry("B", "Accepted"), 6: ListEntry("A", "Blocked"), 7: ListEntry("B", None), 8: ListEntry("C", "Accepted")}
    assert wire.changes_between(journal, 4, 7) == (ListEntry("A", "Blocked"), ListEntry("B", None))
    assert wire.changes_between(journal, 7, 8) == (ListEntry("C", "Accepted"),)
    assert wire.changes_between(journal, 8, 8) == ()
    assert wire.changes_between(journal, 3, 8) is None  # version 4 is not known
    assert wire.changes_between(journal, 9, 8) is None  # a charger ahead of the gateway


def apply(held: dict[str, dict], version: int, payload: dict, ocpp: str) -> tuple[str, int]:
    """A charger's handling of SendLocalList (OCPP 1.6 §5.15, 2.0.1 D01): the status and its new version."""
    number = payload["listVersion" if ocpp == V16 else "versionNumber"]
    items = payload.get("localAuthorizationList", [])
    if payload["updateType"] == DIFFERENTIAL and number <= version:
        return "VersionMismatch", version
    if payload["updateType"] == FULL:
        held.clear()
    for item in items:
        tag = item["idTag"] if ocpp == V16 else item["idToken"]["idToken"]
        info = item.get("idTagInfo" if ocpp == V16 else "idTokenInfo")
        if info is None:
            held.pop(tag, None)
        else:
            held[tag] = info
    return "Accepted", number


entry_strategy = st.builds(
    ListEntry,
    st.text("0123456789ABCDEF", min_size=1, max_size=24),
    st.sampled_from(["Accepted", "Blocked", "Expired", "Invalid"]),
    st.one_of(st.none(), st.integers(-10**6, 10**6).map(at)),
    st.one_of(st.none(), st.text("GHIJ", min_size=1, max_size=4)),
)


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(entry_strategy, max_size=40, unique_by=lambda e: e.tag),
    per_message=st.integers(1, 12),
    extra_versions=st.integers(0, 5),
    ocpp=st.sampled_from([V16, V201]),
)
def test_a_split_list_arrives_whole_and_valid(entries, per_message, extra_versions, ocpp) -> None:
    target = len(entries) + 1 + extra_versions  # the store keeps the version above the number of tags
    held: dict[str, dict] = {"STALE": {"status": "Accepted"}}
    version = 3
    validator = get_validator(MessageType.Call, "SendLocalList", LIB[ocpp])
    for push in wire.plan_full(entries, target, per_message):
        payload = wire.send_local_list(ocpp, push, T0)
        validator.validate(payload)
        assert len(payload.get("localAuthorizationList", [])) <= per_message
        status, version = apply(held, version, payload, ocpp)
        assert status == "Accepted"
    assert version == target
    sendable = {e.tag: e for e in entries if wire.fits(ocpp, e)}
    assert set(held) == set(sendable)
    for tag, info in held.items():
        assert info["status"] == wire.wire_status(sendable[tag], T0)


@settings(max_examples=150, deadline=None)
@given(
    start=st.lists(entry_strategy, max_size=10, unique_by=lambda e: e.tag),
    edits=st.lists(st.tuples(st.integers(0, 14), st.sampled_from(["Accepted", "Blocked", None])), min_size=1, max_size=20),
    per_message=st.integers(1, 5),
    ocpp=st.sampled_from([V16, V201]),
)
def test_differentials_from_the_journal_match_the_list(start, edits, per_message, ocpp) -> None:
    listed = {e.tag: e for e in start}
    held: dict[str, dict] = {}
    version = len(start) + 1
    for push in wire.plan_full(list(listed.values()), version, 50):
        _, version = apply(held, 0, wire.send_local_list(ocpp, push, T0), ocpp)
    journal: dict[int, ListEntry] = {}
    gateway = version
    for n, status in edits:
        tag = f"TAG{n}"
        gateway += 1
        journal[gateway] = ListEntry(tag, status)
        if status is None:
            listed.pop(tag, None)
        else:
            listed[tag] = journal[gateway]
    changes = wire.changes_between(journal, version, gateway)
    assert changes is not None
    for push in wire.plan_differential(changes, version, gateway, per_message):
        status, version = apply(held, version, wire.send_local_list(ocpp, push, T0), ocpp)
        assert status == "Accepted"
    assert version == gateway
    assert held == {t: wire.entry_payload(ocpp, e, T0)["idTagInfo" if ocpp == V16 else "idTokenInfo"]
                    for t, e in listed.items() if wire.fits(ocpp, e)}


# ---- the list's version in the store ---------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path):
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as s:
        yield s


async def test_every_change_raises_the_version_durably(tmp_path: Path, store: Store) -> None:
    assert await store.tokens.version() == 1
    assert await store.tokens.put("AAA", "Accepted", None, None) == 2
    assert await store.tokens.put("AAA", "Blocked", None, None) == 3
    assert await store.tokens.put("BBB", "Accepted", at(60), "G1") == 4
    assert await store.tokens.delete("CCC") is False
    assert await store.tokens.version() == 4
    assert await store.tokens.delete("AAA") is True
    assert await store.tokens.version() == 5
    await store.close()
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as again:
        assert await again.tokens.version() == 5
        assert [t["tag"] for t in await again.tokens.tags()] == ["BBB"]


async def test_a_list_from_before_versions_counts_above_its_size(store: Store) -> None:
    for tag in ("AAA", "BBB", "CCC"):
        await store.tokens.put(tag, "Accepted", None, None)
    async with store._conn.write() as db:  # a database whose tokens predate the version
        await db.execute("DELETE FROM settings")
    assert await store.tokens.version() == 4
    assert await store.tokens.delete("AAA") is True
    assert await store.tokens.version() == 5  # counted before the tag went: it still goes up
