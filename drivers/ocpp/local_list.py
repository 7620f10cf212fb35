"""The local authorization list on the wire, OCPP 1.6J and 2.0.1: pure builders of the requests
that enable, read and send a charger's list, readers of its answers, and the split of a list
into the messages a charger takes.

Expiry: an Accepted tag whose expiry has passed when the message is built goes out as Expired;
one that expires later goes out as Accepted with its expiry (1.6 `expiryDate`, 2.0.1
`cacheExpiryDateTime`), and the charger itself stops accepting it from then on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from drivers.contract.clock import wire_ts
from drivers.contract.words import ACCEPTED, EXPIRED

V16, V201 = "ocpp1.6", "ocpp2.0.1"
VERSIONS = (V16, V201)
FULL, DIFFERENTIAL = "Full", "Differential"
DEFAULT_ITEMS_PER_MESSAGE = 50  # when the charger does not say how many entries one message may carry
MAX_ID_CHARS = {V16: 20, V201: 36}  # IdToken length: a longer tag cannot be on that version's list
TOKEN_TYPE_201 = "ISO14443"  # the RFID cards of a public square
GROUP_TYPE_201 = "Central"  # a group is the gateway's own name, no card

_LIST_CTRLR = "LocalAuthListCtrlr"
_UNSUPPORTED_CALLERRORS = frozenset({"NotImplemented", "NotSupported"})
_UNKNOWN_VARIABLE = frozenset({"UnknownComponent", "UnknownVariable", "NotSupportedAttributeType"})


@dataclass(frozen=True)
class ListEntry:
    """One tag of the list as sent to chargers; `status` None removes the tag (Differential only).

    The tag is kept out of `repr`, so that a logged entry cannot carry it.
    """

    tag: str = field(repr=False)
    status: str | None
    expiry: datetime | None = None
    group: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Push:
    """One SendLocalList: its update type, the list version the charger holds once it is applied, its entries."""

    update_type: str
    list_version: int
    entries: tuple[ListEntry, ...]


class Support(Enum):
    """What a charger's answer says of its local list."""

    YES = "yes"
    REFUSED = "refused"  # it has a list, but would not do what was asked
    NO = "no"  # it has no local list at all


def _check(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"no local list for OCPP version {version!r}; known: {', '.join(VERSIONS)}")


# ---- entries ------------------------------------------------------------------------------------


def wire_status(entry: ListEntry, now: datetime) -> str | None:
    """The status sent for an entry at `now`: an Accepted tag past its expiry is Expired."""
    if entry.status == ACCEPTED and entry.expiry is not None and entry.expiry <= now:
        return EXPIRED
    return entry.status


def fits(version: str, entry: ListEntry) -> bool:
    """True when the version's IdToken can carry the tag (1.6: 20 characters, 2.0.1: 36)."""
    _check(version)
    return 0 < len(entry.tag) <= MAX_ID_CHARS[version]


def entry_payload(version: str, entry: ListEntry, now: datetime) -> dict[str, Any]:
    """One element of localAuthorizationList, camelCase as on the wire.

    A group too long for the version's IdToken is left out (the tag still authorizes; only
    stopping a group member's transaction with another card of the group depends on it).
    """
    _check(version)
    if not fits(version, entry):
        raise ValueError(f"a tag of {len(entry.tag)} characters does not fit an OCPP {version} IdToken")
    status = wire_status(entry, now)
    group = entry.group if entry.group and len(entry.group) <= MAX_ID_CHARS[version] else None
    if version == V16:
        out: dict[str, Any] = {"idTag": entry.tag}
        if status is not None:
            info: dict[str, Any] = {"status": status}
            if entry.expiry is not None:
                info["expiryDate"] = wire_ts(entry.expiry)
            if group is not None:
                info["parentIdTag"] = group
            out["idTagInfo"] = info
        return out
    out = {"idToken": {"idToken": entry.tag, "type": TOKEN_TYPE_201}}
    if status is not None:
        info = {"status": status}
        if entry.expiry is not None:
            info["cacheExpiryDateTime"] = wire_ts(entry.expiry)
        if group is not None:
            info["groupIdToken"] = {"idToken": group, "type": GROUP_TYPE_201}
        out["idTokenInfo"] = info
    return out


def send_local_list(version: str, push: Push, now: datetime) -> dict[str, Any]:
    """The SendLocalList request payload of one push; entries that do not fit the version are left out."""
    _check(version)
    if push.update_type not in (FULL, DIFFERENTIAL):
        raise ValueError(f"update type must be {FULL} or {DIFFERENTIAL}, not {push.update_type!r}")
    if push.update_type == FULL and any(e.status is None for e in push.entries):
        raise ValueError("a Full list cannot remove a tag")
    entries = [entry_payload(version, e, now) for e in push.entries if fits(version, e)]
    if version == V16:
        out: dict[str, Any] = {"listVersion": push.list_version, "updateType": push.update_type}
        if entries or push.update_type == FULL:
            out["localAuthorizationList"] = entries  # an empty Full clears the charger's list
        return out
    out = {"versionNumber": push.list_version, "updateType": push.update_type}
    if entries:  # 2.0.1 wants at least one element when the list is present
        out["localAuthorizationList"] = entries
    return out


# ---- splitting a list into messages -------------------------------------------------------------


