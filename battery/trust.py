"""Whether a battery's readings can be believed: plausibility checks and the trust that follows them.

Pure: readings carry their own time (`at_s`), so the same readings always give the same verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SOC_MIN_PCT = 0.0
SOC_MAX_PCT = 100.0


@dataclass(frozen=True)
class BatteryRatings:
    """The battery's power ratings in W (both given as positive numbers)."""

    max_charge_w: float
    max_discharge_w: float

    def __post_init__(self) -> None:
        for name in ("max_charge_w", "max_discharge_w"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 W, got {value!r}")


@dataclass(frozen=True)
class Reading:
    """One reading at `at_s` (s, monotonic): SoC in %, power in W (positive = discharging), state.

    None means the battery reported the SunSpec "not implemented" value.
    """

    at_s: float
    soc_pct: float | None
    power_w: float | None
    state: str | None


@dataclass(frozen=True)
class Verdict:
    """Whether the battery is trusted after a reading, why, and whether that flipped just now."""

    trusted: bool
    reason: str
    changed: bool


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e9:  # garbage registers: forty digits tell no more than three
        return f"{value:.3g}"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def implausibility(reading: Reading, ratings: BatteryRatings, margin: float) -> str | None:
    """What is wrong with `reading` on its own (None: plausible); power limits are ratings x `margin`."""
    problems: list[str] = []
    soc, power = reading.soc_pct, reading.power_w
    if soc is None:
        problems.append("SoC not implemented (SunSpec 'not implemented' value)")
    elif not math.isfinite(soc) or not SOC_MIN_PCT <= soc <= SOC_MAX_PCT:
        problems.append(f"SoC {_fmt(soc)} % outside 0-100 %")
    if power is None:
        problems.append("power not implemented (SunSpec 'not implemented' value)")
    elif not math.isfinite(power):
        problems.append(f"power {power} W is not a number")
    elif power > ratings.max_discharge_w * margin:
        problems.append(
            f"discharge power {_fmt(power)} W beyond the rating {_fmt(ratings.max_discharge_w)} W"
            f" x {margin:g}"
        )
    elif -power > ratings.max_charge_w * margin:
        problems.append(
            f"charge power {_fmt(-power)} W beyond the rating {_fmt(ratings.max_charge_w)} W x {margin:g}"
        )
    if reading.state is None:
        problems.append("state not implemented (SunSpec 'not implemented' value)")
    return "; ".join(problems) or None


class TrustTracker:
    """Decides, reading by reading, whether the battery is trusted.

    A battery starts untrusted. An implausible reading, a link failure, or SoC and power
    unchanged for `stuck_after_s` s after the setpoint asked for a change make it untrusted;
    `needed_good` plausible readings in a row make it trusted again.
    """

    def __init__(
        self, ratings: BatteryRatings, *, stuck_after_s: float = 900.0, needed_good: int = 3, margin: float = 1.1
    ) -> None:
        if not stuck_after_s > 0:
            raise ValueError(f"stuck_after_s must be > 0 s, got {stuck_after_s!r}")
        if needed_good < 1:
            raise ValueError(f"needed_good must be >= 1, got {needed_good!r}")
        if not margin >= 1.0:
            raise ValueError(f"margin must be >= 1.0, got {margin!r}")
        self.ratings = ratings
        self.stuck_after_s = stuck_after_s
        self.needed_good = needed_good
        self.margin = margin
        self._trusted = False
        self._reason = "no reading yet"
        self._distrust_reason = "no reading yet"
        self._good_in_row = 0
        self._last_at_s: float | None = None
        self._last_values: tuple[float | None, float | None] | None = None
        self._same_since_s: float | None = None
        self._change_asked_at_s: float | None = None

    @property
    def trusted(self) -> bool:
        """Whether the last verdict trusted the battery."""
        return self._trusted

    @property
    def good_in_row(self) -> int:
        """Plausible readings in a row since the last implausible reading or failure."""
        return self._good_in_row

    @property
    def reason(self) -> str:
        """The reason of the last verdict."""
        return self._reason

    def observe(self, reading: Reading, setpoint_changed: bool) -> Verdict:
        """Judge `reading`; `setpoint_changed` says the setpoint asked the battery for a change since the last one."""
        self._advance_time(reading.at_s)
        values = (reading.soc_pct, reading.power_w)
        if values != self._last_values:
            self._last_values = values
            self._same_since_s = reading.at_s
            self._change_asked_at_s = None
        if setpoint_changed and self._change_asked_at_s is None:
            self._change_asked_at_s = reading.at_s
        problem = implausibility(reading, self.ratings, self.margin) or self._stuck(reading)
        if problem is not None:
            return self._distrust(problem)
        self._good_in_row += 1
        if self._trusted:
            return self._verdict(True, "plausible")
        if self._good_in_row >= self.needed_good:
            return self._verdict(True, f"{self._good_in_row} plausible readings in a row")
        return self._verdict(
            False,
            f"{self._good_in_row} of {self.needed_good} plausible readings since: {self._distrust_reason}",
        )

    def failure(self, at_s: float, why: str) -> Verdict:
        """The battery could not be read at `at_s` because of `why` (timeout, Modbus exception, refused)."""
        self._advance_time(at_s)
        return self._distrust(why)

    def _stuck(self, reading: Reading) -> str | None:
        if self._change_asked_at_s is None or self._same_since_s is None:
            return None
        unchanged_s = reading.at_s - max(self._same_since_s, self._change_asked_at_s)
        if unchanged_s < self.stuck_after_s:
            return None
        soc, power = reading.soc_pct, reading.power_w
        return (
            f"SoC {_fmt(soc) if soc is not None else '?'} % and power {_fmt(power) if power is not None else '?'} W"
            f" unchanged for {_fmt(unchanged_s)} s although the setpoint asked for a change"
        )

    def _advance_time(self, at_s: float) -> None:
        if self._last_at_s is not None and at_s < self._last_at_s:
            raise ValueError(f"readings must not go back in time: {at_s} s after {self._last_at_s} s")
        self._last_at_s = at_s

    def _distrust(self, why: str) -> Verdict:
        self._good_in_row = 0
        self._distrust_reason = why
        return self._verdict(False, why)

    def _verdict(self, trusted: bool, reason: str) -> Verdict:
        changed = trusted != self._trusted
        self._trusted, self._reason = trusted, reason
        return Verdict(trusted, reason, changed)
