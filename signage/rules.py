"""The bay-light rules of signage.md as one pure function: a frozen image of the bays in, lights out.

`decide` applies the table (first matching row wins), the reserve of free EV bays, and the
invariants that protect drivers: no trap, calm (min dwell), override wins, every change explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from drivers.contract.clock import wire_ts
from drivers.contract.words import (
    AVAILABLE,
    BLUE,
    CHARGING,
    COLORS,
    FAULT_STATUSES,
    FINISHING,
    GREEN,
    OFF,
    PLUGGED_STATUSES,
    PREPARING,
    RESERVED,
    SESSION_STATUSES,
    STATUS_WORDS,
    SUSPENDED_EV,
    SUSPENDED_EVSE,
)
from signage.texts import LANGUAGES, pictogram_for, text_for


@dataclass(frozen=True)
class Override:
    """A technician's hold on a bay's light, active until `until` (UTC); who set it and why."""

    color: str  # blue | green | off
    until: datetime
    who: str = ""
    why: str = ""
    stored: bool = True  # False: held in memory only (a lights test), nothing on disk to delete

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"override colour {self.color!r} is not one of {sorted(COLORS)}")


@dataclass(frozen=True)
class Closure:
    """An active closure from the config's schedule (market day, works); the shell decides when it is active."""

    color: str  # blue | green | off
    text: str = ""  # the sign's text; empty for the colour's usual text

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"closure colour {self.color!r} is not one of {sorted(COLORS)}")


@dataclass(frozen=True)
class BayInputs:
    """Everything the rules know of one bay at one moment; spare power in A."""

    bay_id: str
    has_sensor: bool
    known: bool  # a connector status arrived since start, or startup_wait_s passed
    connector_status: str | None  # OCPP 1.6 status word; None if never received
    charger_online: bool  # offline_after_s already applied by the shell
    occupied: bool | None  # sensor reading; None (no reading, fault, silence) counts as occupied
    session_over_at: datetime | None
    spare_a: float  # charger maximum minus the limits of its other connectors
    override: Override | None = None
    closure: Closure | None = None


@dataclass(frozen=True)
class Light:
    """What a bay's light shows, and since when it shows this colour."""

    color: str
    reason: str
    text: str
    pictogram: str
    changed_at: datetime  # when the colour last changed (for min_dwell_s)


@dataclass(frozen=True)
class SignageSettings:
    """The `[signage]` config the rules use; times in s."""

    min_free_ev_bays: int
    grace_s: float
    min_dwell_s: float
    language: str = "nl"
    timezone: str = "UTC"  # the square's, for the times in the reasons a technician reads

    def __post_init__(self) -> None:
        if self.min_free_ev_bays < 0 or self.grace_s < 0 or self.min_dwell_s < 0:
            raise ValueError("min_free_ev_bays, grace_s and min_dwell_s must not be negative")
        if self.language not in LANGUAGES:
            raise ValueError(f"language {self.language!r} is not one of {sorted(LANGUAGES)}")


@dataclass(frozen=True)
class LightChange:
    """One bay's light changed: from what, to what, why (a sentence) and the inputs that mattered (JSON-able)."""

    bay_id: str
    old: Light | None
    new: Light
    why: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class SignageDecision:
    """The light of every known bay, and the changes against the previous lights (sorted by bay id)."""

    lights: Mapping[str, Light]
    changes: tuple[LightChange, ...]


@dataclass(frozen=True)
class _Wish:
    """What a rule wants a bay to show, before the calm rule has its say."""

    color: str
    reason: str
    why: str
    text: str = ""  # a closure's own text
    facts: tuple[tuple[str, Any], ...] = ()  # rule-specific inputs for the log


