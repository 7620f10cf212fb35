"""How each kind of battery is read and steered: the SunSpec per-vendor table, the Victron grid
setpoint, the register encodings of the `registers` preset, and when a new setpoint counts as a change.

Pure: no I/O, no clock, no logging. The drivers in `drivers/` turn these values into register writes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from battery.sunspec_map import (
    STOR_CTL_CHARGE,
    STOR_CTL_DISCHARGE,
    Layout,
    SunSpecMapError,
    read_regs,
    set_point,
    storage_command,
)
from battery.trust import BatteryRatings

StorageStyle = Literal["plain", "fronius"]

# SunSpec 802 describes W only as "Total power flowing to/from the battery bank". Batteries and
# integrations (evcc reads 802 W as-is) report discharging as positive, like the inverter models
# count power out of the device; our convention is the same, so the sign is kept. A vendor that
# counts the other way gets -1 here, keyed by model 1's Mn (case-insensitive).
POWER_SIGN_BY_MANUFACTURER: Mapping[str, int] = {}
# How a forced charge or discharge is written through model 124, keyed by model 1's Mn
# (case-insensitive). Fronius reads InWRte and OutWRte as limits of a window that may lie wholly on
# one side of zero: a negative charge limit forces a discharge, a negative discharge limit forces a
# charge from the grid. A maker not listed gets the plain reading (see `storage_points`).
STORAGE_BY_MANUFACTURER: Mapping[str, StorageStyle] = {"fronius": "fronius"}
STOR_CTL_BOTH = STOR_CTL_CHARGE | STOR_CTL_DISCHARGE
MAX_RATE_PCT = 100.0
# A written setpoint that moves by more than this share of the larger power rating asks the battery
# for a change (the trust tracker then expects SoC or power to move).
SETPOINT_CHANGE_FRACTION = 0.05
# A setpoint is logged when it moves by more than this (W) since the last one logged, or changes direction.
LOG_STEP_W = 1000.0
VICTRON_STATES: Mapping[int, str] = {0: "idle", 1: "charging", 2: "discharging"}
REGISTER_FORMATS: Mapping[str, str] = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
KW_W = 1000.0


@dataclass(frozen=True)
class SunSpecVendor:
    """How one maker's SunSpec battery is read and steered.

    `power_sign` turns 802 W into ours (positive = discharging); `storage` is how model 124 forces
    a charge or discharge ("plain" or "fronius").
    """

    manufacturer: str
    power_sign: int = 1
    storage: StorageStyle = "plain"


def vendor_for(manufacturer: str) -> SunSpecVendor:
    """The vendor entry for model 1's Mn; a maker not in the tables gets the plain SunSpec reading."""
    key = manufacturer.strip().casefold()
    return SunSpecVendor(
        manufacturer, POWER_SIGN_BY_MANUFACTURER.get(key, 1), STORAGE_BY_MANUFACTURER.get(key, "plain")
    )


def _pct(power_w: float, max_w: float, what: str) -> float:
    if max_w <= 0:
        raise SunSpecMapError(f"cannot {what}: its maximum is {max_w:g} W")
    return min(power_w / max_w * 100.0, MAX_RATE_PCT)


def storage_points(
    vendor: SunSpecVendor, setpoint_w: float, w_cha_max_w: float, w_discha_max_w: float, revert_s: int
) -> dict[str, float | int]:
    """Model 124 points that hold `setpoint_w` (W, positive = discharging) on this vendor's battery.

    InWRte is in % of WChaMax, OutWRte in % of the discharge maximum, InOutWRte_RvrtTms in s. A
    setpoint of 0 turns both limits on at 0 %, so the battery holds still rather than going back to
    its own schedule (StorCtl_Mod 0 is for leaving: see `idle_points`).
    Plain: StorCtl_Mod bit 1 with OutWRte to discharge, bit 0 with InWRte to charge.
    Fronius: both bits, and the rate of the other direction negative.
    """
    if not math.isfinite(setpoint_w):
        raise SunSpecMapError(f"setpoint {setpoint_w!r} W is not a number")
    if setpoint_w == 0:
        return {"StorCtl_Mod": STOR_CTL_BOTH, "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_RvrtTms": revert_s}
    if vendor.storage == "plain":
        return storage_command(setpoint_w, w_cha_max_w, w_discha_max_w, revert_s)
    if setpoint_w > 0:
        out_pct = _pct(setpoint_w, w_discha_max_w, "discharge")
        in_pct = -_pct(setpoint_w, w_cha_max_w, "force a discharge through the charge limit")
    else:
        in_pct = _pct(-setpoint_w, w_cha_max_w, "charge")
        out_pct = -_pct(-setpoint_w, w_discha_max_w, "force a charge through the discharge limit")
    return {"StorCtl_Mod": STOR_CTL_BOTH, "OutWRte": out_pct, "InWRte": in_pct, "InOutWRte_RvrtTms": revert_s}


