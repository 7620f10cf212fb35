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
