"""Pure checks and conversions of OCPP-J frames, before and after the `ocpp` library sees them.

`check_frame` decides what to do with a raw WebSocket frame (drop it, answer it with a
CALLERROR, or route it); the other functions turn wire values (times, meter values) into the
gateway's terms. Nothing here does I/O, reads a clock or logs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from drivers.contract.clock import parse_ts_or_none
from drivers.contract.events import MeterSample

MAX_DEPTH = 32
"""Deepest nesting of lists and objects a frame may have (OCPP payloads stay below ten)."""

MAX_UNIQUE_ID_CHARS = 36
"""OCPP-J: a message id is a string of at most 36 characters."""

_MAX_INT_DIGITS = 4000  # below Python's int-from-string limit (4300), which would raise
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# Codes the library raises that mean "the payload does not fit the schema's structure".
_FORMAT_CODES = frozenset({"FormatViolation", "FormationViolation"})


@dataclass(frozen=True)
class FrameVerdict:
    """What to do with one frame: `drop` it, `answer` it with `reply`, or `route` the parsed `message`."""

    kind: Literal["drop", "answer", "route"]
    reason: str = ""
    reply: str | None = None  # the CALLERROR frame to send back (kind == "answer")
    message: list[Any] | None = None  # the parsed frame (kind == "route")
    unique_id: str | None = None  # the message id, when one could be read


def normalize_version(version: str) -> str:
    """The library's version string ("1.6", "2.0.1") for a subprotocol name or a version."""
    return version.removeprefix("ocpp")


def format_violation_code(version: str) -> str:
    """The CALLERROR code for a payload of the wrong structure: 1.6 spells it FormationViolation."""
    return "FormationViolation" if normalize_version(version) == "1.6" else "FormatViolation"


def error_code_for(code: str, version: str) -> str:
    """The code to send for an error code raised by the `ocpp` library, in the given version.

    The library raises FormatViolation for every version; OCPP 1.6 names that code
    FormationViolation. Every other code (TypeConstraintViolation, ProtocolError,
    PropertyConstraintViolation, OccurenceConstraintViolation, ...) is kept.
    """
    if code in _FORMAT_CODES:
        return format_violation_code(version)
    return code


def schema_error_code(code: str, version: str) -> str:
    """The code to send when the library's schema check refuses a request payload.

    The library raises ProtocolError for a missing required property; the schemas define
    which properties make up a message's structure, so that is a format violation too
    (the version's spelling). Type and value constraint codes are kept.
    """
    if code == "ProtocolError":
        return format_violation_code(version)
    return error_code_for(code, version)


