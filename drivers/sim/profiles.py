"""Charging profiles as a charger applies them (OCPP 1.6 §3.13, 2.0.1 K): install, replace, clear, and the limit in force.

A 2.0.1 profile is read into the same Profile (its ChargingStationMaxProfile is the 1.6
ChargePointMaxProfile, EVSE ids are the connectors); the rules are the same in both versions.
Pure: no I/O, no clock (every time is an argument), so the simulated charger and the tests get the
same answer for the same inputs. What the charger does with the limit is `drivers.sim.charger_math`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from drivers.contract.clock import wire_ts

VOLTAGE_V = 230.0
"""Phase voltage used to turn a limit in W into A."""
MIN_CURRENT_A = 6.0
"""IEC 61851: below this a car does not charge."""

MAX_PURPOSE = "ChargePointMaxProfile"
MAX_PURPOSE_201 = "ChargingStationMaxProfile"
DEFAULT_PURPOSE = "TxDefaultProfile"
TX_PURPOSE = "TxProfile"
PURPOSES = (MAX_PURPOSE, DEFAULT_PURPOSE, TX_PURPOSE)
KINDS = ("Absolute", "Relative", "Recurring")
RECURRENCY_S = {"Daily": 86_400, "Weekly": 7 * 86_400}


@dataclass(frozen=True)
class Period:
    """One schedule period: from `start_s` (seconds after the schedule's start) the limit in the profile's unit."""

    start_s: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class Profile:
    """A charging profile (csChargingProfiles) as the charger holds it; times are aware UTC."""

    profile_id: int
    stack_level: int
    purpose: str
    kind: str
    rate_unit: str  # "A" or "W"
    periods: tuple[Period, ...]
    transaction_id: int | str | None = None  # 1.6: the gateway's integer; 2.0.1: the charger's string
    recurrency: str | None = None  # "Daily" / "Weekly" for kind Recurring
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    start_schedule: datetime | None = None
    duration_s: int | None = None
    min_rate: float | None = None


def _field(payload: dict[str, Any], camel: str) -> Any:
    """A field by its OCPP name or by the snake_case name the `ocpp` library hands to handlers."""
    if camel in payload:
        return payload[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return payload.get(snake)


def _int(value: Any, name: str, *, minimum: int = 0, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def _number(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    # the `ocpp` library reads JSON decimals as Decimal
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not 0 <= float(value) < math.inf:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    return float(value)


def _time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip())  # 3.11 reads the Z suffix
        except ValueError:
            raise ValueError(f"{name} is not a time: {value!r}") from None
    else:
        raise ValueError(f"{name} is not a time: {value!r}")
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def parse_profile(cs_charging_profiles: dict[str, Any]) -> Profile:
    """The Profile in an OCPP csChargingProfiles object (camelCase or snake_case keys); ValueError if it is not valid."""
    if not isinstance(cs_charging_profiles, dict):
        raise ValueError("a charging profile must be an object")
    p = cs_charging_profiles
    purpose, kind = _field(p, "chargingProfilePurpose"), _field(p, "chargingProfileKind")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown chargingProfilePurpose {purpose!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown chargingProfileKind {kind!r}")
    recurrency = _field(p, "recurrencyKind")
    if kind == "Recurring" and recurrency not in RECURRENCY_S:
        raise ValueError(f"a Recurring profile needs recurrencyKind Daily or Weekly, not {recurrency!r}")
    transaction_id = _int(_field(p, "transactionId"), "transactionId", optional=True)
    if transaction_id is not None and purpose != TX_PURPOSE:
        raise ValueError("transactionId is only valid in a TxProfile")
    schedule = _field(p, "chargingSchedule")
    if not isinstance(schedule, dict):
        raise ValueError("chargingSchedule is missing")
    unit = _field(schedule, "chargingRateUnit")
    if unit not in ("A", "W"):
        raise ValueError(f"chargingRateUnit must be A or W, not {unit!r}")
    raw_periods = _field(schedule, "chargingSchedulePeriod")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise ValueError("chargingSchedulePeriod needs at least one period")
    periods = []
    for raw in raw_periods:
        if not isinstance(raw, dict):
            raise ValueError("a schedule period must be an object")
        phases = _int(_field(raw, "numberPhases"), "numberPhases", minimum=1, optional=True)
        if phases is not None and phases > 3:
            raise ValueError(f"numberPhases must be 1 to 3, not {phases}")
        start = _int(_field(raw, "startPeriod"), "startPeriod")
        periods.append(Period(start, _number(_field(raw, "limit"), "limit"), phases))  # type: ignore[arg-type]
    if periods[0].start_s != 0:
        raise ValueError("the first period must start at 0")
    if any(b.start_s <= a.start_s for a, b in zip(periods, periods[1:])):
        raise ValueError("startPeriod must increase from period to period")
    start_schedule = _time(_field(schedule, "startSchedule"), "startSchedule")
    if kind == "Recurring" and start_schedule is None:
        raise ValueError("a Recurring profile needs startSchedule")
    valid_from, valid_to = _time(_field(p, "validFrom"), "validFrom"), _time(_field(p, "validTo"), "validTo")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise ValueError("validTo must be after validFrom")
    return Profile(
        profile_id=_int(_field(p, "chargingProfileId"), "chargingProfileId", minimum=-(2**31)),  # type: ignore[arg-type]
        stack_level=_int(_field(p, "stackLevel"), "stackLevel"),  # type: ignore[arg-type]
        purpose=purpose,
        kind=kind,
        rate_unit=unit,
        periods=tuple(periods),
        transaction_id=transaction_id,
        recurrency=recurrency if kind == "Recurring" else None,
        valid_from=valid_from,
        valid_to=valid_to,
        start_schedule=start_schedule,
        duration_s=_int(_field(schedule, "duration"), "duration", optional=True),
        min_rate=_number(_field(schedule, "minChargingRate"), "minChargingRate", optional=True),
    )


def parse_profile201(charging_profile: dict[str, Any]) -> Profile:
    """The Profile in an OCPP 2.0.1 chargingProfile (camelCase or snake_case keys); ValueError if it is not valid.

    Its chargingSchedule is a list: more than one schedule is offered for an ISO 15118 car to
    choose from, which a charger without 15118 does not do, so it follows the first. A TxProfile
    names its transaction (K01.FR.03); ChargingStationExternalConstraints is the station's own.
    """
    if not isinstance(charging_profile, dict):
        raise ValueError("a charging profile must be an object")
    p = charging_profile
    schedules = _field(p, "chargingSchedule")
    if not isinstance(schedules, list) or not schedules:
        raise ValueError("chargingSchedule needs at least one schedule")
    named = _field(p, "chargingProfilePurpose")
    if named not in (MAX_PURPOSE_201, DEFAULT_PURPOSE, TX_PURPOSE):
        raise ValueError(f"chargingProfilePurpose {named!r} cannot be set by the CSMS")
    purpose = purpose201(named)
    transaction_id = _field(p, "transactionId")
    if transaction_id is not None and (not isinstance(transaction_id, str) or not 0 < len(transaction_id) <= 36):
        raise ValueError(f"transactionId must be a string of 1 to 36 characters, not {transaction_id!r}")
    if purpose == TX_PURPOSE and transaction_id is None:
        raise ValueError("a TxProfile must name its transaction")
    if transaction_id is not None and purpose != TX_PURPOSE:
        raise ValueError("transactionId is only valid in a TxProfile")
    as_v16 = {
        "chargingProfileId": _field(p, "id"),
        "stackLevel": _field(p, "stackLevel"),
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": _field(p, "chargingProfileKind"),
        "recurrencyKind": _field(p, "recurrencyKind"),
        "validFrom": _field(p, "validFrom"),
        "validTo": _field(p, "validTo"),
        "chargingSchedule": schedules[0],
    }
    return replace(parse_profile(as_v16), transaction_id=transaction_id)


def purpose201(name: str | None) -> str | None:
    """A 2.0.1 chargingProfilePurpose in the words the ProfileStore keeps (None stays None)."""
    return MAX_PURPOSE if name == MAX_PURPOSE_201 else name


def profile_wire201(profile: Profile) -> dict[str, Any]:
    """A held profile as a 2.0.1 ChargingProfileType (the ocpp library's snake_case), for ReportChargingProfiles."""
    schedule: dict[str, Any] = {
        "id": profile.profile_id, "charging_rate_unit": profile.rate_unit,
        "charging_schedule_period": [{"start_period": p.start_s, "limit": p.limit} for p in profile.periods],
    }
    if profile.start_schedule is not None:
        schedule["start_schedule"] = wire_ts(profile.start_schedule)
    if profile.duration_s is not None:
        schedule["duration"] = profile.duration_s
    wire: dict[str, Any] = {
        "id": profile.profile_id, "stack_level": profile.stack_level, "charging_profile_kind": profile.kind,
        "charging_profile_purpose": MAX_PURPOSE_201 if profile.purpose == MAX_PURPOSE else profile.purpose,
        "charging_schedule": [schedule],
    }
    if profile.transaction_id is not None:
        wire["transaction_id"] = str(profile.transaction_id)
    return wire


# --- one profile at one moment ----------------------------------------------------------------


def schedule_start(profile: Profile, now: datetime, tx_start: datetime | None) -> datetime:
    """When the profile's schedule (or, for Recurring, its current recurrence) began, as seen at `now`.

    Absolute counts from startSchedule; Relative, and Absolute without startSchedule (1.6: "if
    absent the schedule will be relative to start of charging"), from the transaction's start,
    or from `now` when no transaction runs.
    """
    if profile.kind == "Recurring":
        assert profile.start_schedule is not None and profile.recurrency is not None
        cycle_s = RECURRENCY_S[profile.recurrency]
        cycles = (now - profile.start_schedule).total_seconds() // cycle_s
        return profile.start_schedule + timedelta(seconds=cycles * cycle_s)
    if profile.kind == "Absolute" and profile.start_schedule is not None:
        return profile.start_schedule
    return tx_start if tx_start is not None else now


def profile_limit_a(profile: Profile, now: datetime, tx_start: datetime | None, phases: int) -> float | None:
    """The profile's limit at `now` (A per phase), or None where it gives none (not valid yet, not started, run out)."""
    if (profile.valid_from is not None and now < profile.valid_from) or (profile.valid_to is not None and now >= profile.valid_to):
        return None
    elapsed_s = (now - schedule_start(profile, now, tx_start)).total_seconds()
    if elapsed_s < 0 or (profile.duration_s is not None and elapsed_s >= profile.duration_s):
        return None
    period = [p for p in profile.periods if p.start_s <= elapsed_s][-1]
    if profile.rate_unit == "A":
        return period.limit
    return period.limit / (VOLTAGE_V * min(period.number_phases or 3, phases))


def _boundaries(profile: Profile, start: datetime, end: datetime, tx_start: datetime | None) -> set[datetime]:
    """Times in (start, end) at which the profile's limit may change."""
    anchors = [schedule_start(profile, start, tx_start)]
    if profile.recurrency is not None:
        cycle = timedelta(seconds=RECURRENCY_S[profile.recurrency])
        while anchors[-1] + cycle < end:
            anchors.append(anchors[-1] + cycle)
    offsets = [p.start_s for p in profile.periods] + ([profile.duration_s] if profile.duration_s is not None else [])
    times = {a + timedelta(seconds=s) for a in anchors for s in offsets} | {anchors[-1]}
    times |= {t for t in (profile.valid_from, profile.valid_to) if t is not None}
    return {t for t in times if start < t < end}


# --- what the charger holds -------------------------------------------------------------------


@dataclass
class ProfileStore:
    """The charging profiles installed in one charger, per connector (0 = the whole charger)."""

    connectors: int | None = None  # connectors the charger has, to refuse others; None = any
    installed: dict[int, list[Profile]] = field(default_factory=dict)

    def install(self, connector_id: int, profile: Profile, tx_id: int | str | None = None) -> str:
        """Install a profile on a connector, replacing one of the same id or stack level and purpose; the OCPP status.

        `tx_id` is the transaction running on that connector (None: none). A TxProfile needs one,
        and must name it when it gives a transactionId; ChargePointMaxProfile belongs on 0.
        """
        if connector_id < 0 or (self.connectors is not None and connector_id > self.connectors):
            return "Rejected"
        if profile.purpose == MAX_PURPOSE and connector_id != 0:
            return "Rejected"
        if profile.purpose == TX_PURPOSE and (
            connector_id == 0 or tx_id is None or profile.transaction_id not in (None, tx_id)
        ):
            return "Rejected"
        for connector, profiles in self.installed.items():
            profiles[:] = [
                p
                for p in profiles
                if p.profile_id != profile.profile_id
                and not (connector == connector_id and (p.stack_level, p.purpose) == (profile.stack_level, profile.purpose))
            ]
        self.installed.setdefault(connector_id, []).append(profile)
        return "Accepted"

    def clear(
        self, id: int | None = None, connector_id: int | None = None, purpose: str | None = None, stack_level: int | None = None  # noqa: A002
    ) -> bool:
        """ClearChargingProfile: the profile with `id`, else every profile matching all filters given; True if any went."""
        removed = False
        for connector, profiles in self.installed.items():
            if id is not None:
                keep = [p for p in profiles if p.profile_id != id]
            else:
                keep = [
                    p
                    for p in profiles
                    if not (
                        connector_id in (None, connector)
                        and purpose in (None, p.purpose)
                        and stack_level in (None, p.stack_level)
                    )
                ]
            removed |= len(keep) != len(profiles)
            profiles[:] = keep
        return removed

    def end_transaction(self, connector_id: int) -> None:
        """A transaction ended: its TxProfiles go (1.6: a TxProfile lives as long as its transaction)."""
        self.clear(connector_id=connector_id, purpose=TX_PURPOSE)

    def profiles(self, connector_id: int) -> list[Profile]:
        """The profiles on one connector (0: the whole charger), highest stack level first."""
        return sorted(self.installed.get(connector_id, []), key=lambda p: (-p.stack_level, p.purpose, p.profile_id))

    def _first_limit(
        self, candidates: list[Profile], now: datetime, tx_start: datetime | None, phases: int
    ) -> float | None:
        for profile in candidates:  # highest stack level first: the first that gives a limit wins
            limit = profile_limit_a(profile, now, tx_start, phases)
            if limit is not None:
                return limit
        return None

    def limit_a(
        self, connector_id: int, now: datetime, tx_id: int | str | None, tx_start: datetime | None, max_a: float, phases: int
    ) -> float:
        """The limit in force on a connector (A per phase): min(ChargePointMax, TxProfile else TxDefault, `max_a`).

        A TxDefaultProfile on the connector wins over one on connector 0 at the same stack level.
        Connector 0 answers for the whole charger: ChargePointMaxProfile and `max_a` only.
        """
        limit = max_a
        cap = self._first_limit(
            [p for p in self.profiles(0) if p.purpose == MAX_PURPOSE], now, tx_start, phases
        )
        if cap is not None:
            limit = min(limit, cap)
        if connector_id == 0:
            return max(limit, 0.0)
        tx = None
        if tx_id is not None:
            own = [p for p in self.profiles(connector_id) if p.purpose == TX_PURPOSE and p.transaction_id in (None, tx_id)]
            tx = self._first_limit(own, now, tx_start, phases)
        if tx is None:
            defaults = [(p, 1) for p in self.profiles(connector_id) if p.purpose == DEFAULT_PURPOSE]
            defaults += [(p, 0) for p in self.profiles(0) if p.purpose == DEFAULT_PURPOSE]
            defaults.sort(key=lambda item: (-item[0].stack_level, -item[1]))
            tx = self._first_limit([p for p, _ in defaults], now, tx_start, phases)
        if tx is not None:
            limit = min(limit, tx)
        return max(limit, 0.0)

    def composite(
        self,
        connector_id: int,
        now: datetime,
        duration_s: int,
        tx_id: int | str | None,
        tx_start: datetime | None,
        max_a: float,
        phases: int,
    ) -> tuple[tuple[int, float], ...]:
        """GetCompositeSchedule: (seconds after `now`, A per phase) where the limit changes over `duration_s`."""
        end = now + timedelta(seconds=duration_s)
        times = {now}
        for connector in {0, connector_id}:
            for profile in self.installed.get(connector, []):
                times |= _boundaries(profile, now, end, tx_start)
        periods: list[tuple[int, float]] = []
        for at in sorted(times):
            limit = self.limit_a(connector_id, at, tx_id, tx_start, max_a, phases)
            offset_s = math.ceil((at - now).total_seconds())  # OCPP counts whole seconds
            if periods and periods[-1][0] == offset_s:  # changes within one second: the last one counts
                periods.pop()
            if not periods or periods[-1][1] != limit:
                periods.append((offset_s, limit))
        return tuple(periods)


def composite_schedule(
    periods: tuple[tuple[int, float], ...], duration_s: int, start: str, unit: str, phases: int
) -> dict[str, Any]:
    """The chargingSchedule of a GetCompositeSchedule answer (snake_case keys) in `unit` (A or W) from `composite`."""
    factor = VOLTAGE_V * phases if unit == "W" else 1.0
    return {
        "duration": duration_s,
        "start_schedule": start,
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": s, "limit": round(a * factor, 1)} for s, a in periods],
    }


def composite_schedule201(
    periods: tuple[tuple[int, float], ...], duration_s: int, evse_id: int, start: str, unit: str, phases: int
) -> dict[str, Any]:
    """The `schedule` of a 2.0.1 GetCompositeSchedule answer (snake_case keys) in `unit` (A or W) from `composite`."""
    v16 = composite_schedule(periods, duration_s, start, unit, phases)
    return {
        "evse_id": evse_id,
        "duration": duration_s,
        "schedule_start": start,
        "charging_rate_unit": unit,
        "charging_schedule_period": v16["charging_schedule_period"],
    }
