"""Mending the schema breaks of real chargers flagged `lenient`: a request that fails its OCPP JSON
schema is rewritten, guided by that schema, into one that fits, with a list of what was changed.

Only mends that cannot change what the charger meant are made: numbers sent as strings (or the
other way round), times with an offset or without a zone (read as UTC), the case of an enum value,
a few required fields with a harmless default, properties the schema does not know, nulls (taken
as absent) and over-long descriptive text (cut). Any other break leaves the payload refused.
The fix list is meant for the log, so a value is quoted in it only where it cannot name a card,
a device or a secret. Pure: no I/O beyond reading the `ocpp` package's schemas once, no clock, no logging.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft4Validator

from drivers.contract.clock import parse_ts_or_none, wire_ts
from drivers.ocpp.frames import normalize_version

__all__ = ["MAX_FIXES_LISTED", "normalize"]

MAX_FIXES_LISTED = 8
"""Most fixes named one by one; more are counted, so that one payload makes one readable log line."""

# OCPP schemas nest less than ten levels; this only stops a $ref cycle, should a schema ever have one.
_MAX_SCHEMA_DEPTH = 32
_MAX_NUMBER_CHARS = 40  # digits and more beyond this are no meter reading but an attempt to stall int()
_EXAMPLE_CHARS = 40  # of a charger's own words quoted in a fix

_SCHEMA_FOLDERS = {"1.6": "v16", "2.0.1": "v201"}
_ACTION_NAME = re.compile(r"[A-Za-z0-9]{1,64}")

# Required properties with a default that says no more than "the charger did not say": the only
# ones filled in. A missing idTag, transactionId, timestamp or value has no such default.
_DEFAULTS: dict[tuple[str, str, str], str] = {
    ("1.6", "StatusNotification", "errorCode"): "NoError",
    ("1.6", "BootNotification", "chargePointVendor"): "unknown",
    ("1.6", "BootNotification", "chargePointModel"): "unknown",
    ("2.0.1", "BootNotification", "reason"): "Unknown",
    ("2.0.1", "BootNotification", "chargingStation.vendorName"): "unknown",
    ("2.0.1", "BootNotification", "chargingStation.model"): "unknown",
}

# Spellings of enum values that differ by more than case yet leave no doubt what is meant; used
# only where the right-hand side is one of the values the schema allows.
_VENDOR_SPELLINGS: dict[str, str] = {
    "%": "Percent",
    "Hz": "Hertz",
    "°C": "Celsius",
    "L1N": "L1-N",
    "L2N": "L2-N",
    "L3N": "L3-N",
}

# Strings that name or prove something: cut short they would name another tag, transaction or
# vendor, or break a signature. Too long, they are refused rather than truncated.
_NEVER_TRUNCATED = frozenset({
    "idTag", "parentIdTag", "idToken", "transactionId", "vendorId", "messageId", "serialNumber",
    "issuerNameHash", "issuerKeyHash", "certificate", "certificateChain", "csr", "signedMeterData",
    "publicKey", "signature", "exiRequest", "responderURL",
})

# Values that name a card, a person, a device or a secret, or prove something (interfaces.md §8: no
# tag in logs). A fix anywhere under such a property names its place and kind, never what was sent:
# the fix list is written to the log.
_NEVER_QUOTED = _NEVER_TRUNCATED | frozenset({
    "groupIdToken", "additionalInfo", "additionalIdToken", "data", "customerIdentifier", "iccid", "imsi",
    "simPin", "exiResponse", "ocspRequestData",
})
_NEVER_QUOTED_FAMILY = re.compile(r"idtag|idtoken|serial|cert|csr|sign|publickey|hash|password", re.IGNORECASE)

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_WHOLE = re.compile(r"[+-]?\d+")
_UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
# A date and a time of day, however written; a bare date or anything else is left for the handler,
# which takes the time of receipt for a time it cannot read.
_LOOSE_TIME = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?\s*")


class _Unmendable(Exception):
    """A break with no safe mend: the payload stays refused."""


@dataclass(frozen=True)
class _Schema:
    """One action's request schema and the validator the `ocpp` library would use for it."""

    root: dict[str, Any]
    validator: Draft4Validator
    decimal: bool  # multipleOf is checked on decimals, as the library does: as floats 21.4 fails multipleOf 0.1

    def fits(self, payload: dict[str, Any]) -> bool:
        try:
            instance = json.loads(json.dumps(payload), parse_float=Decimal) if self.decimal else payload
            return bool(self.validator.is_valid(instance))
        except (ValueError, TypeError, RecursionError):
            return False


