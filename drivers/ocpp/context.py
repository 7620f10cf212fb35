"""What every charger's connection shares with the server that accepted it (as the `ocpp` library's
own `Context`): the backend, the timing settings, the fault log and the books that outlive a connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from drivers.contract.backend import CentralSystemBackend
from drivers.ocpp.evse201 import ChargerBook
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

    def note_malformed(self, charger_id: str, what: str, reason: str) -> None:
        """Log a malformed frame (`what`: dropped or answered), at most once per charger and kind a minute."""
        self.faults.log(logger, logging.WARNING, charger_id, what, "charger %s: %s a malformed frame: %s", charger_id, what, reason)
