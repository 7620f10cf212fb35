"""How much one request to a charger may carry, by the charger's own word: OCPP 2.0.1's
DeviceDataCtrlr `ItemsPerMessage` and `BytesPerMessage` (instances GetVariables, SetVariables,
GetReport) and OCPP 1.6's `GetConfigurationMaxKeys`. Pure: learns the limits from answers, splits
a request into messages within them and merges the answers to those into one. No I/O, no clock.

Bytes are counted over the whole OCPP-J CALL frame as it goes on the wire,
`[2,"<message id>","<Action>",{payload}]` in UTF-8: the device model calls the limit the
"maximum number of bytes in a message", and a message of OCPP-J is that frame (stations check
the size of the frame they receive). Counting the frame is the stricter reading, so a request
split by it also fits a station that counts only the payload.

A charger's nonsense ("-1", "abc", "1e3", a number out of all reason) teaches nothing: the limit
stays as it was, unknown if it was. A limit not known is not applied.

The local authorization list (SendLocalList) is not split here: its parts need list versions of
their own, which `drivers.ocpp.local_list` plans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from drivers.contract.backend import InvalidRequest

V16, V201 = "1.6", "2.0.1"  # as the ocpp library names the versions (ChargerLink._ocpp_version)
UNIQUE_ID_CHARS = 36
"""Length of the message id the gateway puts in each CALL (a UUID in its text form)."""
MAX_ITEMS = 100_000
"""Items per message: a larger number is taken for a wrong value (it would limit nothing anyway)."""
MIN_BYTES, MAX_BYTES = 256, 1_000_000_000
"""Bytes per message taken as meant. Fewer than 256 cannot carry a request for a single variable
with its message id; such a value is taken for a wrong one rather than refusing every request."""

_DEVICE_DATA = "DeviceDataCtrlr"
_MAX_KEYS_16 = "GetConfigurationMaxKeys"
_NUMBER = re.compile(r"\s*\+?([0-9]{1,12})\s*")


class TooBig(InvalidRequest):
    """A request that no split can bring within the charger's limits (it is not sent)."""


@dataclass(frozen=True)
class _Shape:
    """Where a request keeps the list that is split, and where its answer keeps the lists merged."""

    items: str
    results: tuple[str, ...]
    splittable: bool = True


_SHAPES: dict[tuple[str, str], _Shape] = {
    (V201, "GetVariables"): _Shape("getVariableData", ("getVariableResult",)),
    (V201, "SetVariables"): _Shape("setVariableData", ("setVariableResult",)),
    # A report comes later in NotifyReports bearing the request's requestId: parts would need ids
    # the sender did not choose, so a GetReport over the limit is refused, not split.
    (V201, "GetReport"): _Shape("componentVariable", (), splittable=False),
    (V16, "GetConfiguration"): _Shape("key", ("configurationKey", "unknownKey")),
}
_INSTANCES = frozenset(action for version, action in _SHAPES if version == V201)


@dataclass(frozen=True)
class MessageLimits:
    """One charger's known limits by request action (items per message, bytes per frame); an
    action missing from a mapping has no known limit of that kind."""

    items: Mapping[str, int] = field(default_factory=dict)
    bytes: Mapping[str, int] = field(default_factory=dict)