def track_session_over(
    prev_status: str | None, new_status: str, prev_over_at: datetime | None, at: datetime
) -> datetime | None:
    """When the connector's session ended (receive time `at` of the status that ended it), or None."""
    if new_status in (CHARGING, SUSPENDED_EVSE, PREPARING):
        return None  # charging again, or a fresh plug-in
    if prev_status in (CHARGING, SUSPENDED_EVSE) and new_status in (SUSPENDED_EV, FINISHING, AVAILABLE):
        return at
    if prev_status == PREPARING and new_status in (SUSPENDED_EV, FINISHING):
        return at  # plugged but never drew: that session is over too
    return prev_over_at


def sensor_doubted(doubted: bool, occupied: bool | None, connector_status: str | None) -> bool:
    """Whether a bay's sensor is in doubt after its latest reading `occupied` and its connector's status.

    A sensor that says empty while a car is plugged in at its bay contradicts the charger: that is a
    sensor fault (signage.md: a fault counts as occupied), whoever wrote the reading. It holds until the
    sensor reports a car again, so a lie told under a charging car cannot turn the bay into a reserved
    blue once that car is unplugged and still parked. The shell keeps the flag between calls.
    """
    if occupied is True:
        return False
    if occupied is False and connector_status in PLUGGED_STATUSES:
        return True
    return doubted


def decide(
    bays: Sequence[BayInputs], previous: Mapping[str, Light], settings: SignageSettings, now: datetime
) -> SignageDecision:
    """The lights of all known bays at `now`, given what they showed before (`previous`)."""
    by_id: dict[str, BayInputs] = {}
    for bay in bays:
        if bay.bay_id in by_id:
            raise ValueError(f"bay {bay.bay_id!r} appears twice")
        by_id[bay.bay_id] = bay
    known = [by_id[bay_id] for bay_id in sorted(by_id) if by_id[bay_id].known]

    wishes = {bay.bay_id: _table(bay, settings, now) for bay in known}
    wishes.update(_reserve(known, wishes, previous, settings, now))

    lights: dict[str, Light] = {}
    changes: list[LightChange] = []
    for bay in known:
        prev = previous.get(bay.bay_id)
        wish = _no_trap(bay, wishes[bay.bay_id], prev)
        light = _calm(bay, wish, prev, settings, now)
        lights[bay.bay_id] = light
        if prev is None or _command(prev) != _command(light):
            why = wish.why
            if prev is not None and prev.reason == "override" and wish.reason != "override":
                why = f"Override ended. {why}"
            changes.append(LightChange(bay.bay_id, prev, light, why, _inputs(bay, wish, settings, now)))
    return SignageDecision(lights=lights, changes=tuple(changes))


# ---- the table ------------------------------------------------------------------------------


def _table(bay: BayInputs, settings: SignageSettings, now: datetime) -> _Wish | None:
    """Rows 1-7 of the table; None when the bay reaches the reserve row."""
    ov = _active_override(bay, now)
    if ov is not None:
        by = f" by {ov.who}" if ov.who else ""
        because = f": {ov.why}" if ov.why else ""
        until = ov.until.astimezone(ZoneInfo(settings.timezone)).strftime("%Y-%m-%d %H:%M %Z")
        why = f"Technician override to {ov.color} until {until}{by}{because}"
        return _Wish(ov.color, "override", why)
    if bay.closure is not None:
        said = f" ({bay.closure.text})" if bay.closure.text else ""
        return _Wish(bay.closure.color, "closure", f"Closure from the schedule shows {bay.closure.color}{said}",
                     text=bay.closure.text)
    status = bay.connector_status
    if not bay.charger_online:
        return _Wish(GREEN, "fault", "Charger offline")
    if status is None:
        return _Wish(GREEN, "fault", "No connector status received from the charger")
    if status in FAULT_STATUSES:
        return _Wish(GREEN, "fault", f"Connector reports {status}")
    if status not in STATUS_WORDS:
        return _Wish(GREEN, "fault", f"Connector status not understood ({status})")
    if status == PREPARING:
        return _Wish(BLUE, "plugged", "EV plugged in at connector (Preparing)")
    if status in SESSION_STATUSES:
        return _Wish(BLUE, "charging", f"EV charging at connector ({status})")
    if status == RESERVED:
        return _Wish(BLUE, "reserved", "Connector reserved through OCPP (Reserved)")
    over_s = _over_s(bay, now)
    if over_s is not None and over_s < settings.grace_s:
        return _Wish(BLUE, "finished",
                     f"Session over {over_s:.0f} s ago, within the grace of {settings.grace_s:g} s ({status})")
    if status in PLUGGED_STATUSES:
        if over_s is None:
            return _Wish(GREEN, "finished", f"EV plugged in but not charging ({status}); may stay as a parked car")
        return _Wish(GREEN, "finished",
                     f"Session over {over_s:.0f} s ago, past the grace of {settings.grace_s:g} s; "
                     f"car still plugged in ({status})")
    if over_s is not None and bay.has_sensor and bay.occupied is not False:
        return _Wish(GREEN, "finished",
                     f"Session over {over_s:.0f} s ago, past the grace of {settings.grace_s:g} s; "
                     f"{_sensor_words(bay)}")
    return None


