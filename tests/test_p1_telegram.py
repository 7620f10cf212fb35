"""P1 telegrams: the simulator's telegrams read back by dsmr-parser, CRC and garbage rejected, framing, log tally."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import pytest
from dsmr_parser.parsers import TelegramParser
from hypothesis import given
from hypothesis import strategies as st

from drivers.meters.p1 import (
    MAX_UNFRAMED_CHARS,
    VERSIONS,
    BadTelegram,
    P1ConfigError,
    P1Meter,
    P1Values,
    TelegramFramer,
    TelegramTally,
    decode_telegram,
    telegram_parser,
)
from drivers.meters.sdm630 import implausible
from drivers.sim.p1 import EQUIPMENT_ID, build_telegram, garble, seal_telegram

AT = datetime(2026, 11, 28, 13, 5, 9, tzinfo=UTC)
V5 = TelegramParser(VERSIONS["5"].spec)  # reads every line, as a check of the simulator
READER = telegram_parser("5")  # reads what a reading needs, as the driver does
currents = st.floats(-400.0, 400.0, allow_nan=False)
powers = st.floats(-250_000.0, 250_000.0, allow_nan=False)
# both DST flags and the doubled autumn hour; DSMR years have two digits, which strptime reads as
# 1969-2068
times = st.datetimes(datetime(2000, 1, 1), datetime(2068, 12, 31), timezones=st.just(UTC))


def replace_line(telegram: str, prefix: str, new: str | None) -> str:
    """The telegram with its line starting `prefix` replaced by `new` (or dropped), sealed with a fresh CRC."""
    body = telegram.rstrip("\r\n").rsplit("!", 1)[0]
    lines = [(new if line.startswith(prefix) else line) for line in body.split("\r\n")]
    assert any(line.startswith(prefix) for line in body.split("\r\n")), prefix
    return seal_telegram("\r\n".join(line for line in lines if line is not None) + "\r\n!")


def kind_of(telegram: str) -> str:
    with pytest.raises(BadTelegram) as caught:
        decode_telegram(telegram, READER)
    return caught.value.kind


@given(st.tuples(currents, currents, currents), powers, times)
def test_built_telegram_parses_to_the_same_currents_power_and_time(currents_a, power_w, at):
    telegram = build_telegram(currents_a, power_w, at)
    parsed = V5.parse(telegram)
    assert parsed.P1_MESSAGE_TIMESTAMP.value == at.replace(microsecond=0)
    assert parsed.EQUIPMENT_IDENTIFIER.value == EQUIPMENT_ID
    values = decode_telegram(telegram, READER)
    # DSMR 5 sends whole amperes without direction, and kW with three decimals
    assert values.current_a == tuple(float(math.floor(abs(a) + 0.5)) for a in currents_a)
    assert values.power_w == pytest.approx(power_w, abs=0.5 + 1e-6)


def test_a_known_telegram_reads_as_expected():
    telegram = build_telegram((12.4, 7.6, -3.0), 3500.0, AT, voltage_v=231.0)
    assert "0-0:1.0.0(261128140509W)\r\n" in telegram  # Dutch winter time, one hour ahead of UTC
    assert "1-0:22.7.0(00.000*kW)" in telegram and "1-0:62.7.0(00.693*kW)" in telegram
    assert decode_telegram(telegram, READER) == decode_telegram(telegram, V5) == P1Values((12.0, 8.0, 3.0), 3500.0)
    returning = decode_telegram(build_telegram((0.0, 0.0, 20.0), -4600.0, AT), READER)
    assert returning == P1Values((0.0, 0.0, 20.0), -4600.0)


def test_summer_time_carries_the_s_flag_which_tells_the_doubled_autumn_hour_apart():
    telegram = build_telegram((1.0, 1.0, 1.0), 0.0, datetime(2026, 7, 1, 10, 0, 0, tzinfo=UTC))
    assert "0-0:1.0.0(260701120000S)\r\n" in telegram
    first, second = datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    stamps = [V5.parse(build_telegram((1.0, 1.0, 1.0), 0.0, at)).P1_MESSAGE_TIMESTAMP for at in (first, second)]
    assert [s.values[0]["value"] for s in stamps] == [first, second]
    assert "0-0:1.0.0(261025023000S)" in build_telegram((1.0, 1.0, 1.0), 0.0, first)
    assert "0-0:1.0.0(261025023000W)" in build_telegram((1.0, 1.0, 1.0), 0.0, second)


def test_crc_line_is_the_crc16_of_the_body():
    telegram = build_telegram((5.0, 6.0, 7.0), 4140.0, AT)
    body, crc = telegram.rsplit("!", 1)
    assert crc.endswith("\r\n") and len(crc) == 6
    assert int(crc[:4], 16) == TelegramParser.crc16(body + "!")
    with pytest.raises(ValueError):
        seal_telegram("no start!")


@given(st.data())
def test_any_changed_character_fails_the_crc(data):
    telegram = build_telegram((16.0, 16.0, 15.0), 11_000.0, AT)
    end = telegram.rindex("!")
    pos = data.draw(st.integers(1, end - 1), label="position")
    alphabet = st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="/!")
    new = data.draw(alphabet.filter(lambda c: c != telegram[pos]), label="character")
    assert kind_of(telegram[:pos] + new + telegram[pos + 1 :]) == "crc"


def test_garbage_is_rejected_by_kind():
    framer = TelegramFramer()
    telegrams, dropped = framer.feed(garble(build_telegram((10.0, 10.0, 10.0), 6900.0, AT)))
    assert not dropped
    assert [kind_of(t) for t in telegrams] == ["crc", "unparsable"]


def test_telegrams_without_currents_or_power_are_incomplete():
    telegram = build_telegram((10.0, 11.0, 12.0), 7500.0, AT)
    assert kind_of(replace_line(telegram, "1-0:31.7.0", None)) == "incomplete"
    assert kind_of(replace_line(telegram, "1-0:71.7.0", None)) == "incomplete"
    assert kind_of(replace_line(telegram, "1-0:1.7.0", None)) == "incomplete"
    one_phase = replace_line(replace_line(telegram, "1-0:51.7.0", None), "1-0:71.7.0", None)
    assert decode_telegram(one_phase, READER) == P1Values((10.0, 0.0, 0.0), 7500.0)
    no_return = replace_line(telegram, "1-0:2.7.0", None)
    assert decode_telegram(no_return, READER).power_w == 7500.0


@pytest.mark.parametrize(
    ("prefix", "line", "kind"),
    [
        ("1-0:31.7.0", "1-0:31.7.0(-05*A)", "implausible"),
        ("1-0:51.7.0", "1-0:51.7.0(20000*A)", "implausible"),
        ("1-0:1.7.0", "1-0:1.7.0(NaN*kW)", "implausible"),
        ("1-0:31.7.0", "1-0:31.7.0(012*V)", "unparsable"),
        ("1-0:2.7.0", "1-0:2.7.0(00.100*W)", "unparsable"),
    ],
)
def test_implausible_values_and_wrong_units_are_rejected(prefix, line, kind):
    assert kind_of(replace_line(build_telegram((12.0, 12.0, 12.0), 8280.0, AT), prefix, line)) == kind


def test_plausibility_rules():
    assert implausible((0.0, 80.0, 10_000.0), -50_000.0) is None
    assert "L2 current is negative" in implausible((1.0, -0.5, 1.0), 0.0)
    assert "L3 current is not a number" in implausible((1.0, 1.0, math.nan), 0.0)
    assert "above 10000 A" in implausible((10_000.1, 1.0, 1.0), 0.0)
    assert "total power is not a number" in implausible((1.0, 1.0, 1.0), math.inf)
    assert "beyond" in implausible((1.0, 1.0, 1.0), -1e9)


def test_the_reader_leaves_ids_and_logs_unread_but_checks_them_in_the_crc():
    failure_log = "1-0:99.97.0(2)(0-0:96.7.19)(261101152415W)(0000000240*s)(261101151004W)(0000000301*s)"
    telegram = replace_line(build_telegram((10.0, 10.0, 10.0), 6900.0, AT), "1-0:99.97.0", failure_log)
    parsed = READER.parse(telegram)
    assert not hasattr(parsed, "EQUIPMENT_IDENTIFIER") and not hasattr(parsed, "POWER_EVENT_FAILURE_LOG")
    assert decode_telegram(telegram, READER) == P1Values((10.0, 10.0, 10.0), 6900.0)
    assert kind_of(telegram.replace(EQUIPMENT_ID, EQUIPMENT_ID[::-1])) == "crc"


def test_a_broken_line_never_puts_the_equipment_id_in_the_log(caplog):
    """Even a parser that reads the id line (the driver's does not) keeps it out of the log."""
    caplog.set_level(logging.DEBUG)
    telegram = build_telegram((10.0, 10.0, 10.0), 6900.0, AT)
    broken = replace_line(telegram, "0-0:96.1.1", f"0-0:96.1.1({EQUIPMENT_ID})({EQUIPMENT_ID})")
    assert decode_telegram(broken, V5) == P1Values((10.0, 10.0, 10.0), 6900.0)
    assert EQUIPMENT_ID not in caplog.text


@given(
    st.lists(st.integers(1, 400), min_size=1, max_size=60),
    st.binary(max_size=80).map(lambda b: b.replace(b"/", b"").replace(b"!", b"")),
)
def test_framing_does_not_depend_on_how_the_stream_is_cut(cuts, noise):
    telegrams = [build_telegram((float(i), 2.0, 3.0), 100.0 * i, AT) for i in range(3)]
    stream = noise + noise.join(t.encode("ascii") for t in telegrams) + noise
    framer, out, at = TelegramFramer(), [], 0
    for size in cuts * (len(stream) // len(cuts) + 1):
        chunk, at = stream[at : at + size], at + size
        if chunk:
            framed, dropped = framer.feed(chunk)
            assert not dropped
            out.extend(framed)
    assert out == telegrams


def test_noise_that_never_frames_is_dropped_and_the_stream_recovers():
    framer = TelegramFramer()
    junk = b"x" * 1000
    dropped_at = [i for i in range(MAX_UNFRAMED_CHARS // 1000 + 2) if framer.feed(junk)[1]]
    assert dropped_at == [MAX_UNFRAMED_CHARS // 1000]
    telegram = build_telegram((4.0, 5.0, 6.0), 3450.0, AT)
    assert framer.feed(b"/partial line\r\n" + telegram.encode("ascii")) == ([telegram], False)


def test_tally_counts_every_rejection_and_logs_each_kind_once_a_minute():
    tally = TelegramTally(every_s=60.0)
    assert tally.note("crc", 0.0) == 1
    assert [tally.note("crc", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert tally.note("junk", 10.0) == 1  # another kind has its own minute
    assert tally.note("crc", 60.0) == 4
    assert tally.note("crc", 61.0) is None
    assert tally.counts == {"crc": 6, "junk": 1}


@pytest.mark.parametrize(
    ("version", "timeout_s", "stale_after_s"),
    [("5", 0.5, 3.0), ("5", 2.0, 6.0), ("5B", 1.0, 3.0), ("4", 1.0, 30.0), ("5S", 1.0, 30.0), ("5L", 10.0, 30.0)],
)
def test_silence_counts_after_three_expected_intervals(version, timeout_s, stale_after_s):
    meter = P1Meter(host="p1.local", port=2001, dsmr_version=version, on_reading=print, timeout_s=timeout_s)
    assert meter.stale_after_s == stale_after_s
    assert meter.where == "p1.local:2001"


@pytest.mark.parametrize("version", ["2.2", "Q3D"])
def test_versions_without_phase_currents_are_refused(version):
    with pytest.raises(P1ConfigError, match="no per-phase current"):
        P1Meter(serial_port="/dev/ttyUSB0", dsmr_version=version, on_reading=print)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"host": "p1.local", "port": 2001, "serial_port": "/dev/ttyUSB0"}, {"host": "p1.local"},
     {"serial_port": "/dev/ttyUSB0", "dsmr_version": "6"}, {"serial_port": "/dev/ttyUSB0", "timeout_s": 0}],
)
def test_unusable_settings_are_refused(kwargs):
    with pytest.raises(P1ConfigError):
        P1Meter(on_reading=print, **kwargs)


def test_serial_settings_follow_the_version_at_the_configured_baud_rate():
    v4 = P1Meter(serial_port="/dev/ttyUSB0", baudrate=115200, dsmr_version="4", on_reading=print)
    v5 = P1Meter(serial_port="/dev/ttyAMA0", baudrate=57600, dsmr_version="5", on_reading=print)
    assert v4.where == "/dev/ttyUSB0"
    assert {k: v4.serial_settings()[k] for k in ("url", "baudrate", "bytesize", "parity")} == {
        "url": "/dev/ttyUSB0", "baudrate": 115200, "bytesize": 7, "parity": "E",
    }
    assert {k: v5.serial_settings()[k] for k in ("url", "baudrate", "bytesize", "parity")} == {
        "url": "/dev/ttyAMA0", "baudrate": 57600, "bytesize": 8, "parity": "N",
    }
    assert "timeout" not in v5.serial_settings()
