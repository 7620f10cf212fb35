"""Charging profiles someone else set on a charger, as the gateway finds them: in a SetChargingProfile the
operator sent through it, a 2.0.1 ReportChargingProfiles, or a 1.6 composite schedule lower than the
gateway's own profiles allow (control.md, "Other people's profiles").

Pure readers of wire payloads (camelCase as sent, or the ocpp library's snake_case as received) into
`FoundProfile`s with the lowest and highest limit of their schedule in A per phase: the lowest bounds
what the gateway may give, the highest is what a car may draw where such a profile wins over the lease.
A schedule in W counts at 230 V, on three phases for the lowest and one for the highest (the side of
the fuse either way). Anything that does not read as a profile is None: it bounds nothing.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from drivers.contract.clock import parse_ts
from drivers.contract.profiles import COMPOSITE, FoundProfile
from drivers.ocpp.profiles16 import is_own_profile

VOLTAGE_V = 230.0
MAX_SCHEDULE_S = 10 * 365 * 86400  # a schedule longer than ten years is junk

_PURPOSES = {
    "ChargePointMaxProfile": "ChargePointMaxProfile",
    "ChargingStationMaxProfile": "ChargePointMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}


def _get(data: dict[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an integer past a float's range raises here
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def schedule_limits_a(schedule: Any) -> tuple[float, float] | None:
    """(lowest, highest) limit of a chargingSchedule in A per phase; None when it holds no valid period."""
    if not isinstance(schedule, dict):
        return None
    unit = _get(schedule, "chargingRateUnit", "charging_rate_unit")
    periods = _get(schedule, "chargingSchedulePeriod", "charging_schedule_period")
    if unit not in ("A", "W") or not isinstance(periods, list) or not periods:
        return None
    lows: list[float] = []
    highs: list[float] = []
    for period in periods:
        limit = _number(period.get("limit")) if isinstance(period, dict) else None
        if limit is None:
            return None
        if unit == "A":
            lows.append(limit)
            highs.append(limit)
        else:
            lows.append(limit / (VOLTAGE_V * 3))
            highs.append(limit / VOLTAGE_V)
    return min(lows), max(highs)


def read_profile(charger_id: str, connector_id: Any, profile: Any, *, own_ids: bool = False) -> FoundProfile | None:
    """A 1.6 csChargingProfiles or 2.0.1 chargingProfile someone else set; None for one that does not
    read, or one of the gateway's own (its reserved ids) unless `own_ids`."""
    if not isinstance(profile, dict) or isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
        return None
    profile_id = _get(profile, "chargingProfileId", "charging_profile_id")
    if profile_id is None:
        profile_id = profile.get("id")
    purpose = _PURPOSES.get(str(_get(profile, "chargingProfilePurpose", "charging_profile_purpose")))
    stack = _get(profile, "stackLevel", "stack_level")
    if (is_own_profile(profile_id) and not own_ids) or purpose is None or isinstance(stack, bool) or not isinstance(stack, int):
        return None
    schedule = _get(profile, "chargingSchedule", "charging_schedule")
    if isinstance(schedule, list):  # 2.0.1: a list of schedules; the first one counts (as chargers do)
        schedule = schedule[0] if schedule else None
    limits = schedule_limits_a(schedule)
    if limits is None:
        return None
    tx = _get(profile, "transactionId", "transaction_id")
    valid_to = _get(profile, "validTo", "valid_to")
    try:
        until = parse_ts(valid_to) if isinstance(valid_to, str) else None
    except ValueError:
        until = None
    return FoundProfile(
        charger_id, connector_id, profile_id if isinstance(profile_id, int) else None, purpose, stack,
        limits[0], limits[1], None if tx is None else str(tx), until,
    )


def from_request(charger_id: str, action: str, payload: dict[str, Any], *, own_ids: bool = False) -> FoundProfile | None:
    """The profile in a request the operator sent through the gateway (SetChargingProfile, or a remote
    start carrying one), marked `by_operator`, or None (see `read_profile` for `own_ids`)."""
    found = _in_request(charger_id, action, payload, own_ids)
    return None if found is None else replace(found, by_operator=True)


def _in_request(charger_id: str, action: str, payload: dict[str, Any], own_ids: bool) -> FoundProfile | None:
    if action == "SetChargingProfile":
        if "csChargingProfiles" in payload:
            return read_profile(charger_id, payload.get("connectorId"), payload["csChargingProfiles"], own_ids=own_ids)
        return read_profile(charger_id, payload.get("evseId"), payload.get("chargingProfile"), own_ids=own_ids)
    if action in ("RemoteStartTransaction", "RequestStartTransaction") and "chargingProfile" in payload:
        where = payload.get("connectorId", payload.get("evseId"))
        return read_profile(charger_id, where if where is not None else 0, payload["chargingProfile"], own_ids=own_ids)
    return None


def from_composite(charger_id: str, connector_id: int, answer: Any, own_a: float, now: datetime) -> FoundProfile | None:
    """A 1.6 GetCompositeSchedule answer (asked at `now`) that goes below `own_a` (what the gateway's own
    profiles give there) at some time: someone else's profile bounds the connector, period by period,
    for as long as the schedule says. None otherwise."""
    if not isinstance(answer, dict) or answer.get("status") != "Accepted":
        return None
    schedule = answer.get("chargingSchedule")
    limits = schedule_limits_a(schedule)
    if limits is None or limits[0] >= own_a - 0.05:
        return None
    start = now
    if isinstance(answer.get("scheduleStart"), str):
        with contextlib.suppress(ValueError):
            start = parse_ts(answer["scheduleStart"])
    steps: list[tuple[datetime, float]] = []
    for period in schedule["chargingSchedulePeriod"]:
        offset = period.get("startPeriod")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_SCHEDULE_S:
            return FoundProfile(charger_id, connector_id, None, COMPOSITE, 0, limits[0], limits[0])
        limit = _number(period.get("limit")) or 0.0  # schedule_limits_a read every limit already
        steps.append((start + timedelta(seconds=offset), limit if schedule["chargingRateUnit"] == "A" else limit / (VOLTAGE_V * 3)))
    duration = schedule.get("duration")
    until = None
    if isinstance(duration, int) and not isinstance(duration, bool) and 0 < duration <= MAX_SCHEDULE_S:
        until = start + timedelta(seconds=duration)
    return FoundProfile(charger_id, connector_id, None, COMPOSITE, 0, limits[0], limits[0], valid_to=until,
                        steps=tuple(sorted(steps)))