@lru_cache(maxsize=256)
def _schema(action: str, version: str) -> _Schema | None:
    """The request schema of `action` in `version` from the `ocpp` package; None when there is none."""
    folder = _SCHEMA_FOLDERS.get(version)
    if folder is None or not _ACTION_NAME.fullmatch(action):
        return None
    name = action if version == "1.6" else f"{action}Request"
    try:
        # The 2.0.1 schemas start with a byte order mark.
        text = resources.files("ocpp").joinpath(folder, "schemas", f"{name}.json").read_text(encoding="utf-8-sig")
    except OSError:
        return None
    decimal = '"multipleOf"' in text
    root = json.loads(text, parse_float=Decimal if decimal else float)
    return _Schema(root, Draft4Validator(root), decimal)


def normalize(action: str, payload: Any, version: str) -> tuple[dict[str, Any], list[str]] | None:
    """The payload mended to fit the version's schema for `action`, with what was changed; None if it cannot be.

    `version` is "1.6" or "2.0.1" (an "ocpp" prefix is ignored). The input is never changed; the
    result shares with it only the parts the schema leaves open (such as customData's extras).
    Whatever is returned fits the schema as the `ocpp` library checks it.
    """
    version = normalize_version(version)
    schema = _schema(action, version)
    if schema is None or not isinstance(payload, dict):
        return None
    mender = _Mender(schema.root, action, version)
    try:
        mended = mender.mend(payload, schema.root, "", "", 0)
    except _Unmendable:
        return None
    if not schema.fits(mended):
        return None
    return mended, mender.report()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _secret(path: str) -> bool:
    """True when `path` lies in or under a property whose value must not be quoted (see _NEVER_QUOTED)."""
    for part in path.split("."):
        name = part.removesuffix("[]")
        if name in _NEVER_QUOTED or _NEVER_QUOTED_FAMILY.search(name):
            return True
    return False


def _quote(text: str) -> str:
    """A charger's own words for a fix: shortened, with control characters escaped so no line can be forged."""
    return repr(text[:_EXAMPLE_CHARS] + ("..." if len(text) > _EXAMPLE_CHARS else ""))


