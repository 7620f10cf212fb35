"""The MQTT wire format of interfaces.md §4: parsing is strict, bounded, and fails only with MqttPayloadError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mqtt.link import (
    MAX_PAYLOAD_BYTES,
    MqttLink,
    MqttLinkError,
    MqttPayloadError,
    ack_topic,
    bay_from_topic,
    encode_json,
    light_topic,
    occupancy_topic,
    parse_ack,
    parse_light_command,
    parse_occupancy,
    site_root,
    state_topic,
    status_topic,
)

ROOT = site_root("laadplein", "hoofddorp-marktplein")

JUNK = [
    b"",
    b"true",
    b"1",
    b"0",
    b"null",
    b"[]",
    b'"occupied"',
    b"{",
    b"\xff\xfe\x00",
    b"{}",
    b'{"occupied": 1}',
    b'{"occupied": "true"}',
    b'{"occupied": []}',
    b'{"occupied": NaN}',
    b'{"occupied": true, "occupied": false}',
    b"[" * 3000 + b"]" * 3000,
    b'{"seq": ' + b"9" * 4000 + b"}",
]


def test_topics() -> None:
    assert ROOT == "laadplein/hoofddorp-marktplein"
    assert status_topic(ROOT) == "laadplein/hoofddorp-marktplein/gateway/status"
    assert light_topic(ROOT, "B01") == "laadplein/hoofddorp-marktplein/bays/B01/light"
    assert ack_topic(ROOT, "B01") == "laadplein/hoofddorp-marktplein/bays/B01/light/ack"
    assert occupancy_topic(ROOT, "B01") == "laadplein/hoofddorp-marktplein/bays/B01/occupancy"
    assert state_topic(ROOT) == "laadplein/hoofddorp-marktplein/state"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (light_topic(ROOT, "B01"), ("B01", "light")),
        (ack_topic(ROOT, "B07"), ("B07", "ack")),
        (occupancy_topic(ROOT, "B12"), ("B12", "occupancy")),
        (f"{ROOT}/bays/B01/light/ack/x", None),
        (f"{ROOT}/bays//occupancy", None),
        (f"{ROOT}/bays/B01", None),
        (f"{ROOT}/state", None),
        ("other/site/bays/B01/light", None),
    ],
)
def test_bay_from_topic(topic: str, expected: tuple[str, str] | None) -> None:
    assert bay_from_topic(ROOT, topic) == expected


def test_encode_json_is_compact_utf8() -> None:
    assert encode_json({"text": "Alleen opladen é", "seq": 1}) == '{"text":"Alleen opladen é","seq":1}'.encode()
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"occupied": true}', True),
        (b'{"occupied":false}', False),
        (b'{"occupied": null}', None),
        (b'{"occupied": true, "rssi": -70}', True),
        ('{"occupied": false, "naam": "vak één"}'.encode(), False),
    ],
)
def test_parse_occupancy_good(payload: bytes, expected: bool | None) -> None:
    assert parse_occupancy(payload) is expected


@pytest.mark.parametrize("payload", JUNK)
def test_parse_occupancy_junk(payload: bytes) -> None:
    with pytest.raises(MqttPayloadError, match="occupancy"):
        parse_occupancy(payload)


def test_parse_rejects_huge_payloads_before_reading_them() -> None:
    huge = b'{"occupied": true, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    with pytest.raises(MqttPayloadError, match="more than the 4096"):
        parse_occupancy(huge)
    with pytest.raises(MqttPayloadError, match="more than the 4096"):
        parse_ack(b'{"seq": 1, "color": "blue", "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}')


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"seq": 17, "color": "blue"}', (17, "blue")),
        (b'{"seq":0,"color":"off"}', (0, "off")),
        (b'{"color": "green", "seq": 9223372036854775807, "fw": "1.2"}', (2**63 - 1, "green")),
    ],
)
def test_parse_ack_good(payload: bytes, expected: tuple[int, str]) -> None:
    assert parse_ack(payload) == expected


@pytest.mark.parametrize(
    "payload",
    JUNK
    + [
        b'{"seq": true, "color": "blue"}',
        b'{"seq": 1.0, "color": "blue"}',
        b'{"seq": -1, "color": "blue"}',
        b'{"seq": 9223372036854775808, "color": "blue"}',
        b'{"seq": "1", "color": "blue"}',
        b'{"seq": 1, "color": "BLUE"}',
        b'{"seq": 1, "color": "red"}',
        b'{"seq": 1, "color": ["blue"]}',
        b'{"seq": 1}',
        b'{"color": "blue"}',
    ],
)
def test_parse_ack_junk(payload: bytes) -> None:
    with pytest.raises(MqttPayloadError, match="ack"):
        parse_ack(payload)


def test_parse_light_command() -> None:
    command = {"color": "blue", "text": "Alleen opladen", "pictogram": "charging", "seq": 17,
               "ts": "2026-11-28T13:05:09.123Z", "reason": "charging"}
    assert parse_light_command(encode_json(command)) == command
    with pytest.raises(MqttPayloadError):
        parse_light_command(b'{"color": "purple", "seq": 1}')


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(MqttPayloadError, match='"occupied" must be true or false, got "yes"'):
        parse_occupancy(b'{"occupied": "yes"}')
    with pytest.raises(MqttPayloadError, match="not UTF-8"):
        parse_occupancy(b"\xc3\x28")
    with pytest.raises(MqttPayloadError, match="twice"):
        parse_ack(b'{"seq": 1, "seq": 2, "color": "off"}')


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=5000))
def test_random_bytes_raise_only_payload_errors(payload: bytes) -> None:
    for parse in (parse_occupancy, parse_ack, parse_light_command):
        try:
            parse(payload)
        except MqttPayloadError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["occupied", "seq", "color", "x"]), json_values, max_size=4))
def test_random_objects_parse_or_raise_payload_error(obj: dict[str, object]) -> None:
    payload = json.dumps(obj).encode()
    try:
        occupied = parse_occupancy(payload)
    except MqttPayloadError:
        pass
    else:
        assert occupied is obj["occupied"]
    try:
        seq, color = parse_ack(payload)
    except MqttPayloadError:
        pass
    else:
        assert (seq, color) == (obj["seq"], obj["color"])
        assert color in {"blue", "green", "off"}


def _link(**kwargs: object) -> MqttLink:
    return MqttLink("127.0.0.1", 1, ROOT, ["B01", "B02"], lambda event: None, **kwargs)  # type: ignore[arg-type]


def test_link_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="retry_s"):
        _link(retry_s=6)
    with pytest.raises(ValueError, match="bay id"):
        MqttLink("127.0.0.1", 1, ROOT, ["B/1"], lambda event: None)
    with pytest.raises(ValueError, match="wildcard"):
        MqttLink("127.0.0.1", 1, "laadplein/#", ["B01"], lambda event: None)


def test_publish_light_validates_without_a_connection() -> None:
    link = _link()
    link.publish_light("B01", {"color": "blue", "text": "Alleen opladen", "seq": 1})
    assert link.published_at("B01") is None
    assert not link.connected
    with pytest.raises(MqttLinkError, match="B09"):
        link.publish_light("B09", {"color": "blue", "seq": 1})
    with pytest.raises(MqttPayloadError, match="color"):
        link.publish_light("B01", {"color": "red", "seq": 2})
    with pytest.raises(MqttPayloadError, match="seq"):
        link.publish_light("B01", {"color": "blue"})
    with pytest.raises(MqttPayloadError, match="state"):
        link.publish_state({"ts": object()})