def call_error_frame(unique_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> str:
    """A CALLERROR frame as text (ASCII-only JSON, so any message id can be echoed safely)."""
    return json.dumps([CALLERROR, unique_id, code, description, details or {}], separators=(",", ":"))


def _too_deep(text: str) -> bool:
    """True when lists and objects nest deeper than MAX_DEPTH (strings ignored)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _parse_int(digits: str) -> int | float:
    # A 5000-digit number would make int() raise; as a float it becomes inf, which the
    # schema then rejects as a number of the wrong type instead of losing the message id.
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else float(digits)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(text: str) -> Any:
    return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)


def check_frame(raw: str | bytes, version: str) -> FrameVerdict:
    """Decide what to do with one raw frame from a charger speaking `version` ("1.6" or "2.0.1")."""
    if not isinstance(raw, str):
        return FrameVerdict("drop", "binary frame (OCPP-J uses text frames)")
    if _too_deep(raw):
        return FrameVerdict("drop", f"nested deeper than {MAX_DEPTH} levels")
    try:
        message = _parse(raw)
    except RecursionError:
        return FrameVerdict("drop", "nested too deeply to parse")
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return FrameVerdict("drop", f"not JSON ({type(exc).__name__})")
    if not isinstance(message, list):
        return FrameVerdict("drop", f"not a JSON array but {type(message).__name__}")
    if len(message) < 2 or not isinstance(message[1], str):
        return FrameVerdict("drop", "no readable message id")

    unique_id: str = message[1]
    type_id = message[0]
    problem = _shape_problem(message)
    if problem is None:
        return FrameVerdict("route", message=message, unique_id=unique_id)
    if type_id == CALLERROR:
        # Never answer an error with an error: two confused peers would ping-pong for ever.
        return FrameVerdict("drop", f"malformed CALLERROR: {problem}", unique_id=unique_id)
    reply = call_error_frame(unique_id, format_violation_code(version), problem)
    return FrameVerdict("answer", problem, reply=reply, unique_id=unique_id)


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
"""OCPP 1.6 integers are 32-bit; the JSON schemas only say "integer"."""


def value_problem(payload: Any, key: str = "") -> tuple[str, str] | None:
    """`(error code, description)` for a value the schema lets through but OCPP does not, or None.

    An integer beyond 32 bits breaks the type (TypeConstraintViolation); a negative connectorId
    is a value no connector has (PropertyConstraintViolation).
    """
    if isinstance(payload, dict):
        items: Any = payload.items()
    elif isinstance(payload, list):
        items = ((key, v) for v in payload)
    else:
        if isinstance(payload, bool) or not isinstance(payload, int):
            return None
        if not INT32_MIN <= payload <= INT32_MAX:
            return "TypeConstraintViolation", f"{key or 'a value'} does not fit in a 32-bit integer"
        if key == "connectorId" and payload < 0:
            return "PropertyConstraintViolation", "connectorId must be 0 or more"
        return None
    for inner_key, value in items:
        problem = value_problem(value, inner_key)
        if problem is not None:
            return problem
    return None


def _shape_problem(message: list[Any]) -> str | None:
    """What is wrong with the shape of a frame whose message id is readable, or None."""
    type_id = message[0]
    if isinstance(type_id, bool) or type_id not in (CALL, CALLRESULT, CALLERROR) or not isinstance(type_id, int):
        return "message type id must be 2, 3 or 4"
    if len(message[1]) > MAX_UNIQUE_ID_CHARS:
        return f"message id longer than {MAX_UNIQUE_ID_CHARS} characters"
    expected = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}[type_id]
    if len(message) != expected:
        return f"message type {type_id} needs {expected} elements, got {len(message)}"
    if type_id == CALL:
        if not isinstance(message[2], str):
            return "action must be a string"
        if not isinstance(message[3], dict):
            return "payload must be a JSON object"
    elif type_id == CALLRESULT:
        if not isinstance(message[2], dict):
            return "payload must be a JSON object"
    else:
        if not isinstance(message[2], str) or not isinstance(message[3], str):
            return "error code and description must be strings"
        if not isinstance(message[4], dict):
            return "error details must be a JSON object"
    return None


# --- meter values ------------------------------------------------------------------------

_PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}
_SCALE = {  # measurand -> {unit: factor to A, W or Wh}
    "Current.Import": {"A": 1.0},
    "Current.Offered": {"A": 1.0},
    "Power.Active.Import": {"W": 1.0, "kW": 1000.0},
    "Energy.Active.Import.Register": {"Wh": 1.0, "kWh": 1000.0},
}
_DEFAULT_UNIT = {
    "Current.Import": "A",
    "Current.Offered": "A",
    "Power.Active.Import": "W",
    "Energy.Active.Import.Register": "Wh",
}
# Beyond these (A, W, Wh; either sign) no charger's meter reads: a register of a terawatt-hour
# would be a lifetime of a thousand fast chargers. Such a value is garbage, and kept out of the
# sums and the database, where it would overflow an integer.
_MAX_MAGNITUDE = {
    "Current.Import": 1e4,
    "Current.Offered": 1e4,
    "Power.Active.Import": 1e7,
    "Energy.Active.Import.Register": 1e12,
}


@dataclass
class _Reading:
    """Values of one timestamp while they are collected."""

    current_by_phase: list[float | None]
    current_no_phase: float | None = None
    power_total: float | None = None
    power_phases: float | None = None
    energy_total: float | None = None
    energy_phases: float | None = None
    offered: float | None = None


def _add(total: float | None, value: float) -> float:
    return value if total is None else total + value


def parse_meter_values(
    charger_id: str,
    connector_id: int,
    transaction_id: int | None,
    meter_value: object,
    received_at: datetime,
) -> tuple[list[MeterSample], list[str]]:
    """OCPP 1.6 `meterValue` entries (camelCase, as on the wire) as samples in A, W and Wh, and the problems met.

    Per timestamp: Current.Import per phase (L1 and L1-N are phase 1; without a phase it
    counts as L1), Power.Active.Import and Energy.Active.Import.Register (a value without a
    phase is the total; otherwise the phases are summed), Current.Offered. Other measurands
    and signed values are ignored; values that are not finite numbers, or beyond what a
    charger's meter can read, are skipped and reported. A timestamp that cannot be read
    becomes `received_at`.
    """
    samples: list[MeterSample] = []
    problems: list[str] = []
    if not isinstance(meter_value, list):
        return samples, ["meterValue is not a list"]
    for entry in meter_value:
        if not isinstance(entry, dict):
            problems.append("meterValue entry is not an object")
            continue
        at = parse_ts_or_none(entry.get("timestamp"))
        if at is None:
            problems.append("unreadable timestamp, using the time of receipt")
            at = received_at
        reading = _Reading(current_by_phase=[None, None, None])
        sampled = entry.get("sampledValue")
        for value in sampled if isinstance(sampled, list) else []:
            problem = _collect(reading, value)
            if problem:
                problems.append(problem)
        current = list(reading.current_by_phase)
        if current[0] is None and reading.current_no_phase is not None:
            current[0] = reading.current_no_phase
        samples.append(
            MeterSample(
                charger_id=charger_id,
                connector_id=connector_id,
                at=at,
                transaction_id=transaction_id,
                current_a=(current[0], current[1], current[2]),
                power_w=reading.power_total if reading.power_total is not None else reading.power_phases,
                energy_wh=reading.energy_total if reading.energy_total is not None else reading.energy_phases,
                offered_a=reading.offered,
            )
        )
    return samples, problems


def _collect(reading: _Reading, value: object) -> str | None:
    """Add one sampledValue to `reading`; a problem to report, or None."""
    if not isinstance(value, dict):
        return "sampledValue entry is not an object"
    if value.get("format") == "SignedData":
        return None
    measurand = value.get("measurand", "Energy.Active.Import.Register")
    scales = _SCALE.get(measurand) if isinstance(measurand, str) else None
    if scales is None:
        return None
    unit = value.get("unit", _DEFAULT_UNIT[measurand])
    factor = scales.get(unit) if isinstance(unit, str) else None
    if factor is None:
        return f"{measurand}: unit {unit!r} not understood"
    raw = value.get("value")
    try:
        number = float(raw) * factor if isinstance(raw, str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # 1e308 kW is no number of W either
        return f"{measurand}: value {str(raw)[:20]!r} is not a number"
    if abs(number) > _MAX_MAGNITUDE[measurand]:
        return f"{measurand}: value {str(raw)[:20]!r} is beyond what a charger's meter reads"
    phase = value.get("phase")
    index = _PHASE_INDEX.get(phase) if isinstance(phase, str) else None
    if phase is not None and index is None:
        return None  # N, L1-L2 and the like are no phase current/power of the car
    if measurand == "Current.Import":
        if index is None:
            reading.current_no_phase = number
        else:
            reading.current_by_phase[index] = number
    elif measurand == "Current.Offered":
        reading.offered = number if reading.offered is None else max(reading.offered, number)
    elif measurand == "Power.Active.Import":
        if index is None:
            reading.power_total = number
        else:
            reading.power_phases = _add(reading.power_phases, number)
    elif index is None:
        reading.energy_total = number
    else:
        reading.energy_phases = _add(reading.energy_phases, number)
    return None
