"""Hostile input for the gateway's three doors: OCPP-J frames, MQTT messages and Modbus register blocks.

Hypothesis strategies, `drawn` to turn one into a reproducible (seeded) list for a test or a long
run of bench/fuzz.py, and `ocpp_expectation`: the answer interfaces.md §3 prescribes for a frame,
worked out from the OCPP 1.6 JSON schemas rather than from the gateway's own code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

MAX_FRAME_BYTES = 65536  # interfaces.md §3: a bigger frame closes the connection with 1009
MAX_DEPTH = 32  # the gateway drops frames nested deeper (OCPP payloads stay below ten levels)
INT32 = range(-(2**31), 2**31)  # OCPP 1.6 "integer" is a 32-bit integer
ID_MAX_CHARS = 36
T = "2026-11-28T13:05:09Z"


def drawn(strategy: st.SearchStrategy, count: int, seed_value: int | None = None) -> list:
    """`count` values of `strategy` (fewer if it has fewer), the same list every time for the same seed.

    No seed: derandomized, as CI wants. This draws through `given`, so the values are the ones a
    property test would see (`.example()` is for the console, not for this).
    """
    out: list = []

    def collect(value: Any) -> None:
        out.append(value)

    runner = given(strategy)(collect)
    runner = settings(
        max_examples=count, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck), derandomize=seed_value is None,
    )(runner)
    if seed_value is not None:
        runner = seed(seed_value)(runner)
    runner()
    return out


# ---------------------------------------------------------------- OCPP frames


@dataclass(frozen=True)
class OcppFrame:
    """One WebSocket message: `data` (str: a text frame; bytes: binary, or text with `text` set) and what it tries."""

    data: str | bytes
    what: str
    text: bool = False


@dataclass(frozen=True)
class Expect:
    """What the gateway owes a frame: `nothing`, a CALLRESULT (`result`), a CALLERROR with one of `codes`, or a close."""

    kind: Literal["nothing", "result", "error", "close"]
    unique_id: str | None = None
    codes: frozenset[str] = frozenset()
    close_code: int | None = None


SERVED = (
    "BootNotification", "Heartbeat", "StatusNotification", "Authorize", "StartTransaction",
    "StopTransaction", "MeterValues", "DataTransfer", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
)
_VALID: dict[str, dict[str, Any]] = {
    "BootNotification": {"chargePointVendor": "laadplein", "chargePointModel": "Fuzz"},
    "Heartbeat": {},
    "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
    "Authorize": {"idTag": "TAG-1"},
    "StartTransaction": {"connectorId": 1, "idTag": "TAG-1", "meterStart": 0, "timestamp": T},
    "StopTransaction": {"meterStop": 10, "timestamp": T, "transactionId": 1},
    "MeterValues": {"connectorId": 1, "transactionId": 1, "meterValue": [{"timestamp": T, "sampledValue": [
        {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"}]}]},
    "DataTransfer": {"vendorId": "fuzz"},
    "DiagnosticsStatusNotification": {"status": "Idle"},
    "FirmwareStatusNotification": {"status": "Idle"},
}
_KEYS = ("connectorId", "idTag", "meterStart", "meterStop", "transactionId", "timestamp", "status", "errorCode",
         "chargePointVendor", "vendorId", "data", "reservationId", "reason", "info", "nope", "", "ünïcødé")
TIMESTAMPS = (
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z", "2026-02-30T25:61:00Z", "2026-11-28T13:05:09", "+275760-09-13T00:00:00Z",
    "", "yesterday", "2026-11-28T13:05:09.123456789+05:30", "2026-11-28 13:05:09z",
)


class Raw(str):
    """Text that goes into a frame as it is (numbers JSON allows but Python will not print, broken tokens)."""


HUGE_NUMBERS = (Raw("9" * 5000), Raw("-" + "1" * 4400), Raw("1e999999"), Raw("-1E400"), Raw("-0"), Raw("0." + "0" * 300 + "1"))
_INTS = st.one_of(
    st.sampled_from([2**31, 2**31 - 1, -(2**31), -(2**31) - 1, 2**63, -1, -(10**30), 10**100, 0]),
    st.integers(), st.sampled_from(HUGE_NUMBERS),
)
_BIG_STRINGS = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\U0001F50C", "\\", '"']),
                         st.sampled_from([21, 51, 256, 10_000, 30_000, 70_000, 10**6]))
_SCALARS = st.one_of(st.none(), st.booleans(), st.floats(), _INTS,
                     st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
JSON_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HOSTILE = st.one_of(_INTS, st.floats(), _BIG_STRINGS, st.sampled_from(TIMESTAMPS), JSON_VALUES)
_IDS = st.one_of(st.text(max_size=12), st.sampled_from(["", "x" * 36, "x" * 37, "ü" * 36, "\ud800", "\x00"]))


def dumps(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text of `value`, NaN and Infinity as the bare words Python writes, `Raw` pieces as they are."""
    raws: list[str] = []

    def mark(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(str(v))
            return f"\x01raw{len(raws) - 1}\x01"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=ascii_only)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x01raw{i}\x01", ensure_ascii=ascii_only), raw)
    return text


