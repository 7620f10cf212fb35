"""SunSpec register maps built from pysunspec2's JSON model definitions, and point encoding.

Pure functions shared by the simulated battery and the SunSpec battery driver: lay out a chain of
models (`SunS` marker, models, end marker), encode and decode points with their scale factors and
the SunSpec "not implemented" values, and turn a model 124 command into a power setpoint.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
BASE_ADDRESSES = (40000, 0, 50000)
STOR_CTL_CHARGE = 0x1  # model 124 StorCtl_Mod bit 0
STOR_CTL_DISCHARGE = 0x2  # model 124 StorCtl_Mod bit 1

_FIXED_SIZE = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1, "pad": 1,
    "sunssf": 1, "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2, "bitfield32": 2,
    "ipaddr": 2, "float32": 2, "int64": 4, "uint64": 4, "acc64": 4, "float64": 4,
    "eui48": 4, "ipv6addr": 8,
}
# (struct format, not-implemented raw value) per numeric type; accumulators use 0.
_NUMERIC = {
    "int16": (">h", -0x8000), "sunssf": (">h", -0x8000), "uint16": (">H", 0xFFFF),
    "count": (">H", 0xFFFF), "enum16": (">H", 0xFFFF), "bitfield16": (">H", 0xFFFF),
    "acc16": (">H", 0), "pad": (">H", None), "int32": (">i", -0x80000000),
    "uint32": (">I", 0xFFFFFFFF), "enum32": (">I", 0xFFFFFFFF),
    "bitfield32": (">I", 0xFFFFFFFF), "acc32": (">I", 0), "ipaddr": (">I", 0),
    "int64": (">q", -0x8000000000000000), "uint64": (">Q", 0xFFFFFFFFFFFFFFFF),
    "acc64": (">Q", 0),
}
_FLOAT = {"float32": (">f", 0x7FC00000, ">I"), "float64": (">d", 0x7FF8000000000000, ">Q")}


class SunSpecMapError(ValueError):
    """A model definition, layout or point value does not fit the SunSpec rules."""


@dataclass(frozen=True)
class PointDef:
    """One point of a model definition; `offset` counts registers from the model's ID register."""

    name: str
    type: str
    size: int
    offset: int
    sf: str | int | None = None
    writable: bool = False


@dataclass(frozen=True)
class ModelDef:
    """A model definition flattened to its points; `length` is the model's L (registers after ID and L)."""

    model_id: int
    name: str
    points: tuple[PointDef, ...]
    length: int


@dataclass(frozen=True)
class PointAddr:
    """Where a point lives in a device map: absolute `address`, type, size and scale factor point."""

    model_id: int
    name: str
    address: int
    type: str
    size: int
    sf: str | int | None
    writable: bool


@dataclass(frozen=True)
class ModelBlock:
    """One model in a device map: the address of its ID register and its length L."""

    model_id: int
    address: int
    length: int


@dataclass(frozen=True)
class Layout:
    """A device map: `SunS` at `base`, then `models`, then the end marker at `end_address`."""

    base: int
    models: tuple[ModelBlock, ...]
    points: Mapping[tuple[int, str], PointAddr]
    end_address: int

    @property
    def size(self) -> int:
        """Number of registers from `base` up to and including the end marker (ID and L)."""
        return self.end_address + 2 - self.base

    def point(self, model_id: int, name: str) -> PointAddr:
        """The point `name` of model `model_id`; KeyError names what is missing."""
        try:
            return self.points[(model_id, name)]
        except KeyError:
            raise KeyError(f"model {model_id} has no point {name!r} in this layout") from None

    def sf_value(self, image: Sequence[int], point: PointAddr) -> int | None:
        """The scale factor exponent of `point` as found in `image` (None: unscaled or not implemented)."""
        if point.sf is None or isinstance(point.sf, int):
            return point.sf
        sf_point = self.point(point.model_id, point.sf)
        raw = read_regs(image, self.base, sf_point.address, 1)
        return decode_point(raw, "sunssf")


