"""What the controller needs of the devices behind the grid connection: the battery and the grid meter.

Small Protocols, one per capability (evcc's shape): the cycle never asks which preset it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BatteryStatus:
    """One poll's result: link and trust, SoC (%), power (W, positive = discharging), state and why.

    `since` is the loop time (s) at which the current combination of `online` and `trusted` began.
    """

    online: bool
    trusted: bool
    soc_pct: float | None
    power_w: float | None
    state: str | None
    reason: str
    since: float


class BatteryDriver(Protocol):
    """A battery that reports `BatteryStatus` through its `on_reading` callback and takes a setpoint."""

    @property
    def where(self) -> str:
        """Its address, as a technician would type it."""

    @property
    def status(self) -> BatteryStatus | None:
        """The last status reported (None before the first poll)."""

    def command(self, setpoint_w: float) -> None:
        """Hold this setpoint (W, positive = discharging): written at the next poll and refreshed at
        every poll with the battery's revert timeout, so a silent gateway lets the battery revert."""

    async def run(self) -> None:
        """Poll and command until cancelled; on the way out leave the battery idle (bounded wait)."""


@dataclass(frozen=True)
class GridReading:
    """One reading of the grid meter: current per phase (A, magnitude), total power (W, import positive).

    `online` False means the meter did not answer or answered nonsense; `reason` says which.
    `at_s` is the loop time of the reading.
    """

    online: bool
    current_a: tuple[float, float, float] | None
    power_w: float | None
    at_s: float
    reason: str = ""


class GridMeter(Protocol):
    """A meter at the grid connection that reports `GridReading`s through its `on_reading` callback."""

    @property
    def where(self) -> str:
        """Its address (host:port unit N, or the serial device)."""

    async def run(self) -> None:
        """Read until cancelled; a failure is reported as an offline reading and retried."""
