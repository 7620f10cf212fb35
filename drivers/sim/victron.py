"""A simulated Victron GX with an ESS on Modbus TCP (system unit 100), for the test rig.

It serves what the `victron` preset reads (817-819 AC consumption, 820-822 grid, 840-844 battery)
and takes the ESS grid setpoint the way `drivers.batteries.victron` documents it: 2716-2717 (hub4
/Overrides/Setpoint, int32) is an override that lapses `override_timeout_s` after its last write,
2700 (/Settings/CGwacs/AcPowerSetPoint, int16) a stored setting that never lapses. The ESS steers
a `BatteryModel` so that the grid carries the setpoint in force; with none in force (nothing
written yet, or an override lapsed without a setting) the battery idles, the Multi in passthru as
reported for a lapsed override. The load is `load_w`, spread evenly over three phases, with no PV;
the Multi's ramp limit and losses are left out. It can be told to fail: stay silent or report garbage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU

from battery.model import BatteryModel
from battery.vendors import decode_register, encode_register
from drivers.batteries.victron import (
    GRID_POWER,
    OVERRIDE_SETPOINT,
    SETTING_SETPOINT,
    SYSTEM_UNIT_ID,
)
from drivers.sim.modbus import serve_registers

log = logging.getLogger("laadplein.sim.battery")

FAULT_MODES = frozenset({"none", "silent", "garbage"})
READ_CODES = frozenset({3, 4})
WRITE_CODES = frozenset({6, 16})
CONSUMPTION = 817  # L1-L3, uint16 W each
BATTERY_V, BATTERY_A, BATTERY_W, BATTERY_SOC, BATTERY_STATE = 840, 841, 842, 843, 844
FIRST, LAST = CONSUMPTION, OVERRIDE_SETPOINT + 1
NOMINAL_V = 51.2
GARBAGE_SOC_PCT = 250
GARBAGE_POWER_FACTOR = 3  # "garbage" reports three times the rating, charging
INT16_MIN, INT16_MAX = -0x8000, 0x7FFF


class SimVictronError(Exception):
    """The simulated GX was asked something it cannot do (unknown fault, not started)."""


def _int16(value: float) -> int:
    """The register of a signed 16-bit value, held within the type's range as a GX does."""
    return encode_register(min(max(round(value), INT16_MIN), INT16_MAX), "int16")[0]


def _uint16(value: float) -> int:
    return encode_register(min(max(round(value), 0), 0xFFFF), "uint16")[0]


