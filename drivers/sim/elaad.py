"""The ElaadNL public charging distributions shipped in `drivers/sim/data/elaad/`, parsed into plain tuples.

Only the `public` columns are read: arrivals per 15-minute slot, the connection-time and
energy-demand percentile curves, and the common car models. See that folder's README for
where the files come from.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

SLOTS_PER_DAY = 96  # 15-minute slots
_PACKAGE = "drivers.sim"
_FOLDER = ("data", "elaad")
_COLUMN = "public"


class ElaadDataError(Exception):
    """A shipped ElaadNL file is missing or does not have the expected shape."""


@dataclass(frozen=True)
class EvSpec:
    """One car model as published (kWh, kW): battery size, max AC charge power, registrations."""

    name: str
    battery_kwh: float
    max_ac_kw: float
    registrations: int


@dataclass(frozen=True)
class ElaadData:
    """The public distributions (%, h, kWh).

    `arrival_weekday_pct[k]` is the share of a day's arrivals in the 15-minute slot that starts
    at k x 15 minutes past midnight (the shares add up to about 100). `stay_h_at_pct[p]` is the
    connection time that p % of sessions reach or exceed (p = 0..100, non-increasing), and
    `energy_kwh_at_pct[p]` the same for the energy charged.
    """

    arrival_weekday_pct: tuple[float, ...]
    arrival_weekend_pct: tuple[float, ...]
    stay_h_at_pct: tuple[float, ...]
    energy_kwh_at_pct: tuple[float, ...]
    ev_specs: tuple[EvSpec, ...]


def _read_text(name: str) -> str:
    resource = files(_PACKAGE).joinpath(*_FOLDER, name)
    try:
        return resource.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ElaadDataError(f"{name}: not found in the installed package") from exc


def _column(name: str, expected_rows: int) -> tuple[float, ...]:
    rows = list(csv.reader(io.StringIO(_read_text(name))))
    header, body = rows[0], [row for row in rows[1:] if row]
    if _COLUMN not in header:
        raise ElaadDataError(f"{name}: no {_COLUMN!r} column in {header}")
    if len(body) != expected_rows:
        raise ElaadDataError(f"{name}: {len(body)} rows, expected {expected_rows}")
    index = header.index(_COLUMN)
    try:
        values = tuple(float(row[index]) for row in body)
    except (IndexError, ValueError) as exc:
        raise ElaadDataError(f"{name}: {exc}") from exc
    if any(value < 0 for value in values):
        raise ElaadDataError(f"{name}: negative value in the {_COLUMN!r} column")
    return values


def _percentile_curve(name: str) -> tuple[float, ...]:
    curve = _column(name, 101)
    if any(later > earlier for earlier, later in zip(curve, curve[1:])):
        raise ElaadDataError(f"{name}: the {_COLUMN!r} curve is not non-increasing")
    return curve


def _ev_specs(name: str) -> tuple[EvSpec, ...]:
    raw = json.loads(_read_text(name))
    try:
        specs = tuple(
            EvSpec(
                name=model,
                battery_kwh=float(fields["battery_capacity"]),
                max_ac_kw=float(fields["max_ac_charge_power"]),
                registrations=int(fields["number_of_registrations"]),
            )
            for model, fields in sorted(raw.items())
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ElaadDataError(f"{name}: {exc!r}") from exc
    if not specs or any(s.battery_kwh <= 0 or s.max_ac_kw <= 0 or s.registrations <= 0 for s in specs):
        raise ElaadDataError(f"{name}: needs car models with positive battery, AC power and registrations")
    return specs


@cache
def load() -> ElaadData:
    """Read the shipped files once (%, h, kWh); raises ElaadDataError when one is missing or malformed."""
    return ElaadData(
        arrival_weekday_pct=_column("distribution-of-arrival.csv", SLOTS_PER_DAY),
        arrival_weekend_pct=_column("distribution-of-arrival-weekend.csv", SLOTS_PER_DAY),
        stay_h_at_pct=_percentile_curve("distribution-of-connection-time.csv"),
        energy_kwh_at_pct=_percentile_curve("distribution-of-energy-demand.csv"),
        ev_specs=_ev_specs("ev_specs.json"),
    )
