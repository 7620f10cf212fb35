"""Time helpers: the one place the daemon reads the clock, and the wire format of times."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def wire_ts(dt: datetime) -> str:
    """A time as the wire wants it: UTC, milliseconds, ending in Z (2026-11-28T13:05:09.123Z)."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """Parse an ISO 8601 time (Z, an offset, or naive meaning UTC) into aware UTC; ValueError if not a time."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def local_text(dt: datetime, tz_name: str) -> str:
    """A time for people (log lines, alarm texts): the square's local time with its zone."""
    from zoneinfo import ZoneInfo

    return dt.astimezone(ZoneInfo(tz_name)).strftime("%Y-%m-%d %H:%M:%S %Z")