@lru_cache(maxsize=None)
def load_model_def(model_id: int, repeats: int = 0) -> ModelDef:
    """Model `model_id` from pysunspec2's JSON definitions; repeating groups appear `repeats` times."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SunSpecMapError(f"no SunSpec definition for model {model_id}") from None
    points: list[PointDef] = []
    _flatten_group(raw["group"], "", repeats, points)
    if [p.name for p in points[:2]] != ["ID", "L"]:
        raise SunSpecMapError(f"model {model_id} does not start with ID and L")
    end = max(p.offset + p.size for p in points)
    return ModelDef(model_id, raw["group"]["name"], tuple(points), end - 2)


def _flatten_group(group: Mapping[str, Any], prefix: str, repeats: int, out: list[PointDef]) -> None:
    offset = out[-1].offset + out[-1].size if out else 0
    own_names = {q["name"] for q in group.get("points", [])}
    for p in group.get("points", []):
        ptype = p["type"]
        size = int(p["size"]) if ptype == "string" else _FIXED_SIZE.get(ptype, 0)
        if size <= 0:
            raise SunSpecMapError(f"point {p['name']} has unknown type {ptype!r}")
        sf = p.get("sf")
        if isinstance(sf, str) and sf.lstrip("-").isdigit():
            sf = int(sf)
        elif isinstance(sf, str) and sf in own_names:
            sf = prefix + sf  # a scale factor inside a repeated group is that repetition's own
        out.append(PointDef(prefix + p["name"], ptype, size, offset, sf, p.get("access") == "RW"))
        offset += size
    for sub in group.get("groups", []):
        declared = sub.get("count")
        if declared is None:
            _flatten_group(sub, f"{prefix}{sub['name']}.", repeats, out)
            continue
        count = declared if isinstance(declared, int) else repeats
        for i in range(count):
            _flatten_group(sub, f"{prefix}{sub['name']}[{i}].", repeats, out)


def build_layout(
    model_ids: Iterable[int], base: int = 40000, repeats: Mapping[int, int] | None = None
) -> Layout:
    """Lay out `SunS` at `base`, then each model in order, then the end marker (0xFFFF, L 0)."""
    address = base + 2
    blocks: list[ModelBlock] = []
    points: dict[tuple[int, str], PointAddr] = {}
    for model_id in model_ids:
        if any(b.model_id == model_id for b in blocks):
            raise SunSpecMapError(f"model {model_id} appears twice; this layout keys points by model id")
        mdef = load_model_def(model_id, (repeats or {}).get(model_id, 0))
        blocks.append(ModelBlock(model_id, address, mdef.length))
        for p in mdef.points:
            points[(model_id, p.name)] = PointAddr(
                model_id, p.name, address + p.offset, p.type, p.size, p.sf, p.writable
            )
        address += mdef.length + 2
    if address + 2 > 0x10000:
        raise SunSpecMapError(f"layout from base {base} runs past register 65535")
    return Layout(base, tuple(blocks), points, address)


def blank_image(layout: Layout) -> list[int]:
    """Registers from `layout.base` with the marker, model IDs and lengths, every point not implemented."""
    image = [0] * layout.size
    image[0:2] = SUNS_MARKER
    for point in layout.points.values():
        write_regs(image, layout.base, point.address, encode_point(None, point.type, size=point.size))
    for block in layout.models:
        write_regs(image, layout.base, block.address, [block.model_id, block.length])
    write_regs(image, layout.base, layout.end_address, [END_MODEL_ID, 0])
    return image


def read_regs(image: Sequence[int], base: int, address: int, count: int) -> list[int]:
    """`count` registers of `image` (which starts at `base`) from `address`."""
    start = address - base
    if start < 0 or start + count > len(image):
        raise SunSpecMapError(f"registers {address}-{address + count - 1} are outside the map")
    return list(image[start : start + count])


def write_regs(image: MutableSequence[int], base: int, address: int, regs: Sequence[int]) -> None:
    """Put `regs` into `image` (which starts at `base`) at `address`."""
    start = address - base
    if start < 0 or start + len(regs) > len(image):
        raise SunSpecMapError(f"registers {address}-{address + len(regs) - 1} are outside the map")
    image[start : start + len(regs)] = regs


def set_point(image: MutableSequence[int], layout: Layout, model_id: int, name: str, value: Any) -> None:
    """Write `value` (in the point's units, scaled by the sf already in `image`) into `image`."""
    point = layout.point(model_id, name)
    regs = encode_point(value, point.type, layout.sf_value(image, point), size=point.size)
    write_regs(image, layout.base, point.address, regs)


def get_point(image: Sequence[int], layout: Layout, model_id: int, name: str) -> Any:
    """The value of a point in its units (None when not implemented)."""
    point = layout.point(model_id, name)
    raw = read_regs(image, layout.base, point.address, point.size)
    if point.sf is not None and not isinstance(point.sf, int):
        sf = layout.sf_value(image, point)
        if sf is None:
            return None
        return decode_point(raw, point.type, sf)
    return decode_point(raw, point.type, point.sf)


def _check_sf(sf: int | None) -> None:
    if sf is not None and not -10 <= sf <= 10:
        raise SunSpecMapError(f"scale factor {sf} is outside -10..10")


def encode_point(value: Any, type: str, sf: int | None = None, *, size: int | None = None) -> list[int]:
    """Registers for `value` (None = not implemented), scaled down by 10**sf."""
    _check_sf(sf)
    if type == "string":
        if size is None:
            raise SunSpecMapError("a string point needs its size in registers")
        data = b"" if value is None else str(value).encode("utf-8")
        if len(data) > size * 2:
            raise SunSpecMapError(f"{value!r} does not fit in {size} registers")
        data = data.ljust(size * 2, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if type in _FLOAT:
        fmt, unimpl, raw_fmt = _FLOAT[type]
        if value is None:
            data = struct.pack(raw_fmt, unimpl)
        else:
            data = struct.pack(fmt, float(value) / 10 ** (sf or 0))
        return _words(data)
    if type not in _NUMERIC:
        raise SunSpecMapError(f"cannot encode SunSpec type {type!r}")
    fmt, unimpl = _NUMERIC[type]
    if value is None:
        raw = 0 if unimpl is None else unimpl
    else:
        scaled = value / 10**sf if sf else value
        raw = int(round(scaled))
        if isinstance(scaled, float) and not math.isfinite(scaled):
            raise SunSpecMapError(f"{value!r} is not a number")
        if unimpl is not None and raw == unimpl and not type.startswith("acc") and type != "ipaddr":
            raise SunSpecMapError(f"{value!r} encodes as the 'not implemented' value of {type}")
    try:
        data = struct.pack(fmt, raw)
    except struct.error:
        raise SunSpecMapError(f"{value!r} (raw {raw}) does not fit in {type}") from None
    return _words(data)


def decode_point(regs: Sequence[int], type: str, sf: int | None = None) -> Any:
    """The value in `regs` scaled up by 10**sf, or None when it is the 'not implemented' value."""
    _check_sf(sf)
    data = b"".join(int(r).to_bytes(2, "big") for r in regs)
    if type == "string":
        text = data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        return text or None
    if type in _FLOAT:
        fmt, unimpl, raw_fmt = _FLOAT[type]
        if struct.unpack(raw_fmt, data)[0] == unimpl:
            return None
        value = struct.unpack(fmt, data)[0]
        return None if math.isnan(value) else value * 10 ** (sf or 0)
    if type not in _NUMERIC:
        raise SunSpecMapError(f"cannot decode SunSpec type {type!r}")
    fmt, unimpl = _NUMERIC[type]
    size = struct.calcsize(fmt)
    if len(data) != size:
        raise SunSpecMapError(f"{type} takes {size // 2} registers, got {len(regs)}")
    raw = struct.unpack(fmt, data)[0]
    if unimpl is not None and raw == unimpl and not type.startswith("acc") and type != "ipaddr":
        return None
    if not sf:
        return raw
    return round(raw * 10**sf, -sf) if sf < 0 else raw * 10**sf


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def setpoint_from_storage(
    stor_ctl_mod: int, in_w_rte_pct: float, out_w_rte_pct: float, w_cha_max_w: float, w_discha_max_w: float
) -> float:
    """The power setpoint (W, positive = discharging) of a plain model 124 command.

    Bit 1 of StorCtl_Mod enables OutWRte (% of the discharge maximum), bit 0 enables InWRte
    (% of WChaMax); a negative rate turns the direction round, as some vendors use it.
    """
    out_w = out_w_rte_pct / 100.0 * w_discha_max_w if stor_ctl_mod & STOR_CTL_DISCHARGE else 0.0
    in_w = in_w_rte_pct / 100.0 * w_cha_max_w if stor_ctl_mod & STOR_CTL_CHARGE else 0.0
    return out_w - in_w


def storage_command(
    setpoint_w: float, w_cha_max_w: float, w_discha_max_w: float, revert_s: int
) -> dict[str, float | int]:
    """Model 124 point values (plain reading) for a setpoint (W, positive = discharging)."""
    if setpoint_w > 0:
        if w_discha_max_w <= 0:
            raise SunSpecMapError("cannot discharge: the discharge maximum is 0 W")
        pct = min(setpoint_w / w_discha_max_w * 100.0, 100.0)
        return {"StorCtl_Mod": STOR_CTL_DISCHARGE, "OutWRte": pct, "InWRte": 0.0, "InOutWRte_RvrtTms": revert_s}
    if setpoint_w < 0:
        if w_cha_max_w <= 0:
            raise SunSpecMapError("cannot charge: WChaMax is 0 W")
        pct = min(-setpoint_w / w_cha_max_w * 100.0, 100.0)
        return {"StorCtl_Mod": STOR_CTL_CHARGE, "OutWRte": 0.0, "InWRte": pct, "InOutWRte_RvrtTms": revert_s}
    return {"StorCtl_Mod": 0, "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_RvrtTms": revert_s}
