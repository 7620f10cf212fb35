"""OCPP 1.6J payloads of the gateway's smart charging: the safe default, leases, the fallback, set-up.

Pure builders (camelCase payloads as on the wire) and readers of the chargers' answers. Profile
ids and stack levels are fixed per connector so that a renewal replaces the lease before it. Every
id the gateway gives a profile lies in a range reserved for it (control.md, "Other people's
profiles"), so that it can clear its own by id and never touches a profile someone else set.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from drivers.contract.clock import wire_ts
from drivers.contract.orders import SCHEDULE_LEAD_S, Order

SAFE_DEFAULT_STACK_LEVEL = 0
LEASE_STACK_LEVEL = 1
OWN_PROFILE_IDS = range(990000, 1_000_000)
"""The chargingProfileIds the gateway uses; a profile outside them was set by someone else."""
SAFE_DEFAULT_ID_BASE = 990000
LEASE_ID_BASE = 991000
MAX_PROFILE_ID = 999999
SAMPLED_DATA = "Current.Import,Power.Active.Import,Energy.Active.Import.Register,Current.Offered"
SAMPLED_DATA_BASIC = "Current.Import,Power.Active.Import,Energy.Active.Import.Register"
ROTATION_PHASE = {"R": 0, "S": 1, "T": 2}


def safe_default_profile_id(connector_id: int) -> int:
    """The chargingProfileId of a connector's safe default (TxDefaultProfile)."""
    return SAFE_DEFAULT_ID_BASE + connector_id


def lease_profile_id(connector_id: int) -> int:
    """The chargingProfileId of a connector's lease (TxProfile): a renewal replaces it."""
    return LEASE_ID_BASE + connector_id


def is_own_profile(profile_id: object) -> bool:
    """True for a chargingProfileId from the gateway's reserved range."""
    return isinstance(profile_id, int) and not isinstance(profile_id, bool) and profile_id in OWN_PROFILE_IDS


def safe_default(connector_id: int, limit_a: float) -> dict:
    """SetChargingProfile: the safe default (A per phase) of one connector, at the lowest stack level.

    Relative with one period from 0 and no duration: it holds for every transaction, whenever it
    starts, until it is replaced.
    """
    return {
        "connectorId": connector_id,
        "csChargingProfiles": {
            "chargingProfileId": safe_default_profile_id(connector_id),
            "stackLevel": SAFE_DEFAULT_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": _a(limit_a)}],
            },
        },
    }


def charger_max(limit_a: float, now: datetime) -> dict:
    """SetChargingProfile: a ChargePointMaxProfile (A per phase) for the whole charger (never expires).

    Absolute from `now` without a duration: chargers (libocpp among them) refuse a Relative one.
    """
    return {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": MAX_PROFILE_ID,
            "stackLevel": SAFE_DEFAULT_STACK_LEVEL,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "startSchedule": wire_ts(now - timedelta(seconds=SCHEDULE_LEAD_S)),
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": _a(limit_a)}],
            },
        },
    }


def lease(order: Order, connector_id: int, transaction_id: int, now: datetime, lease_s: float) -> dict:
    """SetChargingProfile: a lease as a TxProfile, Absolute from `now` - 5 s, lasting `lease_s`.

    With a first period (a limit that relies on the battery) the schedule drops to the grid-only
    share when it ends.
    """
    periods = [{"startPeriod": 0, "limit": _a(order.limit_a)}]
    if order.first_period_s is not None and order.grid_only_a < order.limit_a:
        periods.append({"startPeriod": int(order.first_period_s), "limit": _a(order.grid_only_a)})
    start = now - timedelta(seconds=SCHEDULE_LEAD_S)
    return {
        "connectorId": connector_id,
        "csChargingProfiles": {
            "chargingProfileId": lease_profile_id(connector_id),
            "transactionId": transaction_id,
            "stackLevel": LEASE_STACK_LEVEL,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            # the lease's end said twice: a charger that ignores the schedule's duration honours validTo
            "validFrom": wire_ts(start),
            "validTo": wire_ts(start + timedelta(seconds=int(lease_s))),
            "chargingSchedule": {
                "duration": int(lease_s),
                "startSchedule": wire_ts(start),
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": periods,
            },
        },
    }


def meter_settings(meter_interval_s: int) -> list[dict]:
    """ChangeConfiguration payloads for the meter values the control loop needs."""
    return [
        {"key": "MeterValueSampleInterval", "value": str(meter_interval_s)},
        {"key": "MeterValuesSampledData", "value": SAMPLED_DATA},
    ]


def phase_rotation(answer: dict, connectors: int) -> dict[int, str]:
    """Connector -> rotation ("RST", ...) from a GetConfiguration answer for ConnectorPhaseRotation.

    The value lists "<connector>.<rotation>" entries ("0.RST, 1.RST, 2.STR"); connector 0 applies
    to all. Unknown, NotApplicable and malformed entries are left out.
    """
    out: dict[int, str] = {}
    items = answer.get("configurationKey") if isinstance(answer, dict) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("key") != "ConnectorPhaseRotation":
            continue
        for part in str(item.get("value") or "").split(","):
            number, _, rotation = part.strip().partition(".")
            if not number.isdigit() or len(rotation) != 3 or set(rotation) != set("RST"):
                continue
            n = int(number)
            targets = range(1, connectors + 1) if n == 0 else [n] if 1 <= n <= connectors else []
            for c in targets:
                if n != 0 or c not in out:
                    out[c] = rotation
    return out


def grid_phase(rotation: str | None, charger_phase: int) -> int:
    """The grid phase (0-2) that a charger phase (0-2) is wired to, by its rotation (RST when unknown)."""
    letters = rotation or "RST"
    return ROTATION_PHASE[letters[charger_phase]]


def _a(limit_a: float) -> float:
    """A limit on the 0.1 A step of the schema, rounded down (a charger maximum of 16.66 A is 16.6 A)."""
    return math.floor(float(limit_a) * 10 + 1e-9) / 10
