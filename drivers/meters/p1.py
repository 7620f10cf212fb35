"""Reads a Dutch smart meter's P1 port (DSMR telegrams, over a serial port or a TCP adapter) as `GridReading`s.

Framing, CRC and parsing are dsmr-parser's; this module adds what a controller needs around it:
timeouts, a meter that stays silent counted as offline, and bad telegrams counted rather than
fatal. The equipment id in a telegram identifies a household in NL: it is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import serialx
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.clients import settings
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.objects import Telegram
from dsmr_parser.parsers import TelegramParser

from drivers.contract.devices import GridReading
from drivers.meters.sdm630 import implausible

log = logging.getLogger("laadplein.meter")

READ_CHUNK = 4096
MAX_UNFRAMED_CHARS = 16384  # a DSMR telegram is 1-3 KiB; this much without one is noise
LOG_EVERY_S = 60.0
READ_LINES = frozenset({
    "INSTANTANEOUS_CURRENT_L1", "INSTANTANEOUS_CURRENT_L2", "INSTANTANEOUS_CURRENT_L3",
    "CURRENT_ELECTRICITY_USAGE", "CURRENT_ELECTRICITY_DELIVERY",
})
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class DsmrVersion:
    """How a P1 port of one DSMR flavour speaks: telegram layout, serial framing, telegram interval (s)."""

    spec: Mapping[str, Any]
    serial: Mapping[str, Any]
    interval_s: float


# DSMR 5 and its Belgian profile send a telegram every second, DSMR 4 and older every 10 s;
# the Luxembourg (Smarty) and Swedish (HAN) ports follow DSMR 5's layout at a 10 s rhythm.
VERSIONS: Mapping[str, DsmrVersion] = {
    "2.2": DsmrVersion(specs.V2_2, settings.SERIAL_SETTINGS_V2_2, 10.0),
    "4": DsmrVersion(specs.V4, settings.SERIAL_SETTINGS_V4, 10.0),
    "5": DsmrVersion(specs.V5, settings.SERIAL_SETTINGS_V5, 1.0),
    "5B": DsmrVersion(specs.BELGIUM_FLUVIUS, settings.SERIAL_SETTINGS_V5, 1.0),
    "5L": DsmrVersion(specs.LUXEMBOURG_SMARTY, settings.SERIAL_SETTINGS_V5, 10.0),
    "5S": DsmrVersion(specs.SWEDEN, settings.SERIAL_SETTINGS_V5, 10.0),
    "Q3D": DsmrVersion(specs.Q3D, settings.SERIAL_SETTINGS_V5, 10.0),
}
REJECTED_BECAUSE = {
    "crc": "bad CRC",
    "unparsable": "does not parse",
    "incomplete": "lacks per-phase current or power",
    "implausible": "implausible values",
    "junk": f"no telegram in {MAX_UNFRAMED_CHARS} characters",
}


class _DropTelegramContent(logging.Filter):
    """Keeps telegram content (its equipment id identifies a household) out of the libraries' logs.

    dsmr-parser logs a line that does not parse together with the line; serialx logs every byte it
    reads at DEBUG. Our reader counts and logs rejected telegrams itself, by kind only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("dsmr_parser"):
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(a, bytes | bytearray | memoryview) for a in args)


_DROP_TELEGRAM_CONTENT = _DropTelegramContent()
for _name in ("dsmr_parser.parsers", "serialx.descriptor_transport"):
    logging.getLogger(_name).addFilter(_DROP_TELEGRAM_CONTENT)


class P1ConfigError(ValueError):
    """The P1 meter was given settings it cannot work with."""


class P1LinkError(Exception):
    """The P1 port could not be opened, went away, or sent no valid telegram in time."""


