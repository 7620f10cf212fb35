"""The plain records of the square's live state (`controller.shell.state.SquareState` keeps them):
what the gateway knows now of each charger, connector and bay sensor, and the events waiting for the log.

Mutable on purpose: the state applies events to them in place, one at a time, on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from drivers.contract import events as ev


@dataclass
class ConnectorLive:
    """What the gateway knows of one connector now."""

    status: str | None = None
    status_at: datetime | None = None  # the last StatusNotification (a repeat too)
    status_changed_at: datetime | None = None  # when the gateway received the status it has now
    error_code: str = "NoError"
    session_over_at: datetime | None = None
    transaction_id: int | None = None
    charger_tx: str | None = None  # an OCPP 2.0.1 charger's own name of that transaction
    tx_seen_at: datetime | None = None  # when the gateway learnt of the transaction (start, or restore)
    current_a: tuple[float | None, float | None, float | None] = (None, None, None)
    power_w: float | None = None
    energy_wh: float | None = None
    sample_at: datetime | None = None  # when the gateway received `current_a` (never the charger's stamp)
    implausible_at: datetime | None = None  # when it last received a current beyond [0, max x 1.1]
    implausible_a: float | None = None  # that current (A), for the alarm


@dataclass
class ChargerLive:
    """What the gateway knows of one charger now."""

    online: bool = False
    ocpp_version: str | None = None
    connected_at: datetime | None = None
    disconnected_at: datetime | None = None
    last_heard: datetime | None = None
    booted_at: datetime | None = None  # its last BootNotification since the daemon started
    remote: str = ""
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    connectors: dict[int, ConnectorLive] = field(default_factory=dict)
    over_limit: tuple[datetime, datetime, str] | None = None
    """Since when and when last it sent more than its caps allow, and which cap in words."""


@dataclass
class ForeignTxLive:
    """A charger naming transactions not its own: since when, the last time, how often, the first one."""

    first_at: datetime
    last_at: datetime
    count: int
    first: ev.ForeignTransaction


@dataclass
class SensorLive:
    """A bay sensor's last reading; occupied None means a fault or an unreadable message."""

    occupied: bool | None = None
    at: datetime | None = None
    # The sensor said empty under a plugged-in car (signage.rules.sensor_doubted): a fault, counted as
    # occupied, until it reports a car again; since when.
    doubted_at: datetime | None = None


@dataclass(frozen=True)
class LogEntry:
    """An event for the log, waiting to be written by the cycle."""

    kind: str
    at: datetime
    message: str
    bay_id: str | None = None
    charger_id: str | None = None
    data: dict | None = None
