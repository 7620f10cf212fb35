"""A simulated SunSpec buffer battery (models 1, 802, 124) on Modbus TCP, for the test rig.

It carries a `BatteryModel`, obeys model 124 writes in the plain SunSpec reading (revert timeout
included) and can be told to fail: stay silent, answer with exceptions, or report garbage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU

from battery.model import BatteryModel
from battery.sunspec_map import (
    Layout,
    blank_image,
    build_layout,
    get_point,
    read_regs,
    set_point,
    setpoint_from_storage,
    write_regs,
)
from drivers.sim.modbus import serve_registers

log = logging.getLogger("laadplein.sim.battery")

FAULT_MODES = frozenset({"none", "silent", "exception", "garbage"})
MODEL_IDS = (1, 802, 124)
READ_CODES = frozenset({3})
WRITE_CODES = frozenset({6, 16})
NOMINAL_V = 400.0
GARBAGE_CHA_STATE_PCT = 250.0
# Fixed scale factors the simulated battery reports (10**sf per register step); the power and
# energy ones follow the ratings (see `_scale_factors`).
SCALE_FACTORS = {
    802: {"AHRtg_SF": 0, "SoC_SF": -1, "DoD_SF": -1, "SoH_SF": 0, "V_SF": -1, "CellV_SF": -3,
          "A_SF": -1, "AMax_SF": 0},
    124: {"WChaDisChaGra_SF": 0, "MinRsvPct_SF": 0, "ChaState_SF": -1, "StorAval_SF": 0,
          "InBatV_SF": -1, "InOutWRte_SF": -2},
}
GARBAGE_POWER_FACTOR = 3  # "garbage" reports three times the rating
_EVT1_UNDER_SOC_MIN_WARNING = 1 << 14
_EVT1_OVER_SOC_MAX_WARNING = 1 << 16


def _sf_for(largest: float, max_raw: int) -> int:
    """The smallest scale factor (>= 0) at which `largest` fits in `max_raw` register steps."""
    sf = 0
    while abs(largest) / 10**sf > max_raw:
        sf += 1
    return sf


def _scale_factors(model: BatteryModel) -> dict[int, dict[str, int]]:
    w_max = max(model.max_charge_w, model.max_discharge_w, 1.0)
    w_sf = _sf_for(GARBAGE_POWER_FACTOR * w_max, 0x7FFF)
    return {
        802: {**SCALE_FACTORS[802], "WHRtg_SF": _sf_for(model.capacity_wh, 0xFFFE),
              "WChaDisChaMax_SF": _sf_for(w_max, 0xFFFE), "W_SF": w_sf},
        124: {**SCALE_FACTORS[124], "WChaMax_SF": _sf_for(w_max, 0xFFFE)},
    }


class SimBatteryError(Exception):
    """The simulated battery was asked something it cannot do (unknown fault, not started)."""


class SimBattery:
    """A SunSpec battery on Modbus TCP; `run` serves until cancelled.

    `port=0` binds a free port, reported by `port` once `ready` is set.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_id: int = 1,
        model: BatteryModel | None = None,
        serial: str = "SIM-0001",
        step_s: float = 0.2,
        base: int = 40000,
    ) -> None:
        self._host, self._requested_port = host, port
        self._port: int | None = None
        self.unit_id = unit_id
        self._model = model or BatteryModel(capacity_wh=50_000, max_charge_w=25_000, max_discharge_w=25_000)
        self._serial = serial
        self.step_s = step_s
        self.layout: Layout = build_layout(MODEL_IDS, base)
        self._image = self._initial_image()
        self._fault = "none"
        self._last_step_at: float | None = None
        self._writable = {
            a for p in self.layout.points.values() if p.writable for a in range(p.address, p.address + p.size)
        }
        c = self.layout.point
        self._command_addrs = {
            c(124, n).address for n in ("StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms", "WChaMax")
        }
        self._reserve_addrs = {c(802, "SoCRsvMin").address, c(802, "SocRsvMax").address}
        self._refresh()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (known once `run` is ready)."""
        if self._port is None:
            raise SimBatteryError("the simulated battery is not listening yet")
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
        """Fail on command: "none", "silent", "exception" (Modbus exception 4) or "garbage"."""
        if mode not in FAULT_MODES:
            raise SimBatteryError(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        self._fault = mode
        self._refresh()

    def point(self, model_id: int, name: str) -> object:
        """The value of a point as the battery currently reports it."""
        return get_point(self._image, self.layout, model_id, name)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve the battery until cancelled; the model steps every `step_s` seconds."""
        await serve_registers(
            unit_id=self.unit_id, start=self.layout.base, count=self.layout.size, action=self._on_request,
            host=self._host, port=self._requested_port, period_s=self.step_s, step=self._advance,
            listening=self._listening, ready=ready, name="sim-battery-step", trace_pdu=self._trace_pdu,
        )

    @classmethod
    def for_config(cls, battery, *, host: str, port: int) -> "SimBattery":
        """The battery a square's `[battery]` section describes, at 60 % SoC, listening on host:port."""
        model = BatteryModel(
            capacity_wh=battery.capacity_kwh * 1000, max_charge_w=battery.max_charge_w,
            max_discharge_w=battery.max_discharge_w, soc_pct=60.0,
            soc_min_pct=battery.soc_min_pct, soc_max_pct=battery.soc_max_pct,
        )
        return cls(host=host, port=port, unit_id=battery.unit_id, model=model)

    def _listening(self, port: int | None) -> None:
        self._port = port
        if port is not None:
            self._last_step_at = asyncio.get_running_loop().time()
            log.info("simulated battery listening on %s:%s unit %s", self._host, port, self.unit_id)

    def _advance(self) -> None:
        """Step the model to the loop's current time and refresh the registers."""
        now = asyncio.get_running_loop().time()
        if self._last_step_at is not None and now > self._last_step_at:
            was_reverted = self._model.reverted
            self._model.step(now - self._last_step_at)
            if self._model.reverted and not was_reverted:
                for name in ("StorCtl_Mod", "InWRte", "OutWRte"):
                    set_point(self._image, self.layout, 124, name, 0)
        self._last_step_at = now
        self._refresh()

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
        if self._fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        offset = address - start_address
        if set_values is None:
            # pymodbus reads a register back after writing it, under the write's function code
            if function_code not in READ_CODES | WRITE_CODES:
                return ExcCodes.ILLEGAL_FUNCTION
            registers[offset : offset + count] = read_regs(self._image, self.layout.base, address, count)
            return None
        if function_code not in WRITE_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._write(address, [int(v) for v in set_values])

    def _write(self, address: int, values: Sequence[int]) -> ExcCodes | None:
        addrs = range(address, address + len(values))
        if any(a not in self._writable for a in addrs):
            return ExcCodes.ILLEGAL_ADDRESS
        self._advance()
        before = list(self._image)
        write_regs(self._image, self.layout.base, address, values)
        error = None
        if not self._reserve_addrs.isdisjoint(addrs):
            error = self._apply_reserve()
        if error is None and not self._command_addrs.isdisjoint(addrs):
            error = self._apply_command()
        if error is not None:
            self._image[:] = before
        return error

    def _apply_reserve(self) -> ExcCodes | None:
        """Model 802 SoCRsvMin / SocRsvMax become the model's SoC bounds."""
        low = get_point(self._image, self.layout, 802, "SoCRsvMin")
        high = get_point(self._image, self.layout, 802, "SocRsvMax")
        if low is None or high is None or not 0 <= low <= high <= 100:
            return ExcCodes.ILLEGAL_VALUE
        self._model.soc_min_pct, self._model.soc_max_pct = float(low), float(high)
        self._refresh()
        return None

    def _apply_command(self) -> ExcCodes | None:
        """Turn the model 124 control points into a setpoint for the model."""
        def pt(name: str):
            return get_point(self._image, self.layout, 124, name)

        mod, in_pct, out_pct = pt("StorCtl_Mod"), pt("InWRte") or 0.0, pt("OutWRte") or 0.0
        w_cha_max_w, revert_s = pt("WChaMax"), pt("InOutWRte_RvrtTms") or 0
        if mod is None or mod > 3 or not -100 <= in_pct <= 100 or not -100 <= out_pct <= 100:
            return ExcCodes.ILLEGAL_VALUE
        if w_cha_max_w is None or not 0 <= w_cha_max_w <= self._model.max_charge_w:
            return ExcCodes.ILLEGAL_VALUE
        setpoint_w = setpoint_from_storage(mod, in_pct, out_pct, w_cha_max_w, self._model.max_discharge_w)
        self._model.command(setpoint_w, revert_timeout_s=float(revert_s))
        log.debug("simulated battery: setpoint %.0f W, revert after %s s", setpoint_w, revert_s)
        self._refresh()
        return None

    def _initial_image(self) -> list[int]:
        image = blank_image(self.layout)
        m = self._model
        sfs = _scale_factors(m)
        values = {
            1: {"Mn": "laadplein", "Md": "SimBattery", "Vr": "1.0", "SN": self._serial, "DA": self.unit_id},
            802: {**sfs[802], "AHRtg": round(m.capacity_wh / NOMINAL_V), "WHRtg": m.capacity_wh,
                  "WChaRteMax": m.max_charge_w, "WDisChaRteMax": m.max_discharge_w,
                  "SoCMax": m.soc_max_pct, "SoCMin": m.soc_min_pct, "SocRsvMax": m.soc_max_pct,
                  "SoCRsvMin": m.soc_min_pct, "SoH": 100, "NCyc": 0, "LocRemCtl": 0, "Hb": 0, "CtrlHb": 0,
                  "AlmRst": 0, "Typ": 4, "SetOp": 1, "SetInvState": 3, "V": NOMINAL_V},
            124: {**sfs[124], "WChaMax": m.max_charge_w, "WChaGra": 100, "WDisChaGra": 100,
                  "StorCtl_Mod": 0, "MinRsvPct": round(m.soc_min_pct), "InOutWRte_WinTms": 0,
                  "InOutWRte_RvrtTms": round(m.revert_timeout_s), "InOutWRte_RmpTms": 0,
                  "OutWRte": 0, "InWRte": 0, "ChaGriSet": 1},
        }
        for model_id, points in values.items():
            for name, value in sorted(points.items(), key=lambda kv: not kv[0].endswith("_SF")):
                set_point(image, self.layout, model_id, name, value)
        return image

    def _refresh(self) -> None:
        """Write the model's state (or the garbage of the fault) into the live points."""
        m, img, lay = self._model, self._image, self.layout
        at_min, at_max = m.soc_pct <= m.soc_min_pct, m.soc_pct >= m.soc_max_pct
        if m.power_w > 0:
            cha_st = 3
        elif m.power_w < 0:
            cha_st = 4
        else:
            cha_st = 2 if at_min else 5 if at_max else 6
        blocked = (m.setpoint_w > 0 and at_min) or (m.setpoint_w < 0 and at_max)
        evt1 = (_EVT1_UNDER_SOC_MIN_WARNING if at_min else 0) | (_EVT1_OVER_SOC_MAX_WARNING if at_max else 0)
        power_w = round(m.power_w)
        live = {
            802: {"SoC": round(m.soc_pct, 1), "DoD": round(100.0 - m.soc_pct, 1), "ChaSt": cha_st,
                  "State": 5 if blocked else 3 if m.power_w else 4, "Evt1": evt1, "Evt2": 0,
                  "EvtVnd1": 0, "EvtVnd2": 0, "W": power_w, "A": round(m.power_w / NOMINAL_V, 1),
                  "ReqW": round(min(max(m.setpoint_w, -m.max_charge_w), m.max_discharge_w))},
            124: {"ChaState": round(m.soc_pct, 1), "ChaSt": cha_st, "InBatV": NOMINAL_V,
                  "StorAval": round(m.energy_wh / NOMINAL_V)},
        }
        if self._fault == "garbage":
            live[802]["SoC"] = None  # 0xFFFF: "not implemented" where a SoC must be
            live[802]["W"] = GARBAGE_POWER_FACTOR * max(m.max_discharge_w, m.max_charge_w, 1.0)
            live[124]["ChaState"] = GARBAGE_CHA_STATE_PCT
        for model_id, points in live.items():
            for name, value in points.items():
                set_point(img, lay, model_id, name, value)
