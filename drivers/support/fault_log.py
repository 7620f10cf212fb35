"""Log a fault once per source and kind a minute, saying how many like it were held back: a
charger or sensor that repeats a bad message a thousand times a second must not fill the
gateway's disk, and one line a minute tells the technician as much."""

from __future__ import annotations

import logging
import math
import time

FAULT_LOG_INTERVAL_S = 60.0


class FaultLog:
    """Which faults get a log line: the first of each (charger, kind) per `interval_s`, then one saying how many followed.

    A charger that sends the same bad message a thousand times a second must not fill the disk
    with a thousand lines a second; one line a minute tells the technician as much.
    """

    def __init__(self, interval_s: float = FAULT_LOG_INTERVAL_S, max_keys: int = 4096) -> None:
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (last logged at, held back since)

    def admit(self, charger_id: str, kind: str, now_s: float) -> int | None:
        """None: hold this one back. Otherwise log it, mentioning the returned number held back since the last line."""
        key = (charger_id, kind)
        last, held = self._seen.get(key, (-math.inf, 0))
        if now_s - last < self.interval_s:
            self._seen[key] = (last, held + 1)
            return None
        if key not in self._seen and len(self._seen) >= self._max_keys:
            # forget the quiet ones rather than grow without bound
            self._seen = {k: v for k, v in self._seen.items() if now_s - v[0] < self.interval_s}
        self._seen[key] = (now_s, 0)
        return held

    def log(self, logger: logging.Logger, level: int, source: str, kind: str, msg: str, *args: object,
            exc_info: bool = False) -> None:
        """Log `msg % args` unless held back, saying how many like it were held back since the last line."""
        held = self.admit(source, kind, time.monotonic())
        if held is None:
            return
        more = f" ({held} more like it in the last minute)" if held else ""
        logger.log(level, msg + "%s", *args, more, exc_info=exc_info)