class BadTelegram(Exception):
    """A telegram that cannot be used; `kind` is a key of `REJECTED_BECAUSE`. The message never quotes it."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class P1Values:
    """What one telegram says: current per phase (A, magnitude) and power (W, import positive)."""

    current_a: tuple[float, float, float]
    power_w: float


def _has_phase_currents(version: DsmrVersion) -> bool:
    return any(o["value_name"] == "INSTANTANEOUS_CURRENT_L1" for o in version.spec["objects"])


def telegram_parser(dsmr_version: str) -> TelegramParser:
    """A parser that checks the whole telegram's CRC but reads only the lines a `GridReading` needs.

    Leaving the other lines unread keeps the equipment ids out of memory, and keeps dsmr-parser's
    power-failure-log parser (which grows a list at every telegram it reads) out of a
    long-running process.
    """
    spec = VERSIONS[dsmr_version].spec
    objects = [o for o in spec["objects"] if o["value_name"] in READ_LINES]
    return TelegramParser({**spec, "objects": objects})


def _quantity(telegram: Telegram, name: str, unit: str) -> float | None:
    """The value of `name` in `unit`, or None when the telegram lacks it."""
    obj = getattr(telegram, name, None)
    if obj is None:
        return None
    if not isinstance(obj.value, Decimal) or obj.unit != unit:
        raise BadTelegram("unparsable", f"{name} is not a number in {unit}")
    return float(obj.value)


def values_of(telegram: Telegram) -> P1Values:
    """Per-phase current and net power of a parsed telegram; a one-phase meter gives 0 A on L2 and L3."""
    l1 = _quantity(telegram, "INSTANTANEOUS_CURRENT_L1", "A")
    l2 = _quantity(telegram, "INSTANTANEOUS_CURRENT_L2", "A")
    l3 = _quantity(telegram, "INSTANTANEOUS_CURRENT_L3", "A")
    if l1 is None or (l2 is None) != (l3 is None):
        raise BadTelegram("incomplete", "the telegram lacks a per-phase current")
    delivered_kw = _quantity(telegram, "CURRENT_ELECTRICITY_USAGE", "kW")
    returned_kw = _quantity(telegram, "CURRENT_ELECTRICITY_DELIVERY", "kW")
    if delivered_kw is None:
        raise BadTelegram("incomplete", "the telegram lacks the power delivered (1.7.0)")
    current_a = (l1, l2 or 0.0, l3 or 0.0)
    power_w = (delivered_kw - (returned_kw or 0.0)) * 1000.0
    why = implausible(current_a, power_w)
    if why is not None:
        raise BadTelegram("implausible", why)
    return P1Values(current_a, round(power_w, 3))


def decode_telegram(text: str, parser: TelegramParser) -> P1Values:
    """Check (CRC where the version has one) and read one framed telegram; raises `BadTelegram`."""
    try:
        ascii_text = text.encode("latin1").decode("ascii")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadTelegram("unparsable", "the telegram is not ASCII") from None
    try:
        telegram = parser.parse(ascii_text)
    except InvalidChecksumError:
        raise BadTelegram("crc", "bad CRC") from None
    except ParseError:
        raise BadTelegram("unparsable", "the telegram does not parse") from None
    except Exception as exc:  # noqa: BLE001 - dsmr-parser re-raises whatever a value parser throws
        raise BadTelegram("unparsable", f"the telegram does not parse ({type(exc).__name__})") from None
    return values_of(telegram)


class TelegramFramer:
    """Cuts a byte stream into telegrams (dsmr-parser's buffer), dropping runs of noise that never frame."""

    def __init__(self, max_unframed_chars: int = MAX_UNFRAMED_CHARS) -> None:
        self.max_unframed_chars = max_unframed_chars
        self._buffer = TelegramBuffer()
        self._unframed = 0

    def feed(self, data: bytes) -> tuple[list[str], bool]:
        """The telegrams completed by `data`, and whether noise was dropped to keep the buffer bounded."""
        # latin-1 maps every byte, so noise cannot break the stream; ASCII is checked per telegram
        self._buffer.append(data.decode("latin1"))
        self._unframed += len(data)
        telegrams = list(self._buffer.get_all())
        if telegrams:
            self._unframed = 0
            return telegrams, False
        if self._unframed > self.max_unframed_chars:
            self._buffer, self._unframed = TelegramBuffer(), 0
            return [], True
        return [], False


class TelegramTally:
    """Rejected telegrams counted per kind; each kind is due for the log at most once per `every_s`."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._total: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    @property
    def counts(self) -> Mapping[str, int]:
        """Rejected telegrams per kind since start."""
        return dict(self._total)

    def note(self, kind: str, at_s: float) -> int | None:
        """Count one of `kind` at `at_s` (s); when the kind is due for the log, how many since it last was."""
        self._total[kind] = self._total.get(kind, 0) + 1
        self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
        last = self._logged_at.get(kind)
        if last is not None and at_s - last < self.every_s:
            return None
        self._logged_at[kind] = at_s
        return self._unlogged.pop(kind)


class P1Meter:
    """A smart meter's P1 port over TCP (host, port) or a serial device; `run` reads it until cancelled.

    A telegram is expected every `interval_s` of its DSMR version; none within three intervals (or
    three `timeout_s`, if longer) is reported as offline and the link is reopened every `retry_s`.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        serial_port: str | None = None,
        baudrate: int = 115200,
        dsmr_version: str = "5",
        on_reading: Callable[[GridReading], None],
        timeout_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        if (serial_port is None) == (host is None):
            raise P1ConfigError("a P1 meter needs either serial_port or host and port")
        if host is not None and port is None:
            raise P1ConfigError("a P1 meter over TCP needs a port")
        version = VERSIONS.get(dsmr_version)
        if version is None:
            raise P1ConfigError(f"unknown dsmr_version {dsmr_version!r}; expected one of {sorted(VERSIONS)}")
        if not _has_phase_currents(version):
            raise P1ConfigError(
                f"dsmr_version {dsmr_version!r} telegrams carry no per-phase current, which power sharing needs"
            )
        for name, value in (("timeout_s", timeout_s), ("retry_s", retry_s)):
            if not 0 < value <= MAX_WAIT_S:
                raise P1ConfigError(f"{name} must be within (0, {MAX_WAIT_S}] s, got {value!r}")
        if baudrate <= 0:
            raise P1ConfigError(f"baudrate must be positive, got {baudrate!r}")
        self.host, self.port, self.serial_port = host, port, serial_port
        self.baudrate, self.dsmr_version = baudrate, dsmr_version
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self.interval_s = version.interval_s
        self.stale_after_s = 3 * max(version.interval_s, timeout_s)
        self._version = version
        self._parser = telegram_parser(dsmr_version)
        self._on_reading = on_reading
        self._tally = TelegramTally()
        self._last: GridReading | None = None

    @property
    def where(self) -> str:
        """The P1 port's address: host:port of its adapter, or the serial device."""
        return self.serial_port if self.serial_port is not None else f"{self.host}:{self.port}"

    @property
    def last(self) -> GridReading | None:
        """The last reading reported (None before the first telegram or failure)."""
        return self._last

    @property
    def rejected(self) -> Mapping[str, int]:
        """Telegrams rejected since start, per kind (see `REJECTED_BECAUSE`)."""
        return self._tally.counts

    def serial_settings(self) -> dict[str, Any]:
        """How the serial port is opened: dsmr-parser's framing for the version, at the configured baud rate."""
        opts = {k: v for k, v in self._version.serial.items() if k != "timeout"}  # our waits bound reads
        opts.update(url=self.serial_port, baudrate=self.baudrate)
        return opts

    async def run(self) -> None:
        """Open the port and read telegrams until cancelled; a failure is reported, then the port reopened."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                reader, writer = await self._open()
                try:
                    await self._read_until_failure(reader)
                finally:
                    writer.close()
            except P1LinkError as exc:
                self._report(GridReading(False, None, None, loop.time(), str(exc)))
            await asyncio.sleep(self.retry_s)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.serial_port is not None:
                    return await serialx.open_serial_connection(**self.serial_settings())
                return await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise P1LinkError(f"cannot open {self.where} within {self.timeout_s} s") from None
        except (OSError, serialx.SerialException) as exc:
            raise P1LinkError(f"cannot open {self.where}: {exc}") from None

    async def _read_until_failure(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        framer = TelegramFramer()
        rejected_kinds: set[str] = set()  # since the last good telegram, for the offline reason
        deadline = loop.time() + self.stale_after_s
        while True:
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                raise P1LinkError(self._silence(rejected_kinds)) from None
            except (OSError, serialx.SerialException) as exc:
                raise P1LinkError(f"{self.where} failed: {exc}") from None
            if not data:
                raise P1LinkError(f"{self.where} closed the connection")
            now = loop.time()
            telegrams, dropped = framer.feed(data)
            if dropped:
                self._reject(BadTelegram("junk", REJECTED_BECAUSE["junk"]), now)
                rejected_kinds.add("junk")
            for text in telegrams:
                try:
                    values = decode_telegram(text, self._parser)
                except BadTelegram as exc:
                    self._reject(exc, now)
                    rejected_kinds.add(exc.kind)
                    continue
                rejected_kinds.clear()
                deadline = now + self.stale_after_s
                self._report(GridReading(True, values.current_a, values.power_w, now))

    def _silence(self, rejected_kinds: set[str]) -> str:
        why = f"no valid telegram from {self.where} for {self.stale_after_s:g} s"
        if rejected_kinds:
            kinds = ", ".join(REJECTED_BECAUSE[k] for k in sorted(rejected_kinds))
            why += f" (telegrams arrive but are rejected: {kinds})"
        return why

    def _reject(self, exc: BadTelegram, at_s: float) -> None:
        unlogged = self._tally.note(exc.kind, at_s)
        if unlogged is not None:
            log.warning(
                "P1 meter at %s: %d telegram(s) rejected, %s (%d in all; logged at most once a minute per kind)",
                self.where, unlogged, exc, self._tally.counts[exc.kind],
            )

    def _report(self, reading: GridReading) -> None:
        before, self._last = self._last, reading
        if not reading.online:
            if before is None or before.online or before.reason != reading.reason:
                log.warning("P1 meter at %s offline: %s; retrying every %s s", self.where, reading.reason, self.retry_s)
        elif before is None or not before.online:
            log.info(
                "P1 meter at %s online: %s A, %.0f W",
                self.where, "/".join(f"{a:g}" for a in reading.current_a or ()), reading.power_w,
            )
        self._on_reading(reading)
