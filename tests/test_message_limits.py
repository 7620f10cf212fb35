"""A charger's per-message limits: learned from its answers (nonsense ignored), requests split within
them (items and bytes of the CALL frame), the answers merged, and the parts checked against the
ocpp library's schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.messages import Call, validate_payload

from drivers.ocpp import message_limits as ml
from drivers.ocpp.message_limits import V16, V201, MessageLimits, TooBig


def variable(name: str, evse: int | None = None, value: str | None = None) -> dict[str, Any]:
    component: dict[str, Any] = {"name": "EVSE" if evse else "ChargingStation"}
    if evse:
        component["evse"] = {"id": evse}
    item: dict[str, Any] = {"component": component, "variable": {"name": name}}
    if value is not None:
        item["attributeValue"] = value
    return item


def get_variables(n: int) -> dict[str, Any]:
    return {"getVariableData": [variable("PhaseRotation", evse=i) for i in range(1, n + 1)]}


def limit_result(name: str, instance: str, value: object, status: str = "Accepted", **extra: Any) -> dict[str, Any]:
    return {"attributeStatus": status, "attributeValue": value, "component": {"name": "DeviceDataCtrlr"},
            "variable": {"name": name, "instance": instance}, **extra}


def learned(*results: dict[str, Any]) -> MessageLimits:
    return ml.learn(MessageLimits(), V201, "GetVariables", {"getVariableResult": list(results)})


def wire_bytes(action: str, payload: dict[str, Any]) -> int:
    """The frame exactly as the link sends it (the ocpp library's Call), message id a UUID."""
    return len(Call("0" * 36, action, payload).to_json().encode())


# ---- learning ------------------------------------------------------------------------------------


def test_limits_are_learned_from_a_get_variables_answer_by_instance():
    limits = learned(
        limit_result("ItemsPerMessage", "GetVariables", "2"),
        limit_result("BytesPerMessage", "GetVariables", "4096"),
        limit_result("ItemsPerMessage", "SetVariables", "3"),
        limit_result("BytesPerMessage", "GetReport", " 8000 "),
    )
    assert limits.items == {"GetVariables": 2, "SetVariables": 3}
    assert limits.bytes == {"GetVariables": 4096, "GetReport": 8000}


def test_1_6_learns_get_configuration_max_keys():
    answer = {"configurationKey": [{"key": "GetConfigurationMaxKeys", "readonly": True, "value": "5"},
                                   {"key": "HeartbeatInterval", "readonly": False, "value": "60"}]}
    assert ml.learn(MessageLimits(), V16, "GetConfiguration", answer).items == {"GetConfiguration": 5}


@pytest.mark.parametrize("value", ["-1", "0", "abc", "1e3", "2.0", "", " ", "٣", "9" * 5000, "12345678901234",
                                   str(ml.MAX_ITEMS + 1), None, True, 3.0, [], {"v": 1}])
def test_nonsense_items_teach_nothing(value):
    assert learned(limit_result("ItemsPerMessage", "GetVariables", value)).items == {}
    assert ml.learn(MessageLimits(), V16, "GetConfiguration",
                    {"configurationKey": [{"key": "GetConfigurationMaxKeys", "readonly": True, "value": value}]}).items == {}


@pytest.mark.parametrize("value", ["-1", "abc", "0", "10", str(ml.MIN_BYTES - 1), str(ml.MAX_BYTES + 1)])
def test_nonsense_bytes_teach_nothing(value):
    assert learned(limit_result("BytesPerMessage", "GetVariables", value)).bytes == {}


def test_nonsense_keeps_what_was_known():
    known = learned(limit_result("ItemsPerMessage", "GetVariables", "4"))
    again = ml.learn(known, V201, "GetVariables", {"getVariableResult": [limit_result("ItemsPerMessage", "GetVariables", "-1")]})
    assert again.items == {"GetVariables": 4}


@pytest.mark.parametrize("result", [
    limit_result("ItemsPerMessage", "GetVariables", "2", status="UnknownVariable"),
    limit_result("ItemsPerMessage", "GetVariables", "2", attributeType="MaxSet"),
    limit_result("ItemsPerMessage", "LocalAuthListCtrlr", "2"),  # not a request of its own
    limit_result("ItemsPerMessage", "SendLocalList", "2"),  # the local list keeper's business
    limit_result("ValueSize", "GetVariables", "2"),
    {**limit_result("ItemsPerMessage", "GetVariables", "2"), "component": {"name": "LocalAuthListCtrlr"}},
    {**limit_result("ItemsPerMessage", "GetVariables", "2"), "component": {"name": "DeviceDataCtrlr", "evse": {"id": 1}}},
    {**limit_result("ItemsPerMessage", "GetVariables", "2"), "variable": {"name": "ItemsPerMessage"}},
    {**limit_result("ItemsPerMessage", "GetVariables", "2"), "component": "DeviceDataCtrlr"},
])
def test_other_results_teach_nothing(result):
    assert learned(result) == MessageLimits()


@pytest.mark.parametrize("answer", [None, "x", [], {"getVariableResult": "x"}, {"getVariableResult": [1, None, "a"]},
                                    {"getVariableResult": None}, {"configurationKey": [{"key": None}]}])
def test_a_malformed_answer_teaches_nothing_and_raises_nothing(answer):
    for version, action in ((V201, "GetVariables"), (V16, "GetConfiguration"), (V201, "SetVariables")):
        assert ml.learn(MessageLimits(), version, action, answer) == MessageLimits()


def test_answers_to_other_requests_teach_nothing():
    answer = {"getVariableResult": [limit_result("ItemsPerMessage", "GetVariables", "2")]}
    assert ml.learn(MessageLimits(), V201, "SetVariables", answer) == MessageLimits()
    assert ml.learn(MessageLimits(), V16, "GetVariables", answer) == MessageLimits()


# ---- splitting -----------------------------------------------------------------------------------


def test_a_request_within_its_limits_goes_as_it_is():
    payload = get_variables(3)
    assert ml.split(V201, "GetVariables", payload, MessageLimits()) == [payload]
    assert ml.split(V201, "GetVariables", payload, MessageLimits(items={"GetVariables": 3})) == [payload]
    assert ml.split(V201, "Reset", {"type": "OnIdle"}, MessageLimits(items={"GetVariables": 1})) == [{"type": "OnIdle"}]


def test_items_are_split_in_order_within_the_item_limit():
    payload = get_variables(5)
    parts = ml.split(V201, "GetVariables", payload, MessageLimits(items={"GetVariables": 2}))
    assert [len(p["getVariableData"]) for p in parts] == [2, 2, 1]
    assert [item for p in parts for item in p["getVariableData"]] == payload["getVariableData"]


def test_the_limit_of_one_request_does_not_apply_to_another():
    payload = {"setVariableData": [variable("HeartbeatInterval", value="30")] * 3}
    assert ml.split(V201, "SetVariables", payload, MessageLimits(items={"GetVariables": 1})) == [payload]
    assert len(ml.split(V201, "SetVariables", payload, MessageLimits(items={"SetVariables": 1}))) == 3


def test_1_6_get_configuration_keys_are_split_and_all_keys_is_left_alone():
    payload = {"key": ["A", "B", "C"]}
    assert ml.split(V16, "GetConfiguration", payload, MessageLimits(items={"GetConfiguration": 2})) == [
        {"key": ["A", "B"]}, {"key": ["C"]}]
    assert ml.split(V16, "GetConfiguration", {}, MessageLimits(items={"GetConfiguration": 2})) == [{}]


def test_bytes_are_those_of_the_frame_on_the_wire():
    payload = get_variables(3)
    assert ml.frame_bytes("GetVariables", payload) == wire_bytes("GetVariables", payload)
    text = {"setVariableData": [variable("Text", value="Größe 10 € — ünïcødé")]}
    assert ml.frame_bytes("SetVariables", text) == wire_bytes("SetVariables", text)


def test_bytes_are_split_so_that_every_frame_fits_exactly():
    payload = get_variables(6)
    two = wire_bytes("GetVariables", {"getVariableData": payload["getVariableData"][:2]})
    parts = ml.split(V201, "GetVariables", payload, MessageLimits(bytes={"GetVariables": two}))
    assert [len(p["getVariableData"]) for p in parts] == [2, 2, 2]
    parts = ml.split(V201, "GetVariables", payload, MessageLimits(bytes={"GetVariables": two - 1}))
    assert [len(p["getVariableData"]) for p in parts] == [1] * 6


def test_items_and_bytes_together_take_the_tighter():
    payload = get_variables(6)
    three = wire_bytes("GetVariables", {"getVariableData": payload["getVariableData"][:3]})
    limits = MessageLimits(items={"GetVariables": 2}, bytes={"GetVariables": three})
    assert [len(p["getVariableData"]) for p in ml.split(V201, "GetVariables", payload, limits)] == [2, 2, 2]


def test_a_single_item_over_the_byte_limit_is_refused_not_sent():
    payload = {"setVariableData": [variable("Text", value="x" * 600)]}
    with pytest.raises(TooBig, match="alone makes a message of"):
        ml.split(V201, "SetVariables", payload, MessageLimits(bytes={"SetVariables": 300}))


def test_a_get_report_over_its_limit_is_refused_not_split():
    payload = {"requestId": 7, "componentVariable": [{"component": {"name": "EVSE"}}] * 3}
    assert ml.split(V201, "GetReport", payload, MessageLimits(items={"GetReport": 3})) == [payload]
    with pytest.raises(TooBig, match="requestId"):
        ml.split(V201, "GetReport", payload, MessageLimits(items={"GetReport": 2}))


def test_other_fields_go_with_every_part():
    payload = {"requestId": 3, "key": ["A", "B"]}  # no such field in 1.6: only to see it carried
    parts = ml.split(V16, "GetConfiguration", payload, MessageLimits(items={"GetConfiguration": 1}))
    assert parts == [{"requestId": 3, "key": ["A"]}, {"requestId": 3, "key": ["B"]}]


@pytest.mark.parametrize(("version", "action", "payload"), [
    (V201, "GetVariables", get_variables(7)),
    (V201, "SetVariables", {"setVariableData": [variable("HeartbeatInterval", value=str(i)) for i in range(7)]}),
    (V16, "GetConfiguration", {"key": [f"Key{i}" for i in range(7)]}),
])
async def test_every_part_fits_the_schema(version, action, payload):
    limits = MessageLimits(items={action: 3})
    parts = ml.split(version, action, payload, limits)
    assert len(parts) == 3
    for part in parts:
        await validate_payload(Call("1", action, part), version)


item_values = st.text(st.characters(codec="utf-8"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(item_values, max_size=30), max_items=st.integers(1, 10) | st.none(),
       max_bytes=st.integers(ml.MIN_BYTES, 2000) | st.none())
def test_a_split_keeps_every_item_in_order_and_every_part_within_the_limits(values, max_items, max_bytes):
    payload = {"setVariableData": [variable("V", value=v) for v in values]}
    limits = MessageLimits(items={} if max_items is None else {"SetVariables": max_items},
                           bytes={} if max_bytes is None else {"SetVariables": max_bytes})
    try:
        parts = ml.split(V201, "SetVariables", payload, limits)
    except TooBig:
        alone = [wire_bytes("SetVariables", {"setVariableData": [item]}) for item in payload["setVariableData"]]
        assert max_bytes is not None and max(alone) > max_bytes
        return
    assert [item for p in parts for item in p["setVariableData"]] == payload["setVariableData"]
    for part in parts:
        assert part["setVariableData"] or not values
        assert max_items is None or len(part["setVariableData"]) <= max_items
        assert max_bytes is None or wire_bytes("SetVariables", part) <= max_bytes


# ---- merging -------------------------------------------------------------------------------------


def test_answers_are_merged_in_order():
    one = {"getVariableResult": [{"attributeStatus": "Accepted", "n": 1}]}
    two = {"getVariableResult": [{"attributeStatus": "Rejected", "n": 2}, {"attributeStatus": "Accepted", "n": 3}]}
    merged = ml.merge(V201, "GetVariables", [one, two])
    assert [r["n"] for r in merged["getVariableResult"]] == [1, 2, 3]
    assert ml.merge(V201, "SetVariables", [{"setVariableResult": [1]}, {"setVariableResult": [2]}]) == {"setVariableResult": [1, 2]}


def test_a_single_answer_is_left_as_it_is():
    answer = {"status": "Accepted", "anything": [1]}
    assert ml.merge(V201, "Reset", [answer]) == answer


def test_1_6_merges_known_and_unknown_keys():
    answers = [
        {"configurationKey": [{"key": "A", "readonly": False, "value": "1"}], "unknownKey": ["B"]},
        {"configurationKey": [{"key": "C", "readonly": True}]},
        {"unknownKey": ["D"]},
    ]
    assert ml.merge(V16, "GetConfiguration", answers) == {
        "configurationKey": [{"key": "A", "readonly": False, "value": "1"}, {"key": "C", "readonly": True}],
        "unknownKey": ["B", "D"],
    }
    assert ml.merge(V16, "GetConfiguration", [{"configurationKey": []}, {"configurationKey": []}]) == {"configurationKey": []}
    assert "unknownKey" not in ml.merge(V16, "GetConfiguration", [{"configurationKey": []}, {"configurationKey": []}])


# ---- reading the limits --------------------------------------------------------------------------


def test_limits_are_wanted_only_when_they_could_split_the_request():
    assert ml.wants_limits(V201, "GetVariables", get_variables(2), MessageLimits())
    assert not ml.wants_limits(V201, "GetVariables", get_variables(1), MessageLimits())
    assert not ml.wants_limits(V201, "GetVariables", get_variables(2), MessageLimits(items={"GetVariables": 9}))
    assert not ml.wants_limits(V201, "Reset", {"type": "OnIdle"}, MessageLimits())
    assert ml.wants_limits(V16, "GetConfiguration", {"key": ["A", "B"]}, MessageLimits())
    assert not ml.wants_limits(V16, "GetConfiguration", {}, MessageLimits())


async def test_the_limit_queries_fit_the_schema_and_ask_the_item_limit_of_get_variables_alone_first():
    for version in (V16, V201):
        queries = ml.limit_queries(version)
        for action, payload in queries:
            await validate_payload(Call("1", action, payload), version)
    first, rest = ml.limit_queries(V201)
    assert first[1]["getVariableData"] == [
        {"component": {"name": "DeviceDataCtrlr"}, "variable": {"name": "ItemsPerMessage", "instance": "GetVariables"}}]
    asked = {(d["variable"]["name"], d["variable"]["instance"]) for d in rest[1]["getVariableData"]}
    assert asked == {(n, a) for n in ("ItemsPerMessage", "BytesPerMessage") for a in ("GetVariables", "SetVariables", "GetReport")} - {
        ("ItemsPerMessage", "GetVariables")}


def test_answers_to_the_limit_queries_teach_every_limit():
    _, (action, payload) = ml.limit_queries(V201)
    answer = {"getVariableResult": [{**d, "attributeStatus": "Accepted", "attributeValue": "1000"} for d in payload["getVariableData"]]}
    limits = ml.learn(MessageLimits(items={"GetVariables": 2}), V201, action, answer)
    assert limits.items == {"GetVariables": 2, "SetVariables": 1000, "GetReport": 1000}
    assert limits.bytes == {"GetVariables": 1000, "SetVariables": 1000, "GetReport": 1000}
    assert json.dumps(limits.items)  # plain numbers
