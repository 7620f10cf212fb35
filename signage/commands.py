"""The light command a fixture receives (interfaces.md §4), built from a decided Light."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from signage.rules import Light

# The fields that make a command different; `seq` and `ts` only number and date it.
COMMAND_FIELDS = ("color", "text", "pictogram", "reason")


def format_ts(dt: datetime) -> str:
    """A timezone-aware time as the wire writes it: UTC, milliseconds, `Z` (2026-11-28T13:05:09.123Z)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"time {dt.isoformat()} has no timezone; wire times must be UTC")
    u = dt.astimezone(timezone.utc)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def light_command(light: Light, seq: int, ts: datetime) -> dict[str, Any]:
    """The JSON payload for `P/bays/<bay id>/light`: colour, text, pictogram, seq, ts and reason."""
    return {
        "color": light.color,
        "text": light.text,
        "pictogram": light.pictogram,
        "seq": seq,
        "ts": format_ts(ts),
        "reason": light.reason,
    }


def same_command(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two commands show the same thing (colour, text, pictogram, reason), whatever their seq and ts."""
    return all(a.get(k) == b.get(k) for k in COMMAND_FIELDS)
