"""The words every side spells the same way: light colours, OCPP connector statuses, tag statuses.

Each is written here once; the other modules name these constants (signage.md, interfaces.md §4
and §6). The groupings every side needs (a car plugged, a fault) are here too.
"""

from __future__ import annotations

COLORS: tuple[str, ...] = ("blue", "green", "off")
"""A bay light's colours (signage.md), in the order a lights test walks them."""
BLUE, GREEN, OFF = COLORS

STATUS_WORDS = frozenset(
    {
        AVAILABLE := "Available",
        PREPARING := "Preparing",
        CHARGING := "Charging",
        SUSPENDED_EVSE := "SuspendedEVSE",
        SUSPENDED_EV := "SuspendedEV",
        FINISHING := "Finishing",
        RESERVED := "Reserved",
        UNAVAILABLE := "Unavailable",
        FAULTED := "Faulted",
    }
)
"""A connector's status words: OCPP 1.6 ChargePointStatus, also what 2.0.1 EVSEs are turned into."""
PLUGGED_STATUSES = frozenset({PREPARING, CHARGING, SUSPENDED_EVSE, SUSPENDED_EV, FINISHING})
"""A car is plugged in."""
SESSION_STATUSES = frozenset({PREPARING, CHARGING, SUSPENDED_EVSE})
"""A car is plugged in and its session is not over."""
FAULT_STATUSES = frozenset({FAULTED, UNAVAILABLE})
"""The connector cannot charge."""

TOKEN_STATUSES: tuple[str, ...] = ("Accepted", "Blocked", "Expired", "Invalid")
"""What the gateway may answer for an id tag (OCPP AuthorizationStatus, as kept in the token list)."""
ACCEPTED, BLOCKED, EXPIRED, INVALID = TOKEN_STATUSES