@st.composite
def hostile_calls(draw) -> OcppFrame:
    """A CALL of an action the gateway serves, its payload bent: hostile values, unknown keys, keys taken away."""
    action = draw(st.sampled_from(SERVED))
    payload = json.loads(json.dumps(_VALID[action]))
    target = payload
    if action == "MeterValues" and draw(st.booleans()):
        target = payload["meterValue"][0] if draw(st.booleans()) else payload["meterValue"][0]["sampledValue"][0]
    notes = []
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["set", "set", "set", "drop", "timestamp"]))
        key = draw(st.sampled_from(sorted(target) + list(_KEYS)))
        if how == "drop":
            target.pop(key, None)
        elif how == "timestamp":
            target["timestamp"] = draw(st.sampled_from(TIMESTAMPS) | st.text(max_size=30))
        else:
            target[key] = draw(HOSTILE)
        notes.append(f"{how} {key}")
    unique_id = draw(st.text(max_size=8))
    frame = dumps([2, unique_id, action, payload], ascii_only=draw(st.booleans()))
    return OcppFrame(frame, f"{action}: {', '.join(notes) or 'valid'}")


_INT32S = st.sampled_from([0, -1, 1, 2, 3, 7, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)
_STAMPS = st.sampled_from(TIMESTAMPS) | st.text(max_size=30)
_WORDS = st.text(max_size=20)
_NUMBERS = st.sampled_from(
    ["1e308", "-1e308", "1e400", "1e13", "-9e11", "NaN", "inf", "", "12,5", " 7 ", "0x10", "1" * 400, "-0", "16.0"]
)
_SAMPLED = st.fixed_dictionaries(
    {"value": _NUMBERS | st.text(max_size=12)},
    optional={
        "measurand": st.sampled_from(
            ["Current.Import", "Current.Offered", "Power.Active.Import", "Energy.Active.Import.Register", "SoC", "Voltage"]
        ),
        "unit": st.sampled_from(["A", "W", "kW", "Wh", "kWh", "V", "Percent"]),
        "phase": st.sampled_from(["L1", "L2", "L3", "N", "L1-N", "L1-L2"]),
        "format": st.sampled_from(["Raw", "SignedData"]),
        "context": st.sampled_from(["Sample.Periodic", "Transaction.End"]),
    },
)
_METER_VALUES = st.lists(st.fixed_dictionaries({"timestamp": _STAMPS, "sampledValue": st.lists(_SAMPLED, min_size=1, max_size=6)}),
                         min_size=1, max_size=4)
# Payloads the OCPP 1.6 schemas accept, filled with values a sane charger would not send.
_TYPED = {
    "BootNotification": st.fixed_dictionaries(
        {"chargePointVendor": _WORDS, "chargePointModel": _WORDS}, optional={"firmwareVersion": _WORDS}
    ),
    "StatusNotification": st.fixed_dictionaries(
        {"connectorId": _INT32S, "errorCode": st.sampled_from(["NoError", "OtherError", "GroundFailure"]),
         "status": st.sampled_from(["Available", "Preparing", "Charging", "SuspendedEV", "Finishing", "Faulted", "Unavailable"])},
        optional={"timestamp": _STAMPS, "info": st.text(max_size=50)}),
    "Authorize": st.fixed_dictionaries({"idTag": _WORDS}),
    "StartTransaction": st.fixed_dictionaries({"connectorId": _INT32S, "idTag": _WORDS, "meterStart": _INT32S, "timestamp": _STAMPS},
                                              optional={"reservationId": _INT32S}),
    "StopTransaction": st.fixed_dictionaries({"meterStop": _INT32S, "timestamp": _STAMPS, "transactionId": _INT32S},
                                             optional={"idTag": _WORDS, "reason": st.sampled_from(["Local", "Remote", "Other"]),
                                                       "transactionData": _METER_VALUES}),
    "MeterValues": st.fixed_dictionaries({"connectorId": _INT32S, "meterValue": _METER_VALUES}, optional={"transactionId": _INT32S}),
    "DataTransfer": st.fixed_dictionaries({"vendorId": _WORDS}, optional={"messageId": _WORDS, "data": st.text(max_size=100)}),
}


@st.composite
def typed_calls(draw) -> OcppFrame:
    """A CALL whose payload fits the schema, with values at the edges: times past the calendar, absurd meter readings."""
    action = draw(st.sampled_from(sorted(_TYPED)))
    payload = draw(_TYPED[action])
    return OcppFrame(dumps([2, draw(st.text(max_size=8)), action, payload], ascii_only=draw(st.booleans())), f"{action}: typed")


def _nested(depth: int, closed: bool) -> str:
    return "[" * depth + ("]" * depth if closed else "")


NESTED = st.builds(_nested, st.sampled_from([29, 30, 31, 33, 100, 1_000, 10_000, 30_000, 100_000]), st.booleans())


def ocpp_frames() -> st.SearchStrategy[OcppFrame]:
    """Every kind of frame a broken or hostile charger might send."""
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
    type_ids = st.one_of(st.sampled_from([2, 3, 4, 2.0, True, 0, 5, -1, "2", None]), JSON_VALUES)
    shaped = st.lists(JSON_VALUES, max_size=6).flatmap(
        lambda rest: st.tuples(type_ids, _IDS | JSON_VALUES).map(lambda head: [*head, *rest]))
    return st.one_of(
        text.map(lambda t: OcppFrame(t, "random text")),
        st.binary(max_size=300).map(lambda b: OcppFrame(b, "binary frame")),
        st.binary(max_size=40).map(
            lambda b: OcppFrame(b'[2,"u","Heartbeat",{"x":"\xff\xfe' + b + b'"}]', "invalid UTF-8", text=True)
        ),
        JSON_VALUES.map(lambda v: OcppFrame(dumps(v), "random JSON")),
        shaped.map(lambda m: OcppFrame(dumps(m), "random elements in a frame")),
        st.tuples(_IDS, st.text(max_size=30), JSON_VALUES).map(
            lambda t: OcppFrame(dumps([2, t[0], t[1], t[2] if isinstance(t[2], dict) else {}]), "CALL of any action")),
        hostile_calls(), hostile_calls(), typed_calls(), typed_calls(),
        st.tuples(_IDS, JSON_VALUES).map(lambda t: OcppFrame(dumps([3, t[0], t[1]]), "CALLRESULT for an unknown id")),
        st.tuples(_IDS, text, text).map(lambda t: OcppFrame(dumps([4, t[0], t[1], t[2], {}]), "CALLERROR for an unknown id")),
        NESTED.map(lambda n: OcppFrame(n, "deeply nested arrays")),
        NESTED.map(lambda n: OcppFrame('[2,"deep","DataTransfer",{"vendorId":"x","data":' + n + "}]", "nested payload")),
        _BIG_STRINGS.map(lambda s: OcppFrame(dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": s}]), "huge frame")),
        st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(lambda w: OcppFrame(
            f'[2,"nan","StartTransaction",{{"connectorId":{w},"idTag":"T","meterStart":0,"timestamp":"{T}"}}]', "NaN literal"
        )),
    )


# ---------------------------------------------------------------- what a frame is owed


def _code(validator: str) -> str:
    # The OCPP library's reading of a schema failure, with 1.6's spelling of the format code.
    return "TypeConstraintViolation" if validator in ("type", "maxLength") else "FormationViolation"


@cache
def _validator(action: str) -> Draft4Validator:
    path = resources.files("ocpp") / "v16" / "schemas" / f"{action}.json"
    return Draft4Validator(json.loads(path.read_text(encoding="utf-8-sig")))


def _value_codes(value: Any, key: str = "") -> set[str]:
    """Codes for values the schema lets through but OCPP 1.6 does not: integers beyond 32 bits, negative connector ids."""
    if isinstance(value, dict):
        return set().union(*(_value_codes(v, k) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_value_codes(v, key) for v in value))
    codes = set()
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in INT32:
            codes.add("TypeConstraintViolation")
        elif key == "connectorId" and value < 0:
            codes.add("PropertyConstraintViolation")
    return codes


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(c) for c in children), default=0)
    return 0


def _parse_int(digits: str) -> int:
    # An integer too long for Python's parser is still an integer, one far beyond 32 bits.
    if len(digits) <= 4000:
        return int(digits)
    return -(10**40) if digits.startswith("-") else 10**40


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def ocpp_expectation(frame: OcppFrame) -> Expect:
    """The answer interfaces.md §3 prescribes for `frame` sent by a known OCPP 1.6 charger."""
    data = frame.data
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > MAX_FRAME_BYTES:
        return Expect("close", close_code=1009)
    if isinstance(data, bytes):
        if not frame.text:
            return Expect("nothing")  # OCPP-J speaks in text frames
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return Expect("close", close_code=1007)  # RFC 6455 §8.1: the endpoint must fail the connection
    try:
        message = json.loads(data, parse_int=_parse_int, parse_constant=_no_constant)
        too_deep = _depth(message) > MAX_DEPTH
    except (ValueError, RecursionError):
        return Expect("nothing")
    if too_deep or not isinstance(message, list) or len(message) < 2:
        return Expect("nothing")
    unique_id = message[1]
    if not isinstance(unique_id, str):
        return Expect("nothing")
    type_id = message[0]
    is_type = not isinstance(type_id, bool) and isinstance(type_id, int | float)
    if is_type and type_id == 4:
        # An error is never answered with an error, malformed or not; nor is one for an unknown id.
        return Expect("nothing")
    shape = {2: (4, (str, dict)), 3: (3, (dict,)), 4: (5, (str, str, dict))}
    if not isinstance(type_id, int) or isinstance(type_id, bool) or type_id not in shape or len(unique_id) > ID_MAX_CHARS:
        return Expect("error", unique_id, frozenset({"FormationViolation"}))
    count, types = shape[type_id]
    if len(message) != count or not all(isinstance(v, t) for v, t in zip(message[2:], types, strict=True)):
        return Expect("error", unique_id, frozenset({"FormationViolation"}))
    if type_id == 3:
        return Expect("nothing")  # an answer to a request the gateway never sent
    action, payload = message[2], message[3]
    if action not in SERVED:
        return Expect("error", unique_id, frozenset({"NotImplemented"}))
    codes = {_code(e.validator) for e in _validator(action).iter_errors(payload)} | _value_codes(payload)
    if codes:
        return Expect("error", unique_id, frozenset(codes))
    return Expect("result", unique_id)


def heartbeat(unique_id: str) -> str:
    """A well-formed Heartbeat CALL."""
    return json.dumps([2, unique_id, "Heartbeat", {}])


# ---------------------------------------------------------------- MQTT


@dataclass(frozen=True)
class MqttMessage:
    """A message a sensor, fixture or stranger might publish: `topic` under the site root `P`."""

    topic: str
    payload: bytes
    retain: bool
    what: str


# Brokers refuse a topic with control characters, surrogates or non-characters (MQTT 3.1.1 §1.5.3) and
# wildcards in a publish: the rest is fair game.
_LEVEL = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn"), blacklist_characters="/+#"), min_size=1, max_size=20)


def mqtt_messages(bays: tuple[str, ...]) -> st.SearchStrategy[MqttMessage]:
    """Junk on the topics the gateway listens to, for `bays` and for bays that do not exist, and odd topic levels."""
    bay = st.sampled_from(bays) | _LEVEL
    topic = st.one_of(
        st.tuples(bay, st.sampled_from(["occupancy", "light/ack"])).map(lambda t: f"bays/{t[0]}/{t[1]}"),
        st.sampled_from([f"bays/{bays[0]}/occupancy/extra", "bays//occupancy", f"bays/{bays[0]}/ack",
                         f"bays/{bays[0]}", "bays", f"bays/{bays[0]}/light/ack/more"]),
        st.lists(_LEVEL, min_size=1, max_size=6).map("/".join),
    )
    occupancy = st.one_of(
        st.booleans().map(lambda b: {"occupied": b}),
        JSON_VALUES.map(lambda v: {"occupied": v}),
        st.builds(lambda s, c: {"seq": s, "color": c}, _INTS | JSON_VALUES, st.sampled_from(["blue", "green", "off", "red", ""])),
        JSON_VALUES,
    )
    payload = st.one_of(
        occupancy.map(lambda v: dumps(v, ascii_only=False).encode("utf-8", "surrogatepass")),
        st.binary(max_size=200),
        st.binary(max_size=20).map(lambda b: b'{"occupied": "\xc3\x28' + b + b'"}'),
        st.builds(lambda n: b'{"occupied": true, "pad": "' + b"x" * n + b'"}', st.sampled_from([4_100, 100_000, 1_000_000])),
        NESTED.map(lambda n: n.encode()),
        st.sampled_from([b"", b"true", b"null", b'{"occupied": true, "occupied": false}', b'{"occupied": NaN}']),
    )
    return st.builds(MqttMessage, topic, payload, st.booleans(), st.just("junk"))


# ---------------------------------------------------------------- Modbus


@dataclass(frozen=True)
class ModbusPoll:
    """How a battery answers one poll: `good` values, `garbage` registers, a Modbus `exception`, a `drop`ped link, or `silent`."""

    kind: Literal["good", "garbage", "exception", "drop", "silent"]
    regs: tuple[int, ...] = ()
    code: int = 0


_SPECIAL_REGS = (0x0000, 0x7FFF, 0x8000, 0xFFFF, 0x8001, 0x7FFE, 0x00FF, 0xFF00, 0x7FC0)


def register_blocks(count: int) -> st.SearchStrategy[tuple[int, ...]]:
    """`count` registers of garbage, rich in the values that mean something (not implemented, sign edges, NaN)."""
    reg = st.sampled_from(_SPECIAL_REGS) | st.integers(0, 0xFFFF)
    return st.lists(reg, min_size=count, max_size=count).map(tuple)


def modbus_polls(count: int) -> st.SearchStrategy[ModbusPoll]:
    """One poll's fate, garbage blocks `count` registers long; good ones often enough that trust is won and lost."""
    good = st.just(ModbusPoll("good"))
    garbage = register_blocks(count).map(lambda r: ModbusPoll("garbage", r))
    return st.one_of(
        good, good, good, good, garbage, garbage,
        st.sampled_from([1, 2, 3, 4, 5, 6, 10, 11]).map(lambda c: ModbusPoll("exception", code=c)),
        st.just(ModbusPoll("drop")),
        st.just(ModbusPoll("silent")),
    )


def modbus_scripts(count: int, polls: int) -> st.SearchStrategy[list[ModbusPoll]]:
    """A run of `polls` fates (drawn as one value: like fates repeat, as they do on a sick battery)."""
    return st.lists(modbus_polls(count), min_size=polls, max_size=polls)
