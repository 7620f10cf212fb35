"""A simulated Dutch smart meter's P1 port behind a TCP adapter (ser2net style), for the test rig.

Every client gets a DSMR 5 telegram every `interval_s` with the per-phase currents a callable
gives; the port can be told to fall silent or to send garbage (bad CRCs, noise).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dsmr_parser.parsers import TelegramParser

log = logging.getLogger("laadplein.sim.meter")

PhaseCurrents = tuple[float, float, float]

FAULT_MODES = frozenset({"none", "silent", "garbage"})
IDENTIFICATION = "/SIM5\\2LAADPLEIN-P1"
# In a real telegram this identifies the household; the simulated one is recognisable in a log.
EQUIPMENT_ID = "LAADPLEIN-SIM-P1-0000001".encode("ascii").hex().upper()
METER_TZ = ZoneInfo("Europe/Amsterdam")  # DSMR timestamps are Dutch local time with an S/W flag
MAX_CLIENT_BACKLOG = 65536  # bytes; a real P1 port does not wait for a slow reader either
NOISE = b"\x00\xfe\xff P1 line noise \x15\r\n"


class SimP1Error(Exception):
    """The simulated P1 port was asked something it cannot do (unknown fault, not listening yet)."""


def seal_telegram(body: str) -> str:
    """A telegram body from `/` up to and including `!` completed with its CRC16 line."""
    if not body.startswith("/") or not body.endswith("!"):
        raise ValueError("a telegram body runs from '/' up to and including '!'")
    return f"{body}{TelegramParser.crc16(body):04X}\r\n"


def _dsmr_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("the telegram's time must be timezone-aware")
    local = at.astimezone(METER_TZ)
    return f"{local:%y%m%d%H%M%S}{'S' if local.dst() else 'W'}"


def _amperes(current_a: float) -> int:
    """DSMR 5 gives current as a whole number of amperes (format F3(0,0)), without its direction."""
    return math.floor(abs(current_a) + 0.5)


def _split_kw(power_w: float) -> tuple[float, float]:
    """Power (W, import positive) as the meter's pair (delivered kW, returned kW)."""
    return (max(power_w, 0.0) / 1000.0, max(-power_w, 0.0) / 1000.0)


def build_telegram(
    currents_a: PhaseCurrents,
    power_w: float,
    at: datetime,
    *,
    voltage_v: float = 230.0,
    delivered_kwh: float = 0.0,
    returned_kwh: float = 0.0,
) -> str:
    """A DSMR 5.0.2 telegram with its CRC: currents (A, negative = export), power (W, import positive).

    The energy registers (kWh) count at the normal tariff (2); per-phase power follows from
    `voltage_v` and each phase's current.
    """
    delivered_kw, returned_kw = _split_kw(power_w)
    lines = [
        IDENTIFICATION,
        "",
        "1-3:0.2.8(50)",
        f"0-0:1.0.0({_dsmr_time(at)})",
        f"0-0:96.1.1({EQUIPMENT_ID})",
        "1-0:1.8.1(000000.000*kWh)",
        f"1-0:1.8.2({delivered_kwh:010.3f}*kWh)",
        "1-0:2.8.1(000000.000*kWh)",
        f"1-0:2.8.2({returned_kwh:010.3f}*kWh)",
        "0-0:96.14.0(0002)",
        f"1-0:1.7.0({delivered_kw:06.3f}*kW)",
        f"1-0:2.7.0({returned_kw:06.3f}*kW)",
        "0-0:96.7.21(00000)",
        "0-0:96.7.9(00000)",
        "1-0:99.97.0(0)(0-0:96.7.19)",
        "1-0:32.32.0(00000)",
        "1-0:52.32.0(00000)",
        "1-0:72.32.0(00000)",
        "1-0:32.36.0(00000)",
        "1-0:52.36.0(00000)",
        "1-0:72.36.0(00000)",
        "0-0:96.13.0()",
    ]
    for code in ("32", "52", "72"):
        lines.append(f"1-0:{code}.7.0({voltage_v:05.1f}*V)")
    for code, current_a in zip(("31", "51", "71"), currents_a, strict=True):
        lines.append(f"1-0:{code}.7.0({_amperes(current_a):03d}*A)")
    for code, current_a in zip(("21", "41", "61"), currents_a, strict=True):
        phase_in_kw, phase_out_kw = _split_kw(voltage_v * current_a)
        lines.append(f"1-0:{code}.7.0({phase_in_kw:06.3f}*kW)")
        lines.append(f"1-0:{int(code) + 1}.7.0({phase_out_kw:06.3f}*kW)")
    return seal_telegram("\r\n".join(lines) + "\r\n!")


