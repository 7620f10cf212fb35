"""The orders the power-sharing core gives and the OCPP driver turns into charging profiles."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULE_LEAD_S = 5.0
"""Absolute leases start this long before they are sent, so that they are in force on arrival."""


@dataclass(frozen=True)
class Order:
    """A lease to send: `limit_a` until the first period ends, then `grid_only_a`, until the lease ends.

    `why`: first | decrease | increase | renew. `first_period_s` is counted from the schedule's
    start (SCHEDULE_LEAD_S before sending); None when the whole lease holds `limit_a`.
    """

    key: str
    limit_a: float
    grid_only_a: float
    why: str
    first_period_s: float | None = None