def _chunks(entries: Sequence[ListEntry], per_message: int) -> list[tuple[ListEntry, ...]]:
    if per_message < 1:
        raise ValueError(f"a message carries at least one entry, not {per_message}")
    parts = [tuple(entries[i : i + per_message]) for i in range(0, len(entries), per_message)]
    return parts or [()]


def plan_full(entries: Sequence[ListEntry], list_version: int, per_message: int) -> tuple[Push, ...]:
    """The pushes that replace a charger's list with `entries` at `list_version`: a Full with the
    first `per_message` entries, then Differentials with the rest, numbered so that the last one
    carries `list_version`. ValueError when the version is too low to number every part.

    The versions before the last are versions of the gateway's list too: a charger that took only
    some parts says it holds one of them, so whoever sends the pushes must not build on it."""
    parts = _chunks(entries, per_message)
    first = list_version - len(parts) + 1
    if first < 1:
        raise ValueError(f"list version {list_version} cannot number {len(parts)} parts")
    return tuple(Push(FULL if i == 0 else DIFFERENTIAL, first + i, part) for i, part in enumerate(parts))


def plan_differential(
    changes: Sequence[ListEntry], from_version: int, list_version: int, per_message: int
) -> tuple[Push, ...]:
    """The Differentials that bring a charger holding `from_version` to `list_version`, the last
    one carrying `list_version`. ValueError when the versions between cannot number every part.
    The changes go by tag, not in the order they were made: a part before the last leaves the
    charger at a version whose list it does not hold."""
    parts = _chunks(changes, per_message)
    first = list_version - len(parts) + 1
    if first <= from_version:
        raise ValueError(f"versions {from_version} to {list_version} cannot number {len(parts)} parts")
    return tuple(Push(DIFFERENTIAL, first + i, part) for i, part in enumerate(parts))


def changes_between(journal: Mapping[int, ListEntry], from_version: int, to_version: int) -> tuple[ListEntry, ...] | None:
    """The latest change of each tag from `from_version` (excluded) to `to_version`, by tag; None when
    a version between is not in the journal (only a Full can then bring the charger in step)."""
    if from_version > to_version:
        return None
    latest: dict[str, ListEntry] = {}
    for v in range(from_version + 1, to_version + 1):
        entry = journal.get(v)
        if entry is None:
            return None
        latest[entry.tag] = entry
    return tuple(latest[tag] for tag in sorted(latest))


# ---- requests and answers ------------------------------------------------------------------------


def enable_request(version: str) -> tuple[str, dict[str, Any]]:
    """The request (action, payload) that switches the charger's local list on."""
    _check(version)
    if version == V16:
        return "ChangeConfiguration", {"key": "LocalAuthListEnabled", "value": "true"}
    return "SetVariables", {
        "setVariableData": [
            {"attributeValue": "true", "component": {"name": _LIST_CTRLR}, "variable": {"name": "Enabled"}}
        ]
    }


def enable_answer(version: str, response: Mapping[str, Any]) -> tuple[Support, str]:
    """What the answer to `enable_request` says, with the charger's word for it."""
    _check(version)
    if version == V16:
        word = str(response.get("status"))
        if word in ("Accepted", "RebootRequired"):
            return Support.YES, word
        return (Support.NO if word == "NotSupported" else Support.REFUSED), word
    results = response.get("setVariableResult") or [{}]
    word = str(results[0].get("attributeStatus"))
    if word in ("Accepted", "RebootRequired"):
        return Support.YES, word
    return (Support.NO if word in _UNKNOWN_VARIABLE else Support.REFUSED), word


def items_request(version: str) -> tuple[str, dict[str, Any]]:
    """The request (action, payload) for how many entries one SendLocalList may carry."""
    _check(version)
    if version == V16:
        return "GetConfiguration", {"key": ["SendLocalListMaxLength"]}
    return "GetVariables", {
        "getVariableData": [{"component": {"name": _LIST_CTRLR}, "variable": {"name": "ItemsPerMessage"}}]
    }


def items_answer(version: str, response: Mapping[str, Any], default: int = DEFAULT_ITEMS_PER_MESSAGE) -> int:
    """Entries per SendLocalList from the answer to `items_request`; `default` when it does not say."""
    _check(version)
    if version == V16:
        values = [k.get("value") for k in response.get("configurationKey") or [] if k.get("key") == "SendLocalListMaxLength"]
    else:
        values = [
            r.get("attributeValue") for r in response.get("getVariableResult") or []
            if r.get("attributeStatus") == "Accepted"
        ]
    for value in values:
        try:
            number = int(str(value).strip())
        except ValueError:
            continue
        if number >= 1:
            return number
    return default


def version_request(version: str) -> tuple[str, dict[str, Any]]:
    """The GetLocalListVersion request (action, payload)."""
    _check(version)
    return "GetLocalListVersion", {}


def version_answer(version: str, response: Mapping[str, Any]) -> int | None:
    """The list version the charger holds; None when it says it has no local list (1.6: -1)."""
    _check(version)
    number = response.get("listVersion" if version == V16 else "versionNumber")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        return None
    return number


def send_answer(version: str, response: Mapping[str, Any]) -> str:
    """The charger's verdict on a SendLocalList: Accepted, Failed, VersionMismatch or NotSupported (1.6)."""
    _check(version)
    return str(response.get("status"))


def unsupported_callerror(code: str) -> bool:
    """True when a CALLERROR code says the charger has no such message at all."""
    return code in _UNSUPPORTED_CALLERRORS
