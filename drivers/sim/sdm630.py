"""A simulated Eastron SDM630 grid meter on Modbus TCP, for the test rig.

Per-phase current comes from a callable the rig provides (chargers' draw, battery, base load);
the meter turns it into the SDM630 input registers (function code 4, float32, high word first).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable, Mapping

from pymodbus.constants import ExcCodes

from drivers.meters.sdm630_registers import (
    APPARENT_VA,
    AVERAGE_CURRENT_A,
    AVERAGE_LINE_VOLTAGE_V,
    AVERAGE_VOLTAGE_V,
    CURRENT_A,
    EXPORT_KWH,
    FREQUENCY_HZ,
    IMPORT_KWH,
    INPUT_REGISTER_CODES,
    LAST_REGISTER,
    LINE_VOLTAGE_V,
    NEUTRAL_CURRENT_A,
    PHASE_ANGLE_DEG,
    PHASE_EXPORT_KWH,
    PHASE_IMPORT_KWH,
    POWER_FACTOR,
    POWER_W,
    REACTIVE_VAR,
    SUM_CURRENT_A,
    TOTAL_APPARENT_VA,
    TOTAL_KWH,
    TOTAL_PHASE_ANGLE_DEG,
    TOTAL_POWER_FACTOR,
    TOTAL_POWER_W,
    TOTAL_REACTIVE_VAR,
    VOLTAGE_V,
)
from drivers.sim.modbus import serve_registers

log = logging.getLogger("laadplein.sim.meter")

PhaseCurrents = tuple[float, float, float]



class SimMeterError(Exception):
    """The simulated meter was asked something it cannot do (not listening yet)."""


def float_regs(value: float) -> list[int]:
    """A float32 as the SDM630 sends it: IEEE 754 big-endian, high word first."""
    data = struct.pack(">f", value)
    return [int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")]


def meter_values(
    currents_a: PhaseCurrents,
    voltage_v: float,
    frequency_hz: float,
    import_kwh: PhaseCurrents,
    export_kwh: PhaseCurrents,
) -> dict[int, float]:
    """SDM630 register address -> value for per-phase currents (A, negative = export) at unity power factor."""
    powers_w = [voltage_v * a for a in currents_a]
    values: dict[int, float] = {}
    for phase in range(3):
        current_a, power_w = currents_a[phase], powers_w[phase]
        values[VOLTAGE_V[phase]] = voltage_v
        values[CURRENT_A[phase]] = abs(current_a)  # the SDM630 gives the size; PF and W give the direction
        values[POWER_W[phase]] = power_w
        values[APPARENT_VA[phase]] = abs(power_w)
        values[REACTIVE_VAR[phase]] = 0.0
        values[POWER_FACTOR[phase]] = -1.0 if current_a < 0 else 1.0
        values[PHASE_ANGLE_DEG[phase]] = 0.0
        values[LINE_VOLTAGE_V[phase]] = voltage_v * math.sqrt(3)
        values[PHASE_IMPORT_KWH[phase]] = import_kwh[phase]
        values[PHASE_EXPORT_KWH[phase]] = export_kwh[phase]
    total_w = sum(powers_w)
    values.update(
        {
            AVERAGE_VOLTAGE_V: voltage_v,
            AVERAGE_CURRENT_A: sum(abs(a) for a in currents_a) / 3,
            SUM_CURRENT_A: sum(abs(a) for a in currents_a),
            TOTAL_POWER_W: total_w,
            TOTAL_APPARENT_VA: sum(abs(w) for w in powers_w),
            TOTAL_REACTIVE_VAR: 0.0,
            TOTAL_POWER_FACTOR: -1.0 if total_w < 0 else 1.0,
            TOTAL_PHASE_ANGLE_DEG: 0.0,
            FREQUENCY_HZ: frequency_hz,
            IMPORT_KWH: sum(import_kwh),
            EXPORT_KWH: sum(export_kwh),
            AVERAGE_LINE_VOLTAGE_V: voltage_v * math.sqrt(3),
            NEUTRAL_CURRENT_A: _neutral_current_a(currents_a),
            TOTAL_KWH: sum(import_kwh) + sum(export_kwh),
        }
    )
    return values


def _neutral_current_a(currents_a: PhaseCurrents) -> float:
    """Size of the phasor sum (A) of three in-phase-with-voltage currents 120 degrees apart."""
    re = sum(a * math.cos(2 * math.pi * k / 3) for k, a in enumerate(currents_a))
    im = sum(a * math.sin(2 * math.pi * k / 3) for k, a in enumerate(currents_a))
    return math.hypot(re, im)


class SimGridMeter:
    """An SDM630 on Modbus TCP whose currents follow `draw_a()`; `run` serves until cancelled."""

    def __init__(
        self,
        draw_a: Callable[[], PhaseCurrents],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_id: int = 1,
        voltage_v: float = 230.0,
        frequency_hz: float = 50.0,
        refresh_s: float = 0.2,
    ) -> None:
        self._draw_a = draw_a
        self._host, self._requested_port = host, port
        self._port: int | None = None
        self.unit_id = unit_id
        self.voltage_v = voltage_v
        self.frequency_hz = frequency_hz
        self.refresh_s = refresh_s
        self._image = [0] * (LAST_REGISTER + 1)
        self._import_kwh = [0.0, 0.0, 0.0]
        self._export_kwh = [0.0, 0.0, 0.0]
        self._currents_a: PhaseCurrents = (0.0, 0.0, 0.0)
        self._last_refresh_at: float | None = None
        self._write(meter_values(self._currents_a, voltage_v, frequency_hz, (0, 0, 0), (0, 0, 0)))

    @property
    def port(self) -> int:
        """The TCP port the server listens on (known once `run` is ready)."""
        if self._port is None:
            raise SimMeterError("the simulated meter is not listening yet")
        return self._port

    @property
    def currents_a(self) -> PhaseCurrents:
        """The per-phase currents (A, negative = export) the registers show now."""
        return self._currents_a

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve the meter until cancelled; the registers follow `draw_a` every `refresh_s` seconds."""
        await serve_registers(
            unit_id=self.unit_id, start=0, count=len(self._image), action=self._on_request,
            host=self._host, port=self._requested_port, period_s=self.refresh_s, step=self._refresh,
            listening=self._listening, ready=ready, name="sim-meter-refresh",
        )

    def _listening(self, port: int | None) -> None:
        self._port = port
        if port is not None:
            self._refresh()
            log.info("simulated grid meter listening on %s:%s unit %s", self._host, port, self.unit_id)

    def _refresh(self) -> None:
        """Integrate energy since the last refresh, then read `draw_a` and rewrite the registers."""
        now = asyncio.get_running_loop().time()
        if self._last_refresh_at is not None and now > self._last_refresh_at:
            hours = (now - self._last_refresh_at) / 3600.0
            for phase, current_a in enumerate(self._currents_a):
                kwh = self.voltage_v * current_a * hours / 1000.0
                if kwh >= 0:
                    self._import_kwh[phase] += kwh
                else:
                    self._export_kwh[phase] -= kwh
        self._last_refresh_at = now
        l1, l2, l3 = self._draw_a()
        self._currents_a = (float(l1), float(l2), float(l3))
        self._write(
            meter_values(
                self._currents_a,
                self.voltage_v,
                self.frequency_hz,
                (self._import_kwh[0], self._import_kwh[1], self._import_kwh[2]),
                (self._export_kwh[0], self._export_kwh[1], self._export_kwh[2]),
            )
        )

    def _write(self, values: Mapping[int, float]) -> None:
        for address, value in values.items():
            self._image[address : address + 2] = float_regs(value)

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code not in INPUT_REGISTER_CODES or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        offset = address - start_address
        registers[offset : offset + count] = self._image[address : address + count]
        return None
