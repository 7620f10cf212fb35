"""A charging profile someone else set on a charger, as the drivers hand it to the square: its place,
its purpose and stack level, and the lowest and highest limit of its schedule (A per phase)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

COMPOSITE = "Composite"
"""The purpose of a bound read from a 1.6 composite schedule (what the charger holds, all profiles combined)."""


@dataclass(frozen=True)
class FoundProfile:
    """One profile of someone else's on a charger (`connector_id` 0: the whole charger)."""

    charger_id: str
    connector_id: int
    profile_id: int | None  # None for a composite schedule
    purpose: str  # ChargePointMaxProfile (2.0.1's station max too), TxDefaultProfile, TxProfile, Composite
    stack_level: int
    low_a: float
    high_a: float
    transaction_id: str | None = None
    valid_to: datetime | None = None
    by_operator: bool = False
    """Sent by the operator through the gateway (and so known to be on the charger), not the charger's word."""
    steps: tuple[tuple[datetime, float], ...] = ()
    """A composite schedule's limit from each time on (A per phase); empty: `low_a` throughout."""

    def low_at(self, now: datetime) -> float:
        """The lowest limit it allows at `now` (A per phase)."""
        current = [limit_a for at, limit_a in self.steps if at <= now]
        return current[-1] if current else self.low_a
