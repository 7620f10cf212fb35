"""A charger's caps: the message bucket and the readings kept of a frame (drivers.ocpp.pacing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ocpp.pacing import MessagePace, trim_readings


def test_a_burst_passes_at_once_and_the_rest_is_paced() -> None:
    pace = MessagePace(rate_per_s=2, burst=3, now_s=0.0)
    assert [pace.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # the three that follow at once wait 0.5, 1.0 and 1.5 s: each pays for itself
    assert [pace.take(0.0) for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])
    assert pace.take(10.0) == 0.0  # refilled, never beyond the burst
    assert [pace.take(10.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.5])


@given(
    rate=st.floats(min_value=0.5, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps_s=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_handled_messages_never_outrun_the_burst_plus_the_rate(rate: float, burst: int, gaps_s: list[float]) -> None:
    """However a charger spaces its messages, those handled by any moment t (each after its delay,
    one at a time, as a connection reads them) number at most burst + rate * t."""
    pace = MessagePace(rate, burst, now_s=0.0)
    clock_s, handled_at = 0.0, []
    for gap_s in gaps_s:
        clock_s += gap_s  # the next frame arrives (or was waiting) ...
        clock_s += pace.take(clock_s)  # ... and is handled after its delay
        handled_at.append(clock_s)
    for n, t in enumerate(handled_at, start=1):
        assert n <= burst + rate * t + 1e-6


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=1, max_value=10))
def test_a_frame_keeps_at_most_the_cap_of_readings_the_newest(count: int, cap: int) -> None:
    readings = [{"timestamp": f"t{i}", "sampledValue": []} for i in range(count)]
    for action, key in (("MeterValues", "meterValue"), ("TransactionEvent", "meterValue"),
                        ("StopTransaction", "transactionData")):
        payload = {"connectorId": 1, key: readings}
        trimmed, dropped = trim_readings(action, payload, cap)
        assert trimmed[key] == readings[-cap:] if count > cap else trimmed[key] == readings
        assert dropped == max(0, count - cap)
        assert payload[key] == readings  # the frame as received is left alone
    other = {"meterValue": readings}
    assert trim_readings("DataTransfer", other, cap) == (other, 0)