def garble(telegram: str) -> bytes:
    """What the port sends in the "garbage" fault: the telegram with a wrong CRC, noise, a non-ASCII copy."""
    body, crc = telegram.rstrip("\r\n").rsplit("!", 1)
    wrong_crc = f"{body}!{int(crc, 16) ^ 0x5A5A:04X}\r\n"
    non_ascii = seal_telegram(f"{body}!").replace("LAADPLEIN", "LAADPL\xc9IN", 1)
    return wrong_crc.encode("ascii") + NOISE + non_ascii.encode("latin1")


class SimP1Meter:
    """A P1 port on TCP whose currents follow `currents_a()`; `run` serves until cancelled."""

    def __init__(
        self,
        currents_a: Callable[[], PhaseCurrents],
        host: str = "127.0.0.1",
        port: int = 0,
        interval_s: float = 1.0,
        *,
        voltage_v: float = 230.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._currents_a = currents_a
        self._host, self._requested_port = host, port
        self._port: int | None = None
        self.interval_s = interval_s
        self.voltage_v = voltage_v
        self._fault = "none"
        self._writers: set[asyncio.StreamWriter] = set()
        self._delivered_kwh = 0.0
        self._returned_kwh = 0.0
        self.sent = 0

    @property
    def port(self) -> int:
        """The TCP port the server listens on (known once `run` is ready)."""
        if self._port is None:
            raise SimP1Error("the simulated P1 port is not listening yet")
        return self._port

    @property
    def clients(self) -> int:
        """How many clients are connected now."""
        return len(self._writers)

    @property
    def fault(self) -> str:
        """The current fault mode."""
        return self._fault

    def set_fault(self, mode: str) -> None:
        """Behave as `mode`: "none", "silent" (sends nothing) or "garbage" (bad CRCs and noise)."""
        if mode not in FAULT_MODES:
            raise SimP1Error(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        if mode != self._fault:
            log.info("simulated P1 port: fault %s", mode)
        self._fault = mode

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled, sending a telegram to every client every `interval_s` seconds."""
        server = await asyncio.start_server(self._serve_client, self._host, self._requested_port)
        async with server:
            self._port = server.sockets[0].getsockname()[1]
            log.info("simulated P1 port listening on %s:%s", self._host, self._port)
            try:
                if ready is not None:
                    ready.set()
                await self._send_forever()
            finally:
                self._port = None
                for writer in list(self._writers):
                    writer.close()
                server.close()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(1024):
                pass  # a P1 port is send-only: whatever a client says is ignored
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = last_at = loop.time()
        while True:
            now = loop.time()
            l1, l2, l3 = self._currents_a()
            currents_a = (float(l1), float(l2), float(l3))
            power_w = sum(self.voltage_v * a for a in currents_a)
            self._count_energy(power_w, now - last_at)
            last_at = now
            if self._fault != "silent":
                telegram = build_telegram(
                    currents_a, power_w, datetime.now(UTC), voltage_v=self.voltage_v,
                    delivered_kwh=self._delivered_kwh, returned_kwh=self._returned_kwh,
                )
                self._send(garble(telegram) if self._fault == "garbage" else telegram.encode("ascii"))
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def _count_energy(self, power_w: float, elapsed_s: float) -> None:
        kwh = power_w * elapsed_s / 3_600_000.0
        if kwh >= 0:
            self._delivered_kwh += kwh
        else:
            self._returned_kwh -= kwh

    def _send(self, payload: bytes) -> None:
        for writer in list(self._writers):
            if writer.is_closing() or writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
                continue
            writer.write(payload)
        self.sent += 1
