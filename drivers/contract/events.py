"""Domain events: what the drivers tell the controller happened, in the square's own terms.

Drivers turn wire messages into these small frozen records; `controller.shell.state` applies them.
Times are timezone-aware UTC datetimes, taken when the gateway received the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drivers.contract.profiles import FoundProfile


@dataclass(frozen=True)
class ChargerConnected:
    """A charger's WebSocket came up (replacing any older connection of the same id)."""

    charger_id: str
    ocpp_version: str  # "ocpp1.6" or "ocpp2.0.1", the negotiated subprotocol
    at: datetime
    remote: str = ""  # peer address, for the log


@dataclass(frozen=True)
class ChargerDisconnected:
    """A charger's WebSocket closed; `reason` says why in a few words."""

    charger_id: str
    at: datetime
    reason: str = ""


@dataclass(frozen=True)
class ChargerBooted:
    """BootNotification received (and Accepted)."""

    charger_id: str
    at: datetime
    vendor: str = ""
    model: str = ""
    firmware: str = ""


@dataclass(frozen=True)
class ChargerHeard:
    """Any message from the charger (heartbeat included): proof of life."""

    charger_id: str
    at: datetime


@dataclass(frozen=True)
class ConnectorStatusChanged:
    """A StatusNotification: OCPP 1.6 status words (Available, Preparing, Charging, ...).

    Connector 0 is the charger as a whole.
    """

    charger_id: str
    connector_id: int
    status: str
    at: datetime
    error_code: str = "NoError"
    info: str = ""


@dataclass(frozen=True)
class MeterSample:
    """Measured values of one connector at one moment: current per phase in A, power in W, energy in Wh.

    A value the charger did not report is None.
    """

    charger_id: str
    connector_id: int
    at: datetime  # the charger's timestamp of the sample
    transaction_id: int | None = None
    current_a: tuple[float | None, float | None, float | None] = (None, None, None)
    power_w: float | None = None
    energy_wh: float | None = None
    offered_a: float | None = None


@dataclass(frozen=True)
class ForeignTransaction:
    """A charger named a transaction that is not its own (another charger's, or another connector's):
    the message was answered and not applied. `connector_id` 0: the message names no connector."""

    charger_id: str
    connector_id: int
    at: datetime
    action: str  # StopTransaction | MeterValues | TransactionEvent
    transaction: str  # the id it named (the gateway's session id, or a 2.0.1 charger's own name)
    owner: str  # whose it is, e.g. "CP02/1"


@dataclass(frozen=True)
class ChargerOverLimit:
    """A charger sent more than its caps allow (`what`: which cap, in words); what it sent beyond was
    slowed down or dropped. Recorded at most once a minute per charger and cap."""

    charger_id: str
    what: str
    at: datetime


@dataclass(frozen=True)
class OccupancyChanged:
    """A bay sensor's reading: occupied True/False; None for a sensor fault or unreadable payload."""

    bay_id: str
    occupied: bool | None
    at: datetime


@dataclass(frozen=True)
class LightAcked:
    """A fixture reports what it now shows."""

    bay_id: str
    seq: int
    color: str
    at: datetime


@dataclass(frozen=True)
class LightForeign:
    """A light command for the bay that the gateway did not send (someone else on the broker); it republishes its own.

    `seq` and `color` as the stranger wrote them (None when unreadable); `retained`: found on the broker
    at (re)connect rather than published live.
    """

    bay_id: str
    seq: int | None
    color: str | None
    retained: bool
    at: datetime


@dataclass(frozen=True)
class BrokerConnected:
    """The MQTT connection is up (again)."""

    at: datetime


@dataclass(frozen=True)
class BrokerLost:
    """The MQTT connection is gone; `reason` says why."""

    at: datetime
    reason: str = ""


@dataclass(frozen=True)
class OverrideSet:
    """A technician holds a bay's light; `until` is the end time (UTC)."""

    bay_id: str
    color: str  # blue | green | off
    until: datetime
    at: datetime
    who: str = ""
    why: str = ""


@dataclass(frozen=True)
class OverrideCleared:
    """A technician's override ended early."""

    bay_id: str
    at: datetime
    who: str = ""


@dataclass(frozen=True)
class ProfilesFound:
    """A charger reported charging profiles someone else set (2.0.1 ReportChargingProfiles)."""

    charger_id: str
    profiles: tuple[FoundProfile, ...]
    at: datetime


Event = (
    ChargerConnected
    | ChargerDisconnected
    | ChargerBooted
    | ProfilesFound
    | ChargerHeard
    | ConnectorStatusChanged
    | MeterSample
    | ForeignTransaction
    | ChargerOverLimit
    | OccupancyChanged
    | LightAcked
    | LightForeign
    | BrokerConnected
    | BrokerLost
    | OverrideSet
    | OverrideCleared
)