def combined(learned: MessageLimits, told: MessageLimits | None) -> MessageLimits:
    """The limits in force: what the charger's answers said and what the operator told of it, the
    lower of the two where both say something."""
    if told is None:
        return learned

    def lower(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
        return {k: min(v for v in (a.get(k), b.get(k)) if v is not None) for k in {*a, *b}}

    return MessageLimits(lower(learned.items, told.items), lower(learned.bytes, told.bytes))


def told_limits(version_actions: Mapping[str, Mapping[str, object]]) -> MessageLimits:
    """Limits an operator gives for a charger, `{"GetVariables": {"items": 4, "bytes": 4096}, ...}`;
    ValueError naming what is wrong (an action without limits here, a number out of range)."""
    actions = {action for _, action in _SHAPES}
    items: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for action, limits in version_actions.items():
        if action not in actions:
            raise ValueError(f"{action!r} has no per-message limits; give one of {', '.join(sorted(actions))}")
        if not isinstance(limits, Mapping) or not limits or set(limits) - {"items", "bytes"}:
            raise ValueError(f"{action}: give {{\"items\": n}} and/or {{\"bytes\": n}}")
        for kind, low, high, into in (("items", 1, MAX_ITEMS, items), ("bytes", MIN_BYTES, MAX_BYTES, sizes)):
            if kind in limits:
                value = limits[kind]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ValueError(f"{action}.{kind} must be a whole number from {low} to {high}, not {value!r}")
                into[action] = value
    return MessageLimits(items, sizes)


def parse_limit(value: object, low: int, high: int) -> int | None:
    """A limit from a charger's text (ASCII digits, an optional +, spaces around); None for
    anything else or a number outside low..high."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    found = _NUMBER.fullmatch(str(value))
    if found is None:
        return None
    number = int(found.group(1))
    return number if low <= number <= high else None


def _learned(limits: MessageLimits, action: str, variable: str, value: object) -> MessageLimits:
    if variable == "ItemsPerMessage":
        number = parse_limit(value, 1, MAX_ITEMS)
        return limits if number is None else replace(limits, items={**limits.items, action: number})
    number = parse_limit(value, MIN_BYTES, MAX_BYTES)
    return limits if number is None else replace(limits, bytes={**limits.bytes, action: number})


def learn(limits: MessageLimits, version: str, action: str, answer: object) -> MessageLimits:
    """`limits` with what an answer to `action` says of them: 2.0.1 GetVariables results of
    DeviceDataCtrlr ItemsPerMessage/BytesPerMessage (their instance names the request), 1.6
    GetConfiguration's GetConfigurationMaxKeys. Anything else in the answer is ignored."""
    if not isinstance(answer, Mapping):
        return limits
    if version == V16 and action == "GetConfiguration":
        for key in _dicts(answer.get("configurationKey")):
            if key.get("key") == _MAX_KEYS_16:
                number = parse_limit(key.get("value"), 1, MAX_ITEMS)
                if number is not None:
                    limits = replace(limits, items={**limits.items, "GetConfiguration": number})
        return limits
    if version != V201 or action != "GetVariables":
        return limits
    for result in _dicts(answer.get("getVariableResult")):
        component, variable = result.get("component"), result.get("variable")
        if not isinstance(component, Mapping) or not isinstance(variable, Mapping):
            continue
        if (result.get("attributeStatus") != "Accepted" or result.get("attributeType", "Actual") != "Actual"
                or component.get("name") != _DEVICE_DATA or "evse" in component or "instance" in component):
            continue
        name, instance = variable.get("name"), variable.get("instance")
        if name in ("ItemsPerMessage", "BytesPerMessage") and instance in _INSTANCES:
            limits = _learned(limits, str(instance), str(name), result.get("attributeValue"))
    return limits


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _size(value: object) -> int:
    """Bytes of `value` in JSON as the CALL frame carries it (compact, ASCII with escapes)."""
    return len(json.dumps(value, separators=(",", ":")).encode())


def frame_bytes(action: str, payload: Mapping[str, Any]) -> int:
    """Bytes of the CALL frame that carries `payload` (message id of UNIQUE_ID_CHARS)."""
    return _size([2, "x" * UNIQUE_ID_CHARS, action, dict(payload)])


def wants_limits(version: str, action: str, payload: Mapping[str, Any], limits: MessageLimits) -> bool:
    """True when reading the charger's limits first could change how `payload` is sent: the request
    has a limited list of more than one item and the item limit of `action` is not known."""
    shape = _SHAPES.get((version, action))
    if shape is None or action in limits.items:
        return False
    items = payload.get(shape.items)
    return isinstance(items, list) and len(items) > 1


def split(version: str, action: str, payload: Mapping[str, Any], limits: MessageLimits) -> list[dict[str, Any]]:
    """The payloads that carry `payload` within the known limits, items in their order; just
    `payload` when it fits. Each part keeps the request's other fields.

    Raises TooBig for a single item whose frame alone is over the byte limit (the station may
    answer such a request only with a CALLERROR FormatViolation, so it is not sent) and for a
    GetReport over a limit (see `_SHAPES`)."""
    shape = _SHAPES.get((version, action))
    items = payload.get(shape.items) if shape is not None else None
    if shape is None or not isinstance(items, list):
        return [dict(payload)]
    max_items = limits.items.get(action, len(items) or 1)
    max_bytes = limits.bytes.get(action)
    whole = frame_bytes(action, payload)
    if len(items) <= max_items and (max_bytes is None or whole <= max_bytes):
        return [dict(payload)]
    if not shape.splittable:
        raise TooBig(
            f"{action} with {len(items)} {shape.items} entries ({whole} bytes) is over the charger's limit "
            f"({max_items} entries, {max_bytes or 'any'} bytes per message); send it in smaller requests, "
            f"each with its own requestId"
        )
    return _packed(action, payload, shape.items, items, max_items, max_bytes)


def _packed(
    action: str, payload: Mapping[str, Any], key: str, items: Sequence[Any], max_items: int, max_bytes: int | None
) -> list[dict[str, Any]]:
    """Items packed in order into as few parts as fit: at most `max_items` each, each frame within `max_bytes`."""
    empty = frame_bytes(action, {**payload, key: []})  # then each item adds its JSON and a comma after the first
    parts: list[list[Any]] = []
    size = 0
    for index, item in enumerate(items):
        item_bytes = _size(item)
        if max_bytes is not None and empty + item_bytes > max_bytes:
            raise TooBig(
                f"{action}: entry {index + 1} of {key} alone makes a message of {empty + item_bytes} bytes, over "
                f"the charger's limit of {max_bytes} bytes per message"
            )
        if parts and len(parts[-1]) < max_items and (max_bytes is None or size + 1 + item_bytes <= max_bytes):
            parts[-1].append(item)
            size += 1 + item_bytes
        else:
            parts.append([item])
            size = empty + item_bytes
    return [{**payload, key: part} for part in parts]


def merge(version: str, action: str, answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One answer from the answers to the parts of a split request: their result lists joined in
    order, every other field as the first answer has it. A list no answer has stays absent."""
    if len(answers) == 1:
        return dict(answers[0])
    shape = _SHAPES.get((version, action))
    if shape is None or not answers:
        raise ValueError(f"no merge of {len(answers)} answers to {action} ({version})")
    merged = dict(answers[0])
    for key in shape.results:
        lists = [a[key] for a in answers if isinstance(a.get(key), list)]
        if lists:
            merged[key] = [item for part in lists for item in part]
    return merged


def limit_queries(version: str) -> list[tuple[str, dict[str, Any]]]:
    """The requests (action, payload) that read a charger's limits, in order: 2.0.1 first the item
    limit of GetVariables alone (so the next one can be split by it), then the rest; 1.6 the key."""
    if version == V16:
        return [("GetConfiguration", {"key": [_MAX_KEYS_16]})]
    if version != V201:
        return []
    wanted = [("ItemsPerMessage", "GetVariables")] + [
        (name, action) for action in sorted(_INSTANCES) for name in ("BytesPerMessage", "ItemsPerMessage")
        if (name, action) != ("ItemsPerMessage", "GetVariables")
    ]
    data = [{"component": {"name": _DEVICE_DATA}, "variable": {"name": name, "instance": action}} for name, action in wanted]
    return [("GetVariables", {"getVariableData": data[:1]}), ("GetVariables", {"getVariableData": data[1:]})]
