"""The MQTT wire format of interfaces.md §4: topic names, payload encoding and strict parsing.

Pure functions without I/O, shared by the gateway's link and the simulated fixtures; and the
throttle that turns a flapping sensor's burst into its latest reading.
"""

from __future__ import annotations

import json
import math
from typing import Any, Generic, TypeVar

from drivers.contract.words import COLORS

MAX_PAYLOAD_BYTES = 4096
OCCUPANCY_EVERY_S = 0.1
"""A sensor's readings reach the square at most this often (s): a car takes seconds to park, so faster is a fault."""
SEQ_MAX = 2**63 - 1
_FORBIDDEN_IN_LEVEL = frozenset("/+#\0")


class MqttLinkError(Exception):
    """Base of the MQTT driver's errors."""


class MqttPayloadError(MqttLinkError, ValueError):
    """A payload that does not follow interfaces.md §4."""


# ---------------------------------------------------------------- topics


def site_root(topic_prefix: str, site_id: str) -> str:
    """`P` of interfaces.md §4: `<topic_prefix>/<site id>`."""
    return f"{topic_prefix}/{site_id}"


def status_topic(root: str) -> str:
    return f"{root}/gateway/status"


def light_topic(root: str, bay_id: str) -> str:
    return f"{root}/bays/{bay_id}/light"


def ack_topic(root: str, bay_id: str) -> str:
    return f"{root}/bays/{bay_id}/light/ack"


def occupancy_topic(root: str, bay_id: str) -> str:
    return f"{root}/bays/{bay_id}/occupancy"


def state_topic(root: str) -> str:
    return f"{root}/state"


def bay_from_topic(root: str, topic: str) -> tuple[str, str] | None:
    """`(bay id, kind)` for a bay topic under `root`, kind one of `light`, `ack`, `occupancy`; else None."""
    head = f"{root}/bays/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    kinds = {("light",): "light", ("light", "ack"): "ack", ("occupancy",): "occupancy"}
    kind = kinds.get(tuple(parts[1:]))
    if kind is None or not parts[0]:
        return None
    return parts[0], kind


def check_topic_level(value: str, what: str) -> str:
    """Raise ValueError unless `value` can be one level of a topic (no `/`, `+`, `#`, NUL; not empty)."""
    if not value or _FORBIDDEN_IN_LEVEL & set(value):
        raise ValueError(f"{what} {value!r} cannot be used in an MQTT topic (empty, or has / + # or NUL)")
    return value


# ---------------------------------------------------------------- payloads


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as every payload of §4."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _short(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MqttPayloadError("a key appears twice")
    return obj


def _no_constant(name: str) -> Any:
    raise MqttPayloadError(f"{name} is not a JSON value")


def _load_object(payload: bytes, what: str) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise MqttPayloadError(f"{what}: payload is {type(payload).__name__}, not bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MqttPayloadError(f"{what}: {len(payload)} bytes, more than the {MAX_PAYLOAD_BYTES} allowed")
    if not payload:
        raise MqttPayloadError(f"{what}: empty payload")
    try:
        text = bytes(payload).decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except MqttPayloadError as exc:
        raise MqttPayloadError(f"{what}: {exc}") from None
    except UnicodeDecodeError:
        raise MqttPayloadError(f"{what}: not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise MqttPayloadError(f"{what}: not JSON ({str(exc)[:60]})") from None
    if not isinstance(obj, dict):
        raise MqttPayloadError(f"{what}: expected a JSON object, got {_short(obj)}")
    return obj


def parse_occupancy(payload: bytes) -> bool | None:
    """A sensor's `{"occupied": true|false}`; `{"occupied": null}` is the sensor saying it cannot tell (None).

    Other keys are ignored; anything else raises MqttPayloadError.
    """
    obj = _load_object(payload, "occupancy")
    if "occupied" not in obj:
        raise MqttPayloadError('occupancy: no "occupied" key')
    occupied = obj["occupied"]
    if occupied is None or isinstance(occupied, bool):
        return occupied
    raise MqttPayloadError(f'occupancy: "occupied" must be true or false, got {_short(occupied)}')


def check_seq_color(obj: dict[str, Any], what: str) -> tuple[int, str]:
    """`(seq, color)` of a light command or ack object; raises MqttPayloadError unless both are valid."""
    seq, color = obj.get("seq"), obj.get("color")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= SEQ_MAX:
        raise MqttPayloadError(f'{what}: "seq" must be an integer 0..2^63-1, got {_short(seq)}')
    if not isinstance(color, str) or color not in COLORS:
        raise MqttPayloadError(f'{what}: "color" must be blue, green or off, got {_short(color)}')
    return seq, color


def parse_ack(payload: bytes) -> tuple[int, str]:
    """A fixture's `{"seq": 17, "color": "blue"}` as `(seq, color)`; anything else raises MqttPayloadError."""
    return check_seq_color(_load_object(payload, "ack"), "ack")


def parse_light_command(payload: bytes) -> dict[str, Any]:
    """A light command as a fixture reads it: an object with at least a valid `seq` and `color`."""
    obj = _load_object(payload, "light command")
    check_seq_color(obj, "light command")
    return obj


# ---------------------------------------------------------------- bursts

T = TypeVar("T")


class Throttle(Generic[T]):
    """Passes on at most one value per key every `every_s` seconds: the first at once, the latest of a burst when its turn comes.

    Pure: the caller says what time it is (`now_s`, monotonic) and asks for the held values once
    `next_due_s` has come, so a flapping sensor's last word is never lost, only delayed.
    """

    def __init__(self, every_s: float) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0 s, got {every_s!r}")
        self.every_s = every_s
        self._free_at: dict[str, float] = {}  # key -> when it may pass on again
        self._held: dict[str, T] = {}

    def offer(self, key: str, value: T, now_s: float) -> T | None:
        """`value` when it may pass on now; otherwise None, and it waits (replacing an older one) for `take_due`."""
        if key not in self._held and now_s >= self._free_at.get(key, -math.inf):
            self._free_at[key] = now_s + self.every_s
            return value
        self._held[key] = value
        return None

    def next_due_s(self) -> float | None:
        """When the first held value may pass on (on the `now_s` clock); None when nothing waits."""
        return min((self._free_at[key] for key in self._held), default=None)

    def take_due(self, now_s: float) -> list[T]:
        """The held values whose turn has come (at `next_due_s` or later), by key."""
        due = sorted(key for key in self._held if now_s >= self._free_at[key])
        for key in due:
            self._free_at[key] = now_s + self.every_s
        return [self._held.pop(key) for key in due]
