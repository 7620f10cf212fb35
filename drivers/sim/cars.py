"""Simulated cars for a public charging square, drawn from the ElaadNL public distributions.

Pure and seeded: `arrivals` and `busy_afternoon` return the same list for the same arguments,
and `car_power_w` / `CarState` model how much a parked car draws from what it is offered.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

from drivers.sim import elaad

VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0  # IEC 61851: a car does not charge when offered less
ONE_PHASE_MAX_W = 7400.0  # 32 A x 230 V: more AC power than this needs three phases
TAPER_FROM_SOC_PCT = 80.0
TAPER_END_SHARE = 0.1  # share of the full current a car still draws just below 100 %
MIN_STAY_S = 300.0  # the curve's last percentiles round to zero hours; nobody parks for less
STAY_ENERGY_COUPLING = 0.5  # chance that stay and energy come from the same percentile
TARGET_SOC_SPREAD_PCT = 20.0  # drivers charge to somewhere between 80 % and 100 %
_STEP_S = 10.0  # integration step of CarState.step; the taper changes slowly at this scale

BUSY_COMPRESSION = 60.0  # busy_afternoon: an hour of the data becomes a minute of the demo
BUSY_FIRST_ARRIVAL_S = (3.0, 8.0)
BUSY_GAP_S = (15.0, 35.0)
BUSY_STAY_S = (60.0, 180.0)  # with gaps of at least 15 s, at most 12 cars are parked at once
BUSY_NON_EV_SHARE = 0.15  # and never fewer than two non-EVs
BUSY_FIRST_STAY_S = 30.0  # the first car is a quick one, so its bay turns back within the first minute

Kind = Literal["ev", "non_ev"]


@dataclass(frozen=True)
class CarModel:
    """A car model (Wh, W): battery size, max AC charge power and the phases it charges on."""

    name: str
    battery_wh: float
    max_ac_w: float
    phases: int

    def __post_init__(self) -> None:
        if not (self.battery_wh > 0 and self.max_ac_w > 0):
            raise ValueError(f"{self.name}: battery_wh and max_ac_w must be positive")
        if self.phases not in (1, 3):
            raise ValueError(f"{self.name}: phases must be 1 or 3, not {self.phases}")

    def max_current_a(self, voltage_v: float = VOLTAGE_V) -> float:
        """Largest current per phase (A) the car takes at this phase voltage."""
        return self.max_ac_w / (self.phases * voltage_v)


@dataclass(frozen=True)
class Arrival:
    """One car entering the square (s, Wh, %); times count from the scenario start.

    A non-EV (`kind="non_ev"`) parks for `stay_s` and never plugs in: it has no `car`, wants
    0 Wh and has no state of charge.
    """

    arrive_s: float
    kind: Kind
    car: CarModel | None
    stay_s: float
    energy_wanted_wh: float
    soc_at_arrival_pct: float | None

    @property
    def leave_s(self) -> float:
        """When the car drives off (s from the scenario start)."""
        return self.arrive_s + self.stay_s


def car_model(spec: elaad.EvSpec) -> CarModel:
    """The model of a published spec (Wh, W).

    The data gives no phase count, so it is inferred from the AC power: up to 7.4 kW
    (32 A on one phase at 230 V) one phase, above that three phases.
    """
    max_ac_w = spec.max_ac_kw * 1000.0
    return CarModel(
        name=spec.name,
        battery_wh=spec.battery_kwh * 1000.0,
        max_ac_w=max_ac_w,
        phases=1 if max_ac_w <= ONE_PHASE_MAX_W else 3,
    )


@cache
def car_models() -> tuple[tuple[CarModel, int], ...]:
    """The published car models with their registrations (the weights of the draw), by name."""
    return tuple((car_model(spec), spec.registrations) for spec in elaad.load().ev_specs)


def _at_pct(curve: tuple[float, ...], pct: float) -> float:
    """Linear interpolation of a 101-point percentile curve at pct in [0, 100]."""
    index = min(int(pct), len(curve) - 2)
    return curve[index] + (curve[index + 1] - curve[index]) * (pct - index)


def _arrival_times_s(
    rng: random.Random, start: datetime, duration_s: float, mean_per_hour: float, weekend: bool | None, speed: float
) -> list[float]:
    """Non-homogeneous Poisson arrivals by thinning, in scenario seconds."""
    data = elaad.load()
    profiles = {False: data.arrival_weekday_pct, True: data.arrival_weekend_pct}
    means = {flag: sum(profile) / len(profile) for flag, profile in profiles.items()}
    used = [weekend] if weekend is not None else [False, True]
    base_per_s = mean_per_hour * speed / 3600.0
    peak_per_s = base_per_s * max(max(profiles[flag]) / means[flag] for flag in used)
    if peak_per_s <= 0:
        return []
    slot_s = 86400.0 / elaad.SLOTS_PER_DAY
    times: list[float] = []
    t_s = 0.0
    while True:
        t_s += rng.expovariate(peak_per_s)
        if t_s >= duration_s:
            return times
        local = start + timedelta(seconds=t_s * speed)
        is_weekend = local.weekday() >= 5 if weekend is None else weekend
        seconds_of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        slot = min(int(seconds_of_day // slot_s), elaad.SLOTS_PER_DAY - 1)
        rate_per_s = base_per_s * profiles[is_weekend][slot] / means[is_weekend]
        if rng.random() * peak_per_s < rate_per_s:
            times.append(t_s)


def _visit(
    rng: random.Random,
    arrive_s: float,
    kind: Kind,
    compression: float,
    stay_bounds_s: tuple[float, float],
) -> Arrival:
    """Draw the stay, car, energy and state of charge of one arrival.

    Stays and energies are drawn in the data's time; the arrival carries them divided by
    `compression`, so a car charging at its real power fills the same share of its stay.
    """
    data = elaad.load()
    stay_pct = rng.uniform(0.0, 100.0)
    stay_data_s = max(MIN_STAY_S, _at_pct(data.stay_h_at_pct, stay_pct) * 3600.0)
    low_s, high_s = stay_bounds_s
    stay_s = min(max(stay_data_s / compression, low_s), high_s)
    if kind == "non_ev":
        return Arrival(arrive_s, kind, None, stay_s, 0.0, None)

    models = car_models()
    car = rng.choices([model for model, _ in models], weights=[weight for _, weight in models])[0]
    energy_pct = stay_pct if rng.random() < STAY_ENERGY_COUPLING else rng.uniform(0.0, 100.0)
    deliverable_wh = car.max_ac_w * stay_s * compression / 3600.0
    energy_data_wh = min(_at_pct(data.energy_kwh_at_pct, energy_pct) * 1000.0, car.battery_wh, deliverable_wh)
    headroom_pct = 100.0 - energy_data_wh / car.battery_wh * 100.0
    soc_pct = headroom_pct - rng.uniform(0.0, min(TARGET_SOC_SPREAD_PCT, headroom_pct))
    return Arrival(arrive_s, kind, car, stay_s, energy_data_wh / compression, max(0.0, soc_pct))


def _check_share(non_ev_share: float) -> None:
    if not 0.0 <= non_ev_share <= 1.0:
        raise ValueError(f"non_ev_share must be within [0, 1], not {non_ev_share}")


def arrivals(
    *,
    seed: int,
    start: datetime,
    duration_s: float,
    mean_per_hour: float,
    weekend: bool | None = None,
    speed: float = 1.0,
    non_ev_share: float = 0.15,
) -> list[Arrival]:
    """Cars entering the square during `duration_s` scenario seconds (s, Wh, %), by arrival time.

    Arrivals are a non-homogeneous Poisson process whose rate follows the ElaadNL public
    arrival profile of the square's local time (`start` onwards; weekend or weekday from the
    date unless `weekend` is given), scaled so that the day's mean is `mean_per_hour` x
    `speed` arrivals per scenario hour. `speed` runs the square's day faster: one scenario
    second is `speed` seconds of square time, so the profile passes `speed` times faster and
    stays and energy demands are divided by `speed` (a car charging at its real power fills
    the same share of its stay as in the data). Stays and energies come from the public
    percentile curves by inverse-CDF sampling, drawn from the same percentile half of the
    time (long stays go with large demands); energy is capped by the battery and by what the
    car's max AC power delivers during the stay. A share `non_ev_share` of arrivals are
    cars that only park. Same arguments, same list.
    """
    if not all(math.isfinite(value) for value in (duration_s, mean_per_hour, speed)):
        raise ValueError("duration_s, mean_per_hour and speed must be finite")
    if duration_s < 0 or mean_per_hour < 0 or speed <= 0:
        raise ValueError("duration_s and mean_per_hour must be >= 0 and speed > 0")
    _check_share(non_ev_share)
    rng = random.Random(seed)
    times_s = _arrival_times_s(rng, start, duration_s, mean_per_hour, weekend, speed)
    result = []
    for arrive_s in times_s:
        kind: Kind = "non_ev" if rng.random() < non_ev_share else "ev"
        result.append(_visit(rng, arrive_s, kind, speed, (0.0, math.inf)))
    return result


def busy_afternoon(seed: int, *, duration_s: float = 900.0) -> list[Arrival]:
    """A demo scenario for a 12-bay square (s, Wh, %): something happens within 10 s.

    The first car arrives 3-8 s after the start and stays 30 s; then one every 15-35 s until `duration_s`;
    the first is an EV and about 15 % of the others (at least two) park without charging.
    Stays and energies are drawn as in `arrivals` and compressed 60 times (an hour of the
    data is a minute of the demo), with stays kept between 1 and 3 minutes so sessions end
    and bays free up within a few minutes; at most 12 cars are parked at once.
    """
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be finite and >= 0, not {duration_s}")
    rng = random.Random(seed)
    times_s: list[float] = []
    t_s = rng.uniform(*BUSY_FIRST_ARRIVAL_S)
    while t_s < duration_s:
        times_s.append(t_s)
        t_s += rng.uniform(*BUSY_GAP_S)
    wanted = max(2, round(BUSY_NON_EV_SHARE * len(times_s)))
    non_evs = set(rng.sample(range(1, len(times_s)), k=min(wanted, max(0, len(times_s) - 1))))
    visits = [
        _visit(rng, arrive_s, "non_ev" if index in non_evs else "ev", BUSY_COMPRESSION, BUSY_STAY_S)
        for index, arrive_s in enumerate(times_s)
    ]
    if visits:
        first = visits[0]
        energy_wh = min(first.energy_wanted_wh, first.car.max_ac_w * BUSY_FIRST_STAY_S / 3600.0)
        visits[0] = dataclasses.replace(first, stay_s=BUSY_FIRST_STAY_S, energy_wanted_wh=energy_wh)
    return visits


def _taper(soc_pct: float) -> float:
    if soc_pct <= TAPER_FROM_SOC_PCT:
        return 1.0
    return 1.0 - (1.0 - TAPER_END_SHARE) * (soc_pct - TAPER_FROM_SOC_PCT) / (100.0 - TAPER_FROM_SOC_PCT)


def car_power_w(
    car: CarModel, soc_pct: float, offered_a: float, voltage_v: float = VOLTAGE_V
) -> tuple[float, tuple[float, float, float]]:
    """Power (W) a car draws and its current per phase (A, L1-L3) when offered `offered_a` per phase.

    The car takes the offered current up to its own maximum on its phases (one-phase cars on
    L1); above 80 % state of charge the current falls linearly to a tenth just below 100 %.
    Nothing below 6 A offered (IEC 61851) and nothing when full.
    """
    if not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"soc_pct must be within [0, 100], not {soc_pct}")
    if not voltage_v > 0:
        raise ValueError(f"voltage_v must be positive, not {voltage_v}")
    if math.isnan(offered_a):
        raise ValueError("offered_a is NaN")
    if offered_a < MIN_CURRENT_A or soc_pct >= 100.0:
        return 0.0, (0.0, 0.0, 0.0)
    current_a = min(offered_a, car.max_current_a(voltage_v)) * _taper(soc_pct)
    per_phase = (current_a, 0.0, 0.0) if car.phases == 1 else (current_a, current_a, current_a)
    return current_a * voltage_v * car.phases, per_phase


class CarState:
    """The battery of one plugged-in car as the simulator charges it (%, Wh).

    The car stops drawing when it reaches its target (`soc_at_arrival` plus the energy it
    wants, or 100 %); it stays parked after that: its stay decides when it leaves.
    """

    def __init__(self, car: CarModel, soc_pct: float, energy_wanted_wh: float | None = None) -> None:
        if not 0.0 <= soc_pct <= 100.0:
            raise ValueError(f"soc_pct must be within [0, 100], not {soc_pct}")
        if energy_wanted_wh is not None and not energy_wanted_wh >= 0:
            raise ValueError(f"energy_wanted_wh must be >= 0, not {energy_wanted_wh}")
        self.car = car
        self.soc_pct = soc_pct
        self.energy_charged_wh = 0.0
        wanted_pct = 100.0 if energy_wanted_wh is None else energy_wanted_wh / car.battery_wh * 100.0
        self.target_soc_pct = min(100.0, soc_pct + wanted_pct)

    @classmethod
    def from_arrival(cls, arrival: Arrival) -> CarState:
        """The state of an arriving EV; a non-EV has none (ValueError)."""
        if arrival.car is None or arrival.soc_at_arrival_pct is None:
            raise ValueError("a non-EV arrival does not charge")
        return cls(arrival.car, arrival.soc_at_arrival_pct, arrival.energy_wanted_wh)

    @property
    def full(self) -> bool:
        """The car has reached its target and draws nothing more."""
        return self.soc_pct >= self.target_soc_pct

    def draw(self, offered_a: float, voltage_v: float = VOLTAGE_V) -> tuple[float, tuple[float, float, float]]:
        """Power (W) and per-phase current (A) the car draws now."""
        if self.full:
            return 0.0, (0.0, 0.0, 0.0)
        return car_power_w(self.car, self.soc_pct, offered_a, voltage_v)

    def step(self, dt_s: float, offered_a: float, voltage_v: float = VOLTAGE_V) -> float:
        """Charge for `dt_s` seconds at `offered_a` per phase; returns the energy taken (Wh)."""
        if not dt_s >= 0:
            raise ValueError(f"dt_s must be >= 0, not {dt_s}")
        taken_wh = 0.0
        left_s = dt_s
        while left_s > 0 and not self.full:
            h_s = min(left_s, _STEP_S)
            left_s -= h_s
            power_w, _ = self.draw(offered_a, voltage_v)
            if power_w <= 0:
                break
            room_wh = (self.target_soc_pct - self.soc_pct) / 100.0 * self.car.battery_wh
            energy_wh = power_w * h_s / 3600.0
            if energy_wh >= room_wh:
                energy_wh = room_wh
                self.soc_pct = self.target_soc_pct
            else:
                self.soc_pct += energy_wh / self.car.battery_wh * 100.0
            taken_wh += energy_wh
        self.energy_charged_wh += taken_wh
        return taken_wh