def _eligible(bay: BayInputs, now: datetime) -> bool:
    """Whether the bay may be one of the reserve's free EV bays (signage.md, terms)."""
    return (
        bay.has_sensor
        and bay.occupied is False
        and bay.connector_status == AVAILABLE
        and bay.charger_online
        and _active_override(bay, now) is None
        and bay.closure is None
    )


def _reserve(
    known: list[BayInputs],
    wishes: Mapping[str, _Wish | None],
    previous: Mapping[str, Light],
    settings: SignageSettings,
    now: datetime,
) -> dict[str, _Wish]:
    """Rows 8 and 9: which eligible bays stay free for EVs (blue), the others green."""
    pool = [bay for bay in known if wishes[bay.bay_id] is None and _eligible(bay, now)]
    pool_ids = {bay.bay_id for bay in pool}
    needed = min(settings.min_free_ev_bays, len(pool))
    ranked = sorted(pool, key=lambda b: (-b.spare_a, b.bay_id))
    # Bays already kept free stay so (best ranked first); only then the ranking fills the rest.
    holding = [b.bay_id for b in ranked if _is_reserved(previous.get(b.bay_id))]
    chosen = holding[:needed]
    chosen += [b.bay_id for b in ranked if b.bay_id not in holding][: needed - len(chosen)]
    facts = (
        ("reserve_needed", needed),
        ("reserve_eligible", len(pool)),
        ("min_free_ev_bays", settings.min_free_ev_bays),
    )
    held = f"{needed} of {len(pool)} empty bays are held"
    out: dict[str, _Wish] = {}
    for bay in known:
        if wishes[bay.bay_id] is not None:
            continue
        if bay.bay_id in chosen:
            out[bay.bay_id] = _Wish(BLUE, "reserved", f"Bay kept free for EVs: {held}", facts=facts)
        elif bay.bay_id in pool_ids:
            out[bay.bay_id] = _Wish(GREEN, "open", f"Bay empty but not needed: {held}", facts=facts)
        elif not bay.has_sensor:
            out[bay.bay_id] = _Wish(GREEN, "open", "Connector free (Available); bay has no sensor, so never held")
        else:
            out[bay.bay_id] = _Wish(GREEN, "open", f"Connector free (Available); {_sensor_words(bay)}")
    return out


def _is_reserved(light: Light | None) -> bool:
    return light is not None and light.color == BLUE and light.reason == "reserved"


# ---- the invariants -------------------------------------------------------------------------