class SimVictronGx:
    """A GX with one ESS on Modbus TCP; `run` serves until cancelled.

    `port=0` binds a free port, reported by `port` once `ready` is set. `load_w` (W) is the site's
    consumption, which a test may change at any time.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model: BatteryModel | None = None,
        load_w: float = 0.0,
        override_timeout_s: float = 60.0,
        step_s: float = 0.2,
        unit_id: int = SYSTEM_UNIT_ID,
    ) -> None:
        self._host, self._requested_port = host, port
        self._port: int | None = None
        self.unit_id = unit_id
        self._model = model or BatteryModel(capacity_wh=50_000, max_charge_w=25_000, max_discharge_w=25_000)
        self.load_w = load_w
        self.override_timeout_s = override_timeout_s
        self.step_s = step_s
        self._fault = "none"
        self._override_w: int | None = None
        self._override_at: float | None = None
        self._setting_w: int | None = None
        self._registers: dict[int, int] = {OVERRIDE_SETPOINT: 0, OVERRIDE_SETPOINT + 1: 0, SETTING_SETPOINT: 0}
        self._last_step_at: float | None = None
        self._refresh()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (known once `run` is ready)."""
        if self._port is None:
            raise SimVictronError("the simulated GX is not listening yet")
        return self._port

    @property
    def model(self) -> BatteryModel:
        """The battery physics behind the registers."""
        return self._model

    @property
    def fault(self) -> str:
        """The current fault mode."""
        return self._fault

    def set_fault(self, mode: str) -> None:
        """Fail on command: "none", "silent" (no answers) or "garbage" (SoC 250 %, three times the rating)."""
        if mode not in FAULT_MODES:
            raise SimVictronError(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        self._fault = mode
        self._refresh()

    def register(self, address: int) -> int:
        """The raw value of a register as the GX serves it now."""
        return self._registers[address]

    def grid_setpoint_w(self) -> int | None:
        """The ESS grid setpoint in force now (W, positive = import), or None while the battery idles."""
        now = asyncio.get_running_loop().time()
        at = self._override_at
        if self._override_w is not None and at is not None and now - at < self.override_timeout_s:
            return self._override_w
        return self._setting_w

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve the GX until cancelled; the ESS and the model step every `step_s` seconds."""
        await serve_registers(
            unit_id=self.unit_id, start=FIRST, count=LAST - FIRST + 1, action=self._on_request,
            host=self._host, port=self._requested_port, period_s=self.step_s, step=self._advance,
            listening=self._listening, ready=ready, name="sim-victron-step", trace_pdu=self._trace_pdu,
        )

    def _listening(self, port: int | None) -> None:
        self._port = port
        if port is not None:
            self._last_step_at = asyncio.get_running_loop().time()
            log.info("simulated Victron GX listening on %s:%s unit %s", self._host, port, self.unit_id)

    def _advance(self) -> None:
        """Let the ESS set the battery for the setpoint in force, step the model to now, refresh the registers."""
        now = asyncio.get_running_loop().time()
        if self._last_step_at is not None and now > self._last_step_at:
            self._model.step(now - self._last_step_at)
        self._last_step_at = now
        setpoint_w = self.grid_setpoint_w()
        battery_w = 0.0 if setpoint_w is None else self.load_w - setpoint_w
        if battery_w != self._model.setpoint_w:
            self._model.command(battery_w)
            self._model.step(0.0)  # the power answers within the step, as the model has no ramp
        self._refresh()

    def _refresh(self) -> None:
        """Write the model's state (or the garbage of the fault) into the served registers."""
        m = self._model
        battery_w = -m.power_w  # Victron counts charging as positive
        soc_pct = m.soc_pct
        if self._fault == "garbage":
            soc_pct = GARBAGE_SOC_PCT
            battery_w = GARBAGE_POWER_FACTOR * max(m.max_charge_w, m.max_discharge_w, 1.0)
        state = 1 if battery_w > 0 else 2 if battery_w < 0 else 0
        grid_w = self.load_w + battery_w
        regs = self._registers
        for phase in range(3):
            regs[CONSUMPTION + phase] = _uint16(self.load_w / 3)
            regs[GRID_POWER + phase] = _int16(grid_w / 3)
        regs[BATTERY_V] = _uint16(NOMINAL_V * 10)
        regs[BATTERY_A] = _int16(battery_w / NOMINAL_V * 10)
        regs[BATTERY_W] = _int16(battery_w)
        regs[BATTERY_SOC] = _uint16(soc_pct)
        regs[BATTERY_STATE] = state

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending and self._fault == "silent":
            return None  # type: ignore[return-value]  # pymodbus drops a request it gets no PDU for
        return pdu

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        addrs = range(address, address + count)
        if set_values is None:
            # pymodbus reads a register back after writing it, under the write's function code
            if function_code not in READ_CODES | WRITE_CODES:
                return ExcCodes.ILLEGAL_FUNCTION
            if any(a not in self._registers for a in addrs):
                return ExcCodes.ILLEGAL_ADDRESS
            offset = address - start_address
            registers[offset : offset + count] = [self._registers[a] for a in addrs]
            return None
        if function_code not in WRITE_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._write(address, [int(v) for v in set_values])

    def _write(self, address: int, values: Sequence[int]) -> ExcCodes | None:
        now = asyncio.get_running_loop().time()
        if address == OVERRIDE_SETPOINT and len(values) == 2:
            self._override_w = int(decode_register(values, "int32"))
            self._override_at = now
        elif address == SETTING_SETPOINT and len(values) == 1:
            self._setting_w = int(decode_register(values, "int16"))
        else:
            return ExcCodes.ILLEGAL_ADDRESS
        for offset, value in enumerate(values):
            self._registers[address + offset] = value
        log.debug("simulated GX: grid setpoint %s W in register %s", self.grid_setpoint_w(), address)
        self._advance()
        return None
