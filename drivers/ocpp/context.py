"""What every charger's connection shares with the server that accepted it (as the `ocpp` library's
own `Context`): the backend, the timing settings, the fault log and the books that outlive a connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from drivers.contract.backend import CentralSystemBackend
from drivers.contract.clock import utc_now
from drivers.contract.events import ChargerOverLimit
from drivers.ocpp.evse201 import ChargerBook
from drivers.ocpp.message_limits import MessageLimits
from drivers.ocpp.pacing import FrameLimits, MessagePace
from drivers.support.fault_log import FaultLog

DROP_LOG_INTERVAL_S = 60.0
"""A charger repeating the same fault gets one log line per kind in this long."""

logger = logging.getLogger("laadplein.ocpp")


@dataclass
class LinkContext:
    """The server's side of every link: built once by `OcppServer`, handed to each `ChargerLink`."""

    backend: CentralSystemBackend
    heartbeat_interval_s: int
    call_timeout_s: float
    # It outlives each connection, so a charger that reconnects is still held to it.
    faults: FaultLog = field(default_factory=lambda: FaultLog(DROP_LOG_INTERVAL_S))
    tx_connectors: dict[tuple[str, int], int] = field(default_factory=dict)
    """OCPP 1.6: (charger, transaction) -> connector."""
    books201: dict[str, ChargerBook] = field(default_factory=dict)
    """OCPP 2.0.1: charger -> its EVSEs and transactions."""
    limits: FrameLimits = field(default_factory=FrameLimits)
    paces: dict[str, MessagePace] = field(default_factory=dict)
    """charger -> its message bucket; kept across connections, so reconnecting does not refill it."""
    own_calls: bool = True
    told_limits: dict[str, MessageLimits] = field(default_factory=dict)
    """charger -> per-message limits the operator gave for it (PUT /api/chargers/<id>/message-limits);
    they hold on every connection, beside what its answers say."""
    """False: the gateway sends no request of its own accord, not even to read a charger's per-message
    limits before a request they could split (those are then learned only from answers passing through)."""

    def pace(self, charger_id: str) -> MessagePace:
        """The message bucket of a charger, made full at its first message."""
        pace = self.paces.get(charger_id)
        if pace is None:
            pace = MessagePace(self.limits.max_messages_per_s, self.limits.message_burst, time.monotonic())
            self.paces[charger_id] = pace
        return pace

    def note_over_limit(self, charger_id: str, cap: str, what: str) -> None:
        """A charger went over one of its caps: logged, and told to the backend (for its alarm) at most
        once a minute per charger and cap."""
        held = self.faults.admit(charger_id, f"over {cap}", time.monotonic())
        if held is None:
            return
        logger.warning("charger %s: %s%s", charger_id, what, f" ({held} more like it in the last minute)" if held else "")
        self.backend.record(ChargerOverLimit(charger_id, what, utc_now()))

    def note_malformed(self, charger_id: str, what: str, reason: str) -> None:
        """Log a malformed frame (`what`: dropped or answered), at most once per charger and kind a minute."""
        self.faults.log(logger, logging.WARNING, charger_id, what, "charger %s: %s a malformed frame: %s", charger_id, what, reason)
