"""How much one charger may send: messages per second (a token bucket that slows the reading of its
socket) and meter readings per frame (the newest kept), so one charger, hostile or broken, cannot
fill the gateway's database or take the loop from the others.

OCPP-J has no answer for "too much": a charger sends its next request only after the answer to the
last one (OCPP-J's synchronicity rule, in 1.6 and 2.0.1 alike), and a CALLERROR to a StopTransaction or a
TransactionEvent would make it retry or drop the transaction. So every request is still answered,
only later: a charger that keeps to the protocol is slowed down and loses nothing; one that floods
waits on its own socket's buffers. Pure: the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The list of readings in each request that carries them, per OCPP version's action.
READINGS_KEY: dict[str, str] = {
    "MeterValues": "meterValue",
    "TransactionEvent": "meterValue",
    "StopTransaction": "transactionData",
}


@dataclass(frozen=True)
class FrameLimits:
    """The caps on one charger's traffic: messages per s, a burst in messages, meter readings per frame."""

    max_messages_per_s: float = 10.0
    message_burst: int = 100
    max_samples_per_frame: int = 50


class MessagePace:
    """A token bucket of `burst` messages, refilled at `rate_per_s`: how long to wait before the next one."""

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a message pace needs a positive rate and a burst of at least one message")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_s = now_s

    def take(self, now_s: float) -> float:
        """Count one message received at `now_s` (monotonic s); the delay in s before it is handled (0 within the cap).

        A message handled after its delay has paid for itself: the bucket may go into debt by the
        messages already waiting, so their delays add up and the pace holds whatever the burst.
        """
        elapsed_s = max(0.0, now_s - self._at_s)
        self._at_s = max(self._at_s, now_s)
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s) - 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


def trim_readings(action: str, payload: dict[str, Any], max_samples: int) -> tuple[dict[str, Any], int]:
    """`payload` with at most `max_samples` entries in its list of readings (the last ones: chargers
    send them oldest first), and how many were dropped."""
    key = READINGS_KEY.get(action)
    readings = payload.get(key) if key is not None else None
    if not isinstance(readings, list) or len(readings) <= max_samples:
        return payload, 0
    return {**payload, key: readings[-max_samples:]}, len(readings) - max_samples
