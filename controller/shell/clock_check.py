"""Is the gateway's wall clock to be trusted with leases? Leases are absolute times on the wire.

A clock before the release date, or one that jumped, is not sane: only safe defaults hold until it is.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from drivers.contract.clock import wire_ts

log = logging.getLogger("laadplein.cycle")

RELEASE_DATE = datetime(2026, 11, 1, tzinfo=UTC)
"""A gateway clock before this is wrong: the software did not exist yet."""
CLOCK_JUMP_S = 60.0
"""A difference between the wall clock and the monotonic clock beyond this is a jump."""
CLOCK_SETTLE_S = 300.0
"""After a jump, how long the clock must run steadily to count as sane again."""


class ClockCheck:
    """Is the gateway's clock sane? Not before the release date, no jump of more than a minute.

    After a jump the clock counts as sane again once it has run steadily for CLOCK_SETTLE_S.
    """

    def __init__(self) -> None:
        self.sane = True
        self.why = ""
        self.since: datetime | None = None
        self._last: tuple[datetime, float] | None = None
        self._jump_at_s: float | None = None

    def observe(self, now: datetime, mono_s: float) -> bool:
        """Take the wall clock `now` and the monotonic clock; True when leases may rely on the wall clock."""
        jumped = False
        if self._last is not None:
            wall_s = (now - self._last[0]).total_seconds()
            drift_s = wall_s - (mono_s - self._last[1])
            if abs(drift_s) > CLOCK_JUMP_S:
                jumped = True
                self._jump_at_s = mono_s
                self.why = f"it jumped by {drift_s:+.0f} s"
        self._last = (now, mono_s)
        before = self.sane
        if now < RELEASE_DATE:
            self.sane, self.why = False, f"{wire_ts(now)} is before this software's release"
        elif jumped or (self._jump_at_s is not None and mono_s - self._jump_at_s < CLOCK_SETTLE_S):
            self.sane = False
        else:
            self.sane, self._jump_at_s = True, None
        if before != self.sane:
            self.since = now
            if self.sane:
                log.info("gateway clock sane again")
            else:
                log.error("gateway clock not sane: %s; only safe defaults until it is", self.why)
        return self.sane
