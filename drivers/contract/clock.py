"""Time: the one place the daemon reads the clock, and the one wire format of times.

Every time the square writes (OCPP, MQTT, the API, the database) is UTC with milliseconds and a
`Z`: `2026-11-28T13:05:09.123Z`, which sorts as it reads. A naive datetime has no defined instant
and is refused; text without an offset (some chargers send it) is read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def wire_ts(at: datetime) -> str:
    """A time as the wire writes it: UTC, milliseconds, ending in Z; ValueError for a naive datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"time {at.isoformat()} has no timezone; wire times must be UTC")
    u = at.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def wire_ts_or_none(at: datetime | None) -> str | None:
    """`wire_ts(at)`, or None for None."""
    return None if at is None else wire_ts(at)


def parse_ts(text: str) -> datetime:
    """An ISO 8601 time (Z, an offset, or none meaning UTC) as aware UTC; ValueError if it is not one."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(cleaned)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last day Python knows in UTC
        raise ValueError(f"time {text!r} is out of range") from None


def parse_ts_or_none(text: object) -> datetime | None:
    """A device's timestamp as `parse_ts` reads it; None when it is not text or not a time."""
    if not isinstance(text, str):
        return None
    try:
        return parse_ts(text)
    except ValueError:
        return None


def local_text(at: datetime, tz_name: str) -> str:
    """A time for people (log lines, alarm texts): the square's local time with its zone."""
    return at.astimezone(ZoneInfo(tz_name)).strftime("%Y-%m-%d %H:%M:%S %Z")
