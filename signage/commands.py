"""The light command a fixture receives (interfaces.md §4), built from a decided Light."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from drivers.contract.clock import wire_ts
from signage.rules import Light

# The fields that make a command different; `seq` and `ts` only number and date it.
COMMAND_FIELDS = ("color", "text", "pictogram", "reason")


def light_command(light: Light, seq: int, ts: datetime) -> dict[str, Any]:
    """The JSON payload for `P/bays/<bay id>/light`: colour, text, pictogram, seq, ts and reason."""
    return {
        "color": light.color,
        "text": light.text,
        "pictogram": light.pictogram,
        "seq": seq,
        "ts": wire_ts(ts),
        "reason": light.reason,
    }


def same_command(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two commands show the same thing (colour, text, pictogram, reason), whatever their seq and ts."""
    return all(a.get(k) == b.get(k) for k in COMMAND_FIELDS)
