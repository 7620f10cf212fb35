"""The one wire format of times (drivers.contract.clock): UTC, milliseconds, Z; naive datetimes refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.contract.clock import (
    local_text,
    parse_ts,
    parse_ts_or_none,
    wire_ts,
    wire_ts_or_none,
)

T0 = datetime(2026, 11, 28, 13, 5, 9, 123456, tzinfo=UTC)


def test_wire_ts_is_utc_with_milliseconds_and_z_whatever_the_offset():
    assert wire_ts(T0) == "2026-11-28T13:05:09.123Z"
    assert wire_ts(T0.astimezone(timezone(timedelta(hours=-5)))) == "2026-11-28T13:05:09.123Z"
    assert wire_ts(datetime(26, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0026-01-02T03:04:05.000Z"


def test_naive_datetimes_are_refused_everywhere_a_time_is_written():
    with pytest.raises(ValueError, match="no timezone"):
        wire_ts(datetime(2026, 11, 28, 13, 5, 9))
    with pytest.raises(ValueError):
        wire_ts_or_none(datetime(2026, 11, 28, 13, 5, 9))
    assert wire_ts_or_none(None) is None


@pytest.mark.parametrize("text", ["2026-11-28T13:05:09.123Z", "2026-11-28T13:05:09.123z",
                                  "2026-11-28T14:05:09.123+01:00", " 2026-11-28T13:05:09.123 "])
def test_parse_ts_reads_z_offsets_and_offsetless_text_as_utc(text):
    assert parse_ts(text) == datetime(2026, 11, 28, 13, 5, 9, 123000, tzinfo=UTC)
    assert parse_ts(text).tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-45T00:00:00Z", "9999-12-31T23:00:00-05:00"])
def test_parse_ts_says_value_error_for_what_is_not_a_time(text):
    with pytest.raises(ValueError):
        parse_ts(text)
    assert parse_ts_or_none(text) is None


def test_parse_ts_or_none_takes_anything():
    for junk in (None, 17, b"2026-11-28T13:05:09Z", ["x"]):
        assert parse_ts_or_none(junk) is None


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)))
def test_what_is_written_reads_back_to_the_millisecond(at):
    assert parse_ts(wire_ts(at)) == at.replace(microsecond=at.microsecond // 1000 * 1000)


def test_local_text_names_the_zone():
    assert local_text(T0, "Europe/Amsterdam") == "2026-11-28 14:05:09 CET"


@given(st.text(max_size=80) | st.from_regex(r"\A[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9:.]{1,20}([+-][0-9]{2}:[0-9]{2}|Z)?\Z"))
def test_a_device_s_timestamp_never_raises_anything_but_none(text):
    # Charger and API times are hostile: whatever the text, a time in UTC or None, never an exception.
    at = parse_ts_or_none(text)
    assert at is None or at.tzinfo is UTC
