"""What the OCPP central system needs from the rest of the daemon, and the errors of calls to chargers.

The OCPP driver knows the wire; the backend (`controller.shell.backend.SquareBackend`) knows the square.
Handlers call the backend and answer; everything the backend must have on disk before the
answer (transactions, meter values) it commits before its coroutine returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from drivers.contract.events import Event, MeterSample


class CallFailed(Exception):
    """A call from the gateway to a charger did not get a normal answer."""


class ChargerNotConnected(CallFailed):
    """The charger has no open connection."""


class CallTimedOut(CallFailed):
    """The charger did not answer in time."""


class InvalidRequest(ValueError):
    """A request the gateway was asked to send does not fit the charger's OCPP version (never sent)."""


class CallErrorReceived(CallFailed):
    """The charger answered with a CALLERROR."""

    def __init__(self, code: str, description: str, details: object = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


@dataclass(frozen=True)
class KnownTransaction:
    """An OCPP 2.0.1 charger's transaction as the gateway has it on record."""

    session_id: int  # the gateway's transaction id
    connector_id: int  # the EVSE
    stopped: bool
    energy_wh: float | None  # the last energy register reading on record (the start's if none since)
    tagged: bool  # a tag is recorded with it


@dataclass(frozen=True)
class TransactionAnswer:
    """The gateway's answer to StartTransaction: the id and the tag's authorization status."""

    transaction_id: int
    status: str  # Accepted | Blocked | Expired | Invalid | ConcurrentTx


class CentralSystemBackend(Protocol):
    """The square as the OCPP driver sees it."""

    def charger_known(self, charger_id: str) -> bool:
        """True when the charger may connect (it is in the config, or unknown ones are allowed)."""

    def charger_password_ok(self, charger_id: str, password: str | None) -> bool:
        """True when the Basic Auth password fits (or the charger has none set)."""

    def charger_password_known(self, charger_id: str, password: str | None) -> bool | None:
        """What `charger_password_ok` would answer, when it costs no hashing (no password needed, none
        given, or this one seen before); None when only the full check can tell. Runs on the event loop."""

    def charger_lenient(self, charger_id: str) -> bool:
        """True when the charger's schema breaks are to be mended rather than refused (config `lenient`)."""

    def connector_count(self, charger_id: str) -> int:
        """How many connectors (OCPP 2.0.1: EVSEs) the charger has in the config; 0 when unknown."""

    def record(self, event: Event) -> None:
        """Take a domain event (status, connect, boot, heartbeat...); never blocks, never raises."""

    async def authorize(self, charger_id: str, id_tag: str) -> str:
        """The status for an id tag: Accepted | Blocked | Expired | Invalid."""

    async def start_transaction(
        self, charger_id: str, connector_id: int, id_tag: str | None, meter_start_wh: int, timestamp: datetime,
        *, charger_tx: str | None = None,
    ) -> TransactionAnswer:
        """Open a session, committed to storage (synchronous=FULL) before returning.

        `charger_tx` is an OCPP 2.0.1 charger's own name of the transaction: a second start with the
        same name (a replayed event) returns the session already open. `id_tag` None: no tag yet.
        """

    async def transaction_for(self, charger_id: str, charger_tx: str) -> KnownTransaction | None:
        """An OCPP 2.0.1 charger's transaction as the gateway knows it (the newest by that name), or None."""

    async def transaction_meter_start(self, charger_id: str, transaction_id: int, meter_start_wh: int) -> None:
        """The start reading of a session that started without one: the first reading seen."""

    async def transaction_tag(self, charger_id: str, transaction_id: int, id_tag: str) -> str:
        """A tag presented during a transaction that started without one: its status, recorded with the session."""

    async def stop_transaction(
        self,
        charger_id: str,
        transaction_id: int,
        meter_stop_wh: int,
        timestamp: datetime,
        reason: str | None,
        id_tag: str | None,
        samples: list[MeterSample],
    ) -> str | None:
        """Close a session, committed before returning; the tag's status when a tag was given.

        A transaction of another charger is not closed: the charger is answered (Invalid) and a
        `ForeignTransaction` recorded."""

    async def meter_values(self, charger_id: str, samples: list[MeterSample], *, live: bool = True) -> None:
        """Store meter samples (committed before returning) and, with `live`, update the live state
        (not for readings a charger kept while the gateway was away: they are history). A sample naming
        a transaction of another charger or connector is kept without it, and a `ForeignTransaction` recorded."""

    def data_transfer(self, charger_id: str, vendor_id: str, message_id: str | None, data: str | None) -> str:
        """Answer a DataTransfer: Accepted | Rejected | UnknownVendorId | UnknownMessageId."""
