"""OCPP 2.0.1 payloads of the gateway's smart charging: the safe default, leases, the fallback, set-up.

The same profiles as `drivers.ocpp.profiles16` (same ids, stack levels and schedules, control.md),
in 2.0.1's shape: EVSEs instead of connectors, a list of schedules with ids, the transaction named
by the charger's own string id, and the device model's variables instead of configuration keys.
Pure builders (camelCase payloads as on the wire) and readers of the chargers' answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from drivers.contract.clock import wire_ts
from drivers.contract.orders import SCHEDULE_LEAD_S, Order
from drivers.ocpp.profiles16 import (
    LEASE_STACK_LEVEL,
    MAX_PROFILE_ID,
    SAFE_DEFAULT_STACK_LEVEL,
    SAMPLED_DATA,
    SAMPLED_DATA_BASIC,
    _a,
    lease_profile_id,
    safe_default_profile_id,
)

ENERGY = "Energy.Active.Import.Register"
ROTATIONS = frozenset({"RST", "RTS", "SRT", "STR", "TRS", "TSR"})


def clear_profile(profile_id: int) -> dict:
    """ClearChargingProfile of one profile by its id."""
    return {"chargingProfileId": profile_id}


def _profile(profile_id: int, stack_level: int, purpose: str, kind: str, schedule: dict, transaction_id: str | None = None) -> dict:
    profile: dict[str, Any] = {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [{"id": profile_id, "chargingRateUnit": "A", **schedule}],
    }
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    return profile


def safe_defaults(limits_a: dict[int, float]) -> list[dict]:
    """SetChargingProfile payloads of the safe defaults (A per phase) of a charger's EVSEs.

    One TxDefaultProfile on EVSE 0 (it then holds on every EVSE) when all EVSEs get the same
    limit, else one per EVSE. Relative with one period from 0 and no duration: it holds for every
    transaction, whenever it starts, until it is replaced.
    """
    schedule = lambda limit_a: {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": _a(limit_a)}]}
    shares = {_a(limit_a) for limit_a in limits_a.values()}
    if len(shares) == 1:
        (limit_a,) = shares
        return [{"evseId": 0, "chargingProfile": _profile(safe_default_profile_id(0), SAFE_DEFAULT_STACK_LEVEL, "TxDefaultProfile", "Relative", schedule(limit_a))}]
    return [
        {"evseId": n, "chargingProfile": _profile(safe_default_profile_id(n), SAFE_DEFAULT_STACK_LEVEL, "TxDefaultProfile", "Relative", schedule(limit_a))}
        for n, limit_a in sorted(limits_a.items())
    ]


def charger_max(limit_a: float, now: datetime) -> dict:
    """SetChargingProfile: a ChargingStationMaxProfile (A per phase) for the whole charger (never expires)."""
    schedule = {
        "startSchedule": wire_ts(now - timedelta(seconds=SCHEDULE_LEAD_S)),
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": _a(limit_a)}],
    }
    return {"evseId": 0, "chargingProfile": _profile(MAX_PROFILE_ID, SAFE_DEFAULT_STACK_LEVEL, "ChargingStationMaxProfile", "Absolute", schedule)}


def lease(order: Order, evse_id: int, transaction_id: str, now: datetime, lease_s: float) -> dict:
    """SetChargingProfile: a lease as a TxProfile of the charger's transaction, Absolute from `now` - 5 s,
    lasting `lease_s`; with a first period it drops to the grid-only share when that ends."""
    periods = [{"startPeriod": 0, "limit": _a(order.limit_a)}]
    if order.first_period_s is not None and order.grid_only_a < order.limit_a:
        periods.append({"startPeriod": int(order.first_period_s), "limit": _a(order.grid_only_a)})
    schedule = {
        "duration": int(lease_s),
        "startSchedule": wire_ts(now - timedelta(seconds=SCHEDULE_LEAD_S)),
        "chargingSchedulePeriod": periods,
    }
    profile_id = lease_profile_id(evse_id)
    return {"evseId": evse_id, "chargingProfile": _profile(profile_id, LEASE_STACK_LEVEL, "TxProfile", "Absolute", schedule, transaction_id)}


def _variable(component: str, variable: str, value: str | None = None, evse_id: int | None = None) -> dict:
    entry: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if evse_id is not None:
        entry["component"]["evse"] = {"id": evse_id}
    if value is not None:
        entry["attributeValue"] = value
    return entry


def meter_settings(meter_interval_s: int, *, basic: bool = False) -> dict:
    """SetVariables: transaction meter values every `meter_interval_s` with the measurands the loop needs."""
    return {
        "setVariableData": [
            _variable("SampledDataCtrlr", "TxUpdatedInterval", str(meter_interval_s)),
            _variable("SampledDataCtrlr", "TxUpdatedMeasurands", SAMPLED_DATA_BASIC if basic else SAMPLED_DATA),
            # the register at the start and the end: a session's energy is their difference
            _variable("SampledDataCtrlr", "TxStartedMeasurands", ENERGY),
            _variable("SampledDataCtrlr", "TxEndedMeasurands", ENERGY),
        ]
    }


def refused_settings(answer: dict) -> dict[str, str]:
    """Variable name -> status, for every SetVariables result not Accepted (RebootRequired counts as accepted)."""
    out: dict[str, str] = {}
    results = answer.get("setVariableResult") if isinstance(answer, dict) else None
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict):
            continue
        status = result.get("attributeStatus")
        name = (result.get("variable") or {}).get("name") if isinstance(result.get("variable"), dict) else None
        if status not in ("Accepted", "RebootRequired"):
            out[str(name)] = str(status)
    return out


def rotation_query(evses: int) -> dict:
    """GetVariables: PhaseRotation of the charging station and of each EVSE."""
    return {
        "getVariableData": [_variable("ChargingStation", "PhaseRotation")]
        + [_variable("EVSE", "PhaseRotation", evse_id=n) for n in range(1, evses + 1)]
    }


def phase_rotation(answer: dict, evses: int) -> dict[int, str]:
    """EVSE -> rotation ("RST", ...) from a GetVariables answer; an EVSE's own value wins over the station's."""
    station: str | None = None
    own: dict[int, str] = {}
    results = answer.get("getVariableResult") if isinstance(answer, dict) else None
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("attributeStatus") != "Accepted":
            continue
        value = str(result.get("attributeValue") or "").strip().upper()
        component = result.get("component") if isinstance(result.get("component"), dict) else {}
        if value not in ROTATIONS:
            continue
        evse = component.get("evse") if isinstance(component.get("evse"), dict) else None
        if component.get("name") == "EVSE" and evse is not None and isinstance(evse.get("id"), int):
            if 1 <= evse["id"] <= evses:
                own[evse["id"]] = value
        elif component.get("name") == "ChargingStation":
            station = value
    return {n: own.get(n, station) for n in range(1, evses + 1) if own.get(n, station) is not None}  # type: ignore[misc]