def idle_points(revert_s: int) -> dict[str, float | int]:
    """Model 124 points that give the battery back to its own control: no limits, rates 0 %."""
    return {"StorCtl_Mod": 0, "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_RvrtTms": revert_s}


def storage_writes(
    layout: Layout, image: Sequence[int], points: Mapping[str, float | int]
) -> list[tuple[int, list[int]]]:
    """The model 124 writes (address, registers) that put `points` in place, scaled by the sfs in `image`.

    The revert timeout goes first and the mode last, so the command is whole once the mode lands;
    the two rates travel in one write when they lie side by side, so no half-changed window is seen.
    """
    new = list(image)
    for name, value in points.items():
        set_point(new, layout, 124, name, value)

    def regs(*names: str) -> tuple[int, list[int]]:
        first = layout.point(124, names[0]).address
        return first, read_regs(new, layout.base, first, len(names))

    out_addr, in_addr = layout.point(124, "OutWRte").address, layout.point(124, "InWRte").address
    rates = [regs("OutWRte", "InWRte")] if in_addr == out_addr + 1 else [regs("OutWRte"), regs("InWRte")]
    return [regs("InOutWRte_RvrtTms"), *rates, regs("StorCtl_Mod")]


def asks_change(before_w: float | None, after_w: float, ratings: BatteryRatings) -> bool:
    """Whether writing `after_w` after `before_w` (W; None: nothing written yet, counts as 0) asks for a change."""
    rating_w = max(ratings.max_charge_w, ratings.max_discharge_w)
    return abs(after_w - (before_w if before_w is not None else 0.0)) > SETPOINT_CHANGE_FRACTION * rating_w


def _direction(setpoint_w: float) -> int:
    return (setpoint_w > 0) - (setpoint_w < 0)


def worth_logging(logged_w: float | None, setpoint_w: float) -> bool:
    """Whether a setpoint (W) is news next to the last one logged: more than 1 kW away, or another direction."""
    if logged_w is None:
        return True
    return abs(setpoint_w - logged_w) > LOG_STEP_W or _direction(setpoint_w) != _direction(logged_w)


def victron_grid_setpoint_w(grid_w: float, battery_w: float, setpoint_w: float) -> float:
    """The ESS grid setpoint (W, positive = taken from the grid) at which the battery delivers `setpoint_w`.

    `grid_w` is the grid power now (sum of the phases, positive = import) and `battery_w` the
    battery's power now (W, positive = discharging). Their sum is what the site needs apart from the
    battery (loads less PV, AC- or DC-coupled), which does not depend on what the battery does, so
    the grid must carry that sum less the battery's setpoint. The battery is measured on its DC
    side: while it discharges the sum overstates the need by the inverter's losses (a few %).
    """
    return grid_w + battery_w - setpoint_w


def register_count(type: str) -> int:
    """How many 16-bit registers a value of `type` takes (int16, uint16: 1; int32, uint32, float32: 2)."""
    return struct.calcsize(REGISTER_FORMATS[type]) // 2


def decode_register(regs: Sequence[int], type: str, word_order: str = "big") -> float:
    """The number in `regs`; each register is big-endian, `word_order` "little" puts the low word first."""
    if len(regs) != register_count(type):
        raise ValueError(f"{type} takes {register_count(type)} registers, got {len(regs)}")
    words = list(regs) if word_order == "big" else list(reversed(regs))
    data = b"".join(int(r).to_bytes(2, "big") for r in words)
    return float(struct.unpack(REGISTER_FORMATS[type], data)[0])


def encode_register(value: float, type: str, word_order: str = "big") -> list[int]:
    """Registers for `value` (rounded to a whole number for the integer types); ValueError when it does not fit."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    number: float | int = value if type == "float32" else round(value)
    try:
        data = struct.pack(REGISTER_FORMATS[type], number)
    except (struct.error, OverflowError):
        raise ValueError(f"{value:g} does not fit in {type}") from None
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words if word_order == "big" else list(reversed(words))


def register_value(raw: float, scale: float, unit: str) -> float:
    """The value in our units (%, W) of a raw register number: raw * scale, kW turned into W."""
    return raw * scale * (KW_W if unit == "kW" else 1.0)


def register_raw(value: float, scale: float, unit: str) -> float:
    """The raw register number for a value in our units (W): the inverse of `register_value`."""
    return value / (KW_W if unit == "kW" else 1.0) / scale