class _Mender:
    """One walk over a payload along its schema, collecting the fixes made."""

    def __init__(self, root: dict[str, Any], action: str, version: str) -> None:
        self._root = root
        self._action = action
        self._version = version
        # (path with [] for every list index, what) -> (the first example, how many times)
        self._fixes: dict[tuple[str, str], tuple[str, int]] = {}

    def _note(self, path: str, what: str, example: str = "") -> None:
        if _secret(path):
            example = ""  # the place and the kind of fix are enough to chase the charger's maker
        first, count = self._fixes.get((path, what), (example, 0))
        self._fixes[(path, what)] = (first, count + 1)

    def report(self) -> list[str]:
        """The fixes as short lines, the same fix at the same place counted once."""
        lines = []
        for (path, what), (example, count) in self._fixes.items():
            line = f"{path or 'payload'}: {what}"
            if example:
                line += f" ({'e.g. ' if count > 1 else ''}{example})"
            if count > 1:
                line += f" x{count}"
            lines.append(line)
        if len(lines) > MAX_FIXES_LISTED:
            rest = len(lines) - MAX_FIXES_LISTED + 1
            lines = lines[: MAX_FIXES_LISTED - 1] + [f"and {rest} other fixes"]
        return lines

    def _resolve(self, schema: Any) -> dict[str, Any]:
        for _ in range(_MAX_SCHEMA_DEPTH):
            if not isinstance(schema, dict):
                raise _Unmendable
            ref = schema.get("$ref")
            if ref is None:
                return schema
            if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
                raise _Unmendable
            schema = self._root.get("definitions", {}).get(ref.removeprefix("#/definitions/"))
        raise _Unmendable

    def mend(self, value: Any, schema: Any, path: str, name: str, depth: int) -> Any:
        """`value` mended to fit `schema`; `name` is its property name ("" in a list or at the top)."""
        if depth > _MAX_SCHEMA_DEPTH:
            raise _Unmendable
        schema = self._resolve(schema)
        kind = schema.get("type")
        if kind == "object":
            return self._object(value, schema, path, depth)
        if kind == "array":
            return self._array(value, schema, path, depth)
        if kind == "string":
            return self._string(value, schema, path, name)
        if kind in ("number", "integer"):
            return self._number(value, path, integer=kind == "integer")
        if kind == "boolean" and not isinstance(value, bool):
            raise _Unmendable  # "true", 1, "yes": too many ways to read it wrong
        return value

    def _object(self, value: Any, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Unmendable
        properties = schema.get("properties", {})
        closed = schema.get("additionalProperties") is False
        mended: dict[str, Any] = {}
        for key, item in value.items():
            inner = properties.get(key)
            if inner is None:
                if closed:
                    self._note(path, "property unknown to the schema dropped", _quote(key))
                    continue
                mended[key] = item
            elif item is None:
                # A serializer writing null for "not set": absent says the same (and a required
                # property is then filled in from _DEFAULTS or refused, as if it were missing).
                self._note(_join(path, key), "null dropped")
            else:
                mended[key] = self.mend(item, inner, _join(path, key), key, depth + 1)
        for key in schema.get("required", []):
            if key in mended:
                continue
            default = _DEFAULTS.get((self._version, self._action, _join(path, key)))
            if default is None:
                raise _Unmendable
            mended[key] = default
            self._note(_join(path, key), f"missing, set to {default!r}")
        return mended

    def _array(self, value: Any, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        if not isinstance(value, list):
            raise _Unmendable
        items = schema.get("items")
        if not isinstance(items, dict):
            return list(value)
        return [self.mend(item, items, f"{path}[]", "", depth + 1) for item in value]

    def _string(self, value: Any, schema: dict[str, Any], path: str, name: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Unmendable
        if not isinstance(value, str):
            if isinstance(value, float) and not math.isfinite(value):
                raise _Unmendable
            try:
                text = repr(value)  # as JSON writes it: 230.5, 12, 1e+16
            except ValueError:  # an int too long to print
                raise _Unmendable from None
            self._note(path, "number sent where a string is due", text[:_EXAMPLE_CHARS])
            value = text
        enum = schema.get("enum")
        if isinstance(enum, list) and value not in enum:
            value = self._enum(value, enum, path)
        if schema.get("format") == "date-time":
            value = self._time(value, path)
        limit = schema.get("maxLength")
        if isinstance(limit, int) and len(value) > limit:
            if name in _NEVER_TRUNCATED:
                raise _Unmendable
            self._note(path, f"truncated to {limit} characters", f"was {len(value)}")
            value = value[:limit]
        return value

    def _enum(self, value: str, enum: list[Any], path: str) -> str:
        wanted = _VENDOR_SPELLINGS.get(value.strip())
        if wanted not in enum:
            folded = value.strip().casefold()
            matches = [option for option in enum if isinstance(option, str) and option.casefold() == folded]
            if len(matches) != 1:
                raise _Unmendable
            wanted = matches[0]
        self._note(path, "enum value respelled", f"{_quote(value)} as {wanted!r}")
        return str(wanted)

    def _time(self, value: str, path: str) -> str:
        if _UTC_TIME.fullmatch(value) or not _LOOSE_TIME.fullmatch(value):
            return value
        at = parse_ts_or_none(value.replace(",", "."))  # a decimal comma before the fraction is ISO 8601 too
        if at is None:
            return value
        utc = wire_ts(at)
        self._note(path, "time rewritten in UTC", f"{_quote(value)} as {utc}")
        return utc

    def _number(self, value: Any, path: str, *, integer: bool) -> int | float:
        if isinstance(value, bool):
            raise _Unmendable
        if isinstance(value, str):
            text = value.strip()
            if len(text) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
                raise _Unmendable
            number: int | float = int(text) if _WHOLE.fullmatch(text) else float(text)
            if not math.isfinite(number):
                raise _Unmendable
            self._note(path, "number sent as a string", _quote(value))
            value = number
        if not isinstance(value, (int, float)):
            raise _Unmendable
        if integer and isinstance(value, float):
            # 1234.0 for an integer is the same count; 1234.5 is not, and is refused rather than rounded.
            if not value.is_integer() or abs(value) >= 2**53:
                raise _Unmendable
            self._note(path, "whole number sent with a fraction", repr(value))
            value = int(value)
        return value
