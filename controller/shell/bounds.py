"""Other people's charging profiles on the square's chargers, kept as bounds (control.md, "Other
people's profiles"): the gateway's safe default and leases for a connector never exceed what they
allow, and a TxProfile at or above the lease's stack level, which the charger follows instead of the lease,
makes the connector count at that profile's own limit.

Profiles are learned from the operator's requests through the admin API, from a 2.0.1 charger's
ReportChargingProfiles, and from a 1.6 charger's composite schedule at set-up
(`drivers.ocpp.found_profiles`); they are kept in memory and found again at the next set-up.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from drivers.contract.profiles import COMPOSITE, FoundProfile
from drivers.ocpp.profiles16 import LEASE_STACK_LEVEL, SAFE_DEFAULT_STACK_LEVEL

log = logging.getLogger("laadplein.charging")

MAX_PER_CHARGER = 64
"""Profiles of someone else's kept per charger (OCPP chargers hold a few per connector)."""


class OperatorBounds:
    """Per charger, the profiles of someone else's it is known to hold."""

    def __init__(self) -> None:
        self._held: dict[str, list[FoundProfile]] = {}
        self.touched: dict[str, int] = {}
        """charger -> how many profile requests of the operator's it accepted: each may have replaced or
        cleared one of the gateway's own, so what the gateway remembers of its set-up is void."""

    def operator_request(self, charger_id: str) -> None:
        """The charger accepted a SetChargingProfile or ClearChargingProfile the operator sent."""
        self.touched[charger_id] = self.touched.get(charger_id, 0) + 1

    def found(self, profile: FoundProfile, transaction_id: str | None = None) -> None:
        """A profile someone else set; a TxProfile without a transaction binds to `transaction_id` (the
        connector's transaction now). As OCPP does, it replaces one with the same id, or (1.6) with the
        same connector, purpose and stack level."""
        if profile.purpose == "TxProfile" and profile.transaction_id is None and transaction_id is not None:
            profile = FoundProfile(**{**profile.__dict__, "transaction_id": transaction_id})
        kept = [
            p for p in self._held.get(profile.charger_id, [])
            if not (
                (profile.profile_id is not None and p.profile_id == profile.profile_id)
                or (p.connector_id == profile.connector_id and p.purpose == profile.purpose
                    and p.stack_level == profile.stack_level)
            )
        ]
        # a charger reporting ever more profiles grows nothing without end: the oldest go
        self._held[profile.charger_id] = [*kept, profile][-MAX_PER_CHARGER:]
        log.info(
            "charger %s/%d holds someone else's %s (id %s, stack level %d): %.1f-%.1f A, kept as a bound",
            profile.charger_id, profile.connector_id, profile.purpose, profile.profile_id, profile.stack_level,
            profile.low_a, profile.high_a,
        )

    def composite(self, charger_id: str, connector_id: int, profile: FoundProfile | None) -> None:
        """What a 1.6 charger's composite schedule showed for a connector: a bound below the gateway's own
        profiles, or None when nothing of anyone else's limits it more."""
        held = [p for p in self._held.get(charger_id, []) if not (p.purpose == COMPOSITE and p.connector_id == connector_id)]
        if profile is not None and profile not in self._held.get(charger_id, []):
            log.info("charger %s/%d: its composite schedule allows only %.1f A: someone else's profile, kept as a bound",
                     charger_id, connector_id, profile.low_a)
        self._held[charger_id] = held + ([profile] if profile is not None else [])

    def cleared(self, charger_id: str, request: dict[str, Any]) -> None:
        """A ClearChargingProfile the charger accepted: forget what it matched (1.6 or 2.0.1 words)."""
        criteria = request.get("chargingProfileCriteria") if isinstance(request.get("chargingProfileCriteria"), dict) else request
        profile_id = request.get("id", request.get("chargingProfileId"))
        connector = criteria.get("connectorId", criteria.get("evseId"))
        purpose = criteria.get("chargingProfilePurpose")
        if purpose == "ChargingStationMaxProfile":
            purpose = "ChargePointMaxProfile"
        stack = criteria.get("stackLevel")

        def matches(p: FoundProfile) -> bool:
            if p.purpose == COMPOSITE:
                return False
            if profile_id is not None:
                return p.profile_id == profile_id
            return ((connector is None or p.connector_id == connector) and (purpose is None or p.purpose == purpose)
                    and (stack is None or p.stack_level == stack))

        self._held[charger_id] = [p for p in self._held.get(charger_id, []) if not matches(p)]

    def forget_composites(self, charger_id: str) -> None:
        """What a 1.6 charger's composite schedules showed is void (its profiles changed): read again."""
        self._held[charger_id] = [p for p in self._held.get(charger_id, []) if p.purpose != COMPOSITE]

    def transaction_ended(self, charger_id: str, connector_id: int) -> None:
        """A connector's transaction ended: its TxProfiles ended with it."""
        held = self._held.get(charger_id)
        if held:
            self._held[charger_id] = [p for p in held if not (p.purpose == "TxProfile" and p.connector_id == connector_id)]

    def _in_force(self, charger_id: str, connector_id: int, transaction_id: str | None, now: datetime) -> list[FoundProfile]:
        return [
            p for p in self._held.get(charger_id, [])
            if p.connector_id in (0, connector_id)
            and (p.valid_to is None or p.valid_to > now)
            # a TxProfile bound to no transaction yet (a remote start carrying it) is the next one's
            and (p.purpose != "TxProfile" or (transaction_id is not None and p.transaction_id in (None, transaction_id)))
        ]

    def cap_a(self, charger_id: str, connector_id: int, transaction_id: str | None, now: datetime) -> float | None:
        """The most the gateway may give the connector (A per phase), None without a bound."""
        lows = [p.low_at(now) for p in self._in_force(charger_id, connector_id, transaction_id, now)]
        return min(lows) if lows else None

    def default_a(self, charger_id: str, connector_id: int, now: datetime) -> float | None:
        """The most a car may draw (A per phase) under someone else's TxDefaultProfile, which the charger
        may follow wherever no TxProfile holds (one above the safe default's stack level wins over it,
        one at its level replaced it on a 1.6 charger); None without one."""
        highs = [p.high_a for p in self._in_force(charger_id, connector_id, None, now) if p.purpose == "TxDefaultProfile"]
        return max(highs) if highs else None

    def holds_default_slot(self, charger_id: str, connector_id: int) -> bool:
        """The operator's TxDefaultProfile sits at the safe default's stack level on this very connector
        (EVSE): sending the safe default there would replace it (1.6) or be refused (2.0.1). Only one
        the operator sent counts: a charger that merely says it holds one would otherwise keep its
        connector without a safe default (a 2.0.1 station that really holds one refuses the safe
        default, and is then counted at its maximum)."""
        return any(
            p.by_operator and p.purpose == "TxDefaultProfile" and p.stack_level == SAFE_DEFAULT_STACK_LEVEL
            and p.connector_id == connector_id
            for p in self._held.get(charger_id, [])
        )

    def over_a(self, charger_id: str, connector_id: int, transaction_id: str | None, now: datetime) -> float | None:
        """What the car may draw (A per phase) under a TxProfile of someone else's above the lease's stack
        level, which the charger follows instead of the lease; None when there is none."""
        highs = [
            p.high_a for p in self._in_force(charger_id, connector_id, transaction_id, now)
            # at the lease's own stack level too: 1.6 replaces the lease with it (same level and purpose)
            if p.purpose == "TxProfile" and p.stack_level >= LEASE_STACK_LEVEL
        ]
        return max(highs) if highs else None
