"""What a simulated charger keeps for the time the gateway is gone: the outbox, where
transaction-related messages (OCPP 1.6 §4.x: StartTransaction, StopTransaction, MeterValues of a
transaction; 2.0.1 E: TransactionEvent) wait and go out in order once it is back, each retried a
few times when refused or unanswered; and the local authorization list, the tags it may let
start a transaction on its own (1.6 §3.5, 2.0.1 C13/D01)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TX_ATTEMPTS = 3  # a transaction message the gateway answers with a CALLERROR is tried this often
TX_RETRY_S = 1.0  # pause before sending a refused or unanswered transaction message again
OUTBOX_LIMIT = 10_000  # messages kept while the gateway is gone; beyond, the oldest meter values go


class SimChargerError(Exception):
    """The simulated charger cannot do what it was asked (not connected, tag refused, no transaction)."""


class CallLost(SimChargerError):
    """The link to the gateway went before the answer to a call came."""


@dataclass(eq=False)
class TxMessage:
    """A transaction-related message, built when it happened (its timestamp and reading) and sent when it can be.

    `action` names what happened in OCPP 1.6 words, whatever the version on the wire (2.0.1's
    TransactionEvent Started, Updated with a reading, Ended are StartTransaction, MeterValues,
    StopTransaction; an Updated for a new charging state is StatusNotification).
    `meter_wh` is what it reports of the energy register (meterStart, the reading, meterStop; Wh);
    `answer`, when a caller waits for it, gets the gateway's answer or the reason it was given up.
    """

    action: str  # StartTransaction | MeterValues | StopTransaction | StatusNotification
    payload: Any  # the ocpp library's call object
    connector: int
    # 1.6: None in a StartTransaction whose caller waits for the gateway's id; a provisional
    # (negative) id for a transaction started offline, replaced once the gateway numbers it.
    # 2.0.1: the charger's own id.
    transaction_id: int | str | None
    timestamp: str
    meter_wh: float
    seq: int = 0
    answer: asyncio.Future[Any] | None = None
    refusals: int = 0


@dataclass(frozen=True)
class Confirmed:
    """A transaction-related message the gateway answered: what the charger knows the gateway has (Wh)."""

    action: str  # in OCPP 1.6 words, as TxMessage.action
    connector: int
    transaction_id: int | str  # 1.6: the gateway's id; 2.0.1: the charger's
    timestamp: str
    meter_wh: float


class Outbox:
    """Transaction-related messages not yet answered, oldest first.

    OCPP 1.6 §4.x: a charger queues them while the central system is unreachable and delivers
    them in order once it is back, before newer ones; one refused with a CALLERROR is retried a
    few times, then given up. Nothing here sends: the charger's delivery task does.
    """

    def __init__(self, *, attempts: int = TX_ATTEMPTS, limit: int = OUTBOX_LIMIT) -> None:
        self.attempts = attempts
        self.limit = limit
        self.dropped: list[TxMessage] = []  # given up after refusals, or pushed out when full
        self._items: deque[TxMessage] = deque()
        self._seq = 0
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._items)

    def pending(self) -> list[TxMessage]:
        """The messages waiting, oldest first."""
        return list(self._items)

    @property
    def last_seq(self) -> int:
        """The number of the newest message ever put in (0: none yet)."""
        return self._seq

    def put(self, message: TxMessage) -> TxMessage:
        """Queue a message behind every older one; when full, the oldest meter values make room."""
        if len(self._items) >= self.limit:
            oldest = next((m for m in self._items if m.action == "MeterValues"), None)
            if oldest is None:
                raise SimChargerError("the outbox is full of transaction starts and stops")
            self._items.remove(oldest)
            self.dropped.append(oldest)
        self._seq += 1
        message.seq = self._seq
        self._items.append(message)
        self._wake()
        return message

    def head(self) -> TxMessage | None:
        """The oldest message, the one to send next."""
        return self._items[0] if self._items else None

    def delivered(self, message: TxMessage) -> bool:
        """The gateway answered the message: it leaves the outbox. False if it had been withdrawn meanwhile."""
        return self.withdraw(message)

    def refused(self, message: TxMessage) -> bool:
        """The gateway answered with a CALLERROR; True when the message is given up (it then leaves)."""
        message.refusals += 1
        if message.refusals < self.attempts:
            return False
        self.withdraw(message)
        self.dropped.append(message)
        return True

    def withdraw(self, message: TxMessage) -> bool:
        """Take a message out (delivered, given up, or a start its caller gave up); False if it was not in."""
        try:
            self._items.remove(message)
        except ValueError:
            return False
        self._wake()
        return True

    async def next(self) -> TxMessage:
        """The oldest message, once there is one (it stays in until delivered or withdrawn)."""
        while not self._items:
            await self._changed()
        return self._items[0]

    async def settled(self, seq: int) -> None:
        """Return once every message up to number `seq` has left the outbox."""
        while self._items and self._items[0].seq <= seq:
            await self._changed()

    async def _changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _settle(message: TxMessage, *, result: Any = None, exc: BaseException | None = None) -> None:
    """Tell whoever waits for a message's answer (if anyone still does) how it went."""
    if message.answer is None or message.answer.done():
        return
    if exc is not None:
        message.answer.set_exception(exc)
    else:
        message.answer.set_result(result)


# --- the local authorization list ------------------------------------------------------------


@dataclass(frozen=True)
class ListEntry:
    """A tag's entry in the local authorization list: its status and when that runs out (None: never)."""

    status: str  # Accepted | Blocked | Expired | Invalid | ... (the version's words)
    expiry: datetime | None = None


class LocalList:
    """The tags a charger may accept while the gateway is gone, as the gateway sent them (SendLocalList).

    A Full update replaces the list; a Differential one adds and changes the entries it carries
    and removes those it sends without information, and must raise the version. Pure: every time
    is an argument.
    """

    def __init__(self) -> None:
        self.version = 0  # 0: no list yet
        self.entries: dict[str, ListEntry] = {}

    def update(self, version: int, update_type: str, entries: list[tuple[str, ListEntry | None]]) -> str:
        """Apply a SendLocalList: Accepted, VersionMismatch, or Failed (and then nothing changes)."""
        if update_type not in ("Full", "Differential") or version < 0:
            return "Failed"
        tags = [tag for tag, _ in entries]
        if len(set(tags)) != len(tags) or (update_type == "Full" and any(e is None for _, e in entries)):
            return "Failed"
        if update_type == "Differential" and version <= self.version:
            return "VersionMismatch"
        kept = {} if update_type == "Full" else dict(self.entries)
        for tag, entry in entries:
            if entry is None:
                kept.pop(tag, None)
            else:
                kept[tag] = entry
        self.version, self.entries = version, kept
        return "Accepted"

    def status(self, tag: str, now: datetime) -> str | None:
        """The tag's status at `now` (Expired once its entry ran out), or None when it is not listed."""
        entry = self.entries.get(tag)
        if entry is None:
            return None
        if entry.status == "Accepted" and entry.expiry is not None and entry.expiry <= now:
            return "Expired"
        return entry.status