def _no_trap(bay: BayInputs, wish: _Wish, prev: Light | None) -> _Wish:
    """Invariant 1: a bay that is not blue turns blue only on plug-in, sensor empty, or a person's say."""
    if wish.color != BLUE or (prev is not None and prev.color == BLUE):
        return wish
    if bay.connector_status in PLUGGED_STATUSES and bay.charger_online:
        return wish
    if bay.has_sensor and bay.occupied is False:
        return wish
    if wish.reason in ("override", "closure"):
        return wish
    reason = "finished" if bay.session_over_at is not None and bay.has_sensor else "open"
    return _Wish(GREEN, reason,
                 "Stays green: no EV is plugged in and the bay is not known to be empty "
                 f"(would be blue: {wish.why})",
                 facts=(*wish.facts, ("wanted", f"blue {wish.reason}")))


def _calm(bay: BayInputs, wish: _Wish, prev: Light | None, settings: SignageSettings, now: datetime) -> Light:
    """Invariant 3: a colour holds for min_dwell_s, except for the immediate changes of signage.md."""
    if prev is not None and prev.color != wish.color:
        held_s = (now - prev.changed_at).total_seconds()
        if held_s < settings.min_dwell_s and not _immediate(bay, wish, prev, settings, now):
            return prev
    text = wish.text if wish.reason == "closure" and wish.text and wish.color != OFF else ""
    text = text or text_for(wish.color, wish.reason, settings.language)
    changed_at = prev.changed_at if prev is not None and prev.color == wish.color else now
    light = Light(wish.color, wish.reason, text, pictogram_for(wish.color), changed_at)
    if prev is not None and _command(prev) == _command(light):
        return prev
    return light


def _immediate(bay: BayInputs, wish: _Wish, prev: Light, settings: SignageSettings, now: datetime) -> bool:
    """The colour changes that do not wait for min_dwell_s."""
    if wish.color == BLUE and wish.reason in ("plugged", "charging"):
        return True  # plug-in
    if wish.color == GREEN and wish.reason == "fault":
        return True
    if wish.reason == "override" or prev.reason == "override":
        return True  # set or cleared
    return prev.color == BLUE and wish.color == GREEN and _grace_ended(prev, bay, settings, now)


def _grace_ended(prev: Light, bay: BayInputs, settings: SignageSettings, now: datetime) -> bool:
    """Whether a blue light of a session is ending because the session's grace is over."""
    if prev.reason == "finished":
        return True
    over_s = _over_s(bay, now)
    return prev.reason in ("plugged", "charging") and over_s is not None and over_s >= settings.grace_s


# ---- helpers --------------------------------------------------------------------------------


def _active_override(bay: BayInputs, now: datetime) -> Override | None:
    return bay.override if bay.override is not None and now < bay.override.until else None


def _over_s(bay: BayInputs, now: datetime) -> float | None:
    if bay.session_over_at is None:
        return None
    return (now - bay.session_over_at).total_seconds()


def _sensor_words(bay: BayInputs) -> str:
    if bay.occupied is None:
        return "sensor has no reading (counts as occupied)"
    return "sensor says occupied" if bay.occupied else "sensor says empty"


def _command(light: Light) -> tuple[str, str, str, str]:
    return (light.color, light.text, light.pictogram, light.reason)


def _inputs(bay: BayInputs, wish: _Wish, settings: SignageSettings, now: datetime) -> dict[str, Any]:
    """The inputs that decided a light, as plain JSON-able values (no id tags)."""
    over_s = _over_s(bay, now)
    out: dict[str, Any] = {
        "status": bay.connector_status,
        "charger_online": bay.charger_online,
        "sensor": bay.has_sensor,
        "occupied": bay.occupied if bay.has_sensor else None,
        "session_over_s": None if over_s is None else round(over_s, 3),
        "grace_s": settings.grace_s,
        "spare_a": bay.spare_a,
    }
    ov = _active_override(bay, now)
    if ov is not None:
        out["override"] = {"color": ov.color, "until": wire_ts(ov.until), "who": ov.who, "why": ov.why}
    if bay.closure is not None:
        out["closure"] = {"color": bay.closure.color, "text": bay.closure.text}
    out.update(wish.facts)
    return out
