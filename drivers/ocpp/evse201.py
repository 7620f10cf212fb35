"""What the gateway keeps of an OCPP 2.0.1 charger's EVSEs and transactions between messages, and how
that maps onto the square's version-neutral connector status.

A 2.0.1 charger reports a connector's status (Available, Occupied, Reserved, Unavailable, Faulted)
and, separately, a transaction's charging state (Charging, SuspendedEV, ...). The rest of the
gateway speaks one status vocabulary, OCPP 1.6's words (signage.md defines "plugged" for both
versions), so the two are combined here into one of those words. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.contract.words import (
    AVAILABLE,
    CHARGING,
    FAULTED,
    FINISHING,
    PREPARING,
    RESERVED,
    SUSPENDED_EV,
    SUSPENDED_EVSE,
    UNAVAILABLE,
)

MAX_TRANSACTIONS_PER_CHARGER = 16  # more open at once can only be made-up transaction ids

# A transaction's chargingState while the cable is in -> the 1.6 word for the connector.
_IN_TRANSACTION = {
    "Charging": CHARGING,
    "SuspendedEV": SUSPENDED_EV,
    "SuspendedEVSE": SUSPENDED_EVSE,
    "EVConnected": PREPARING,  # plugged, not (yet) charging
    "Idle": PREPARING,
}
# A 2.0.1 connector status that has a 1.6 word of the same name -> that word.
_PLAIN = {"Available": AVAILABLE, "Reserved": RESERVED, "Unavailable": UNAVAILABLE, "Faulted": FAULTED}


# When one EVSE has several connectors (a socket and a cable), the one that tells most wins.
_PRIORITY = ("Occupied", "Reserved", "Available", "Faulted", "Unavailable")


@dataclass
class Evse:
    """One EVSE: its connectors' last statuses and the transaction running on it."""

    connectors: dict[int, str] = field(default_factory=dict)  # connector id -> 2.0.1 status
    transaction: str | None = None  # the charger's transactionId while one runs
    charging_state: str | None = None
    ended: bool = False  # the last transaction ended while the cable was in
    reported: str | None = None  # the status last told to the square

    @property
    def connector_status(self) -> str | None:
        """The EVSE's connector status: Occupied if any connector is, else the most telling one."""
        for status in _PRIORITY:
            if status in self.connectors.values():
                return status
        return next(iter(self.connectors.values()), None)

    def set_connector(self, connector_id: int, status: str) -> None:
        """A StatusNotification: a cable going in starts afresh (a new car is not Finishing)."""
        before = self.connector_status
        self.connectors[connector_id] = status
        if self.connector_status != "Occupied" or before != "Occupied":
            self.ended = False

    def transaction_ended(self, charging_state: str | None) -> None:
        self.transaction, self.charging_state = None, charging_state
        self.ended = self.connector_status == "Occupied"  # unplugged first: nothing to finish

    def status(self) -> str | None:
        """The connector's status in the square's (OCPP 1.6) words; None while nothing is known."""
        plain = _PLAIN.get(self.connector_status or "")
        if plain is not None:
            return plain
        plugged = self.connector_status == "Occupied"
        if self.transaction is not None and (plugged or self.charging_state not in (None, "Idle")):
            return _IN_TRANSACTION.get(self.charging_state or "", PREPARING)
        if plugged:
            return FINISHING if self.ended else PREPARING
        return None


@dataclass
class Transaction:
    """A 2.0.1 transaction as the gateway follows it."""

    evse_id: int | None  # None until an event names it (the driver was authorized before plugging in)
    session_id: int | None = None  # the gateway's own transaction id (its session)
    last_seq: int | None = None
    seen: set[int] = field(default_factory=set, repr=False)  # seqNos handled (the last few hundred)
    energy_wh: float | None = None  # the last energy register reading seen
    start_known: bool = True  # False: the session started without a reading; the first one is its start
    tagged: bool = False  # a tag was seen for it
    ended: bool = False
    pending_tag: str | None = field(default=None, repr=False)  # a tag given before the EVSE was known

    def note_seq(self, seq_no: int) -> bool:
        """Remember a seqNo; False when it was handled before (the charger sent the message again)."""
        if seq_no in self.seen:
            return False
        self.seen.add(seq_no)
        if len(self.seen) > 512:
            self.seen.discard(min(self.seen))
        self.last_seq = seq_no if self.last_seq is None else max(self.last_seq, seq_no)
        return True


@dataclass
class ChargerBook:
    """One 2.0.1 charger's EVSEs and recent transactions (kept across its reconnects)."""

    evses: dict[int, Evse] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)

    def evse(self, evse_id: int) -> Evse:
        return self.evses.setdefault(evse_id, Evse())

    def transaction(self, charger_tx: str, evse_id: int | None) -> Transaction:
        """The transaction by the charger's id, made when first seen; its EVSE once an event names it."""
        tx = self.transactions.get(charger_tx)
        if tx is None:
            tx = self.transactions[charger_tx] = Transaction(evse_id)
            for old in list(self.transactions)[:-MAX_TRANSACTIONS_PER_CHARGER]:
                del self.transactions[old]
        elif tx.evse_id is None and evse_id is not None:
            tx.evse_id = evse_id
        return tx


def sequence_problem(last_seq: int | None, seq_no: int) -> str | None:
    """What is wrong with a TransactionEvent's seqNo after `last_seq` (None: first seen), or None.

    Sequence numbers count up by one per message of a transaction: a repeat is a message the
    charger sent again (its answer was lost), a jump means messages were lost.
    """
    if last_seq is None:
        return None
    if seq_no == last_seq:
        return f"seqNo {seq_no} repeated"
    if seq_no < last_seq:
        return f"seqNo {seq_no} after {last_seq}: out of order"
    if seq_no > last_seq + 1:
        return f"seqNo {seq_no} after {last_seq}: {seq_no - last_seq - 1} message(s) missing"
    return None


def meter_values_as_v16(meter_value: object) -> object:
    """2.0.1 `meterValue` entries in the 1.6 shape `drivers.ocpp.frames.parse_meter_values` reads.

    2.0.1 sends `value` as a number with `unitOfMeasure {unit, multiplier}` (value x 10^multiplier
    in unit); 1.6 a string with `unit`. Anything unexpected is passed on for the parser to report.
    """
    if not isinstance(meter_value, list):
        return meter_value
    out = []
    for entry in meter_value:
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        sampled = entry.get("sampledValue")
        values = []
        for sv in sampled if isinstance(sampled, list) else []:
            if not isinstance(sv, dict):
                values.append(sv)
                continue
            v16 = {k: sv[k] for k in ("context", "measurand", "phase", "location") if k in sv}
            unit = sv.get("unitOfMeasure") if isinstance(sv.get("unitOfMeasure"), dict) else {}
            raw = sv.get("value")
            multiplier = unit.get("multiplier", 0)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and isinstance(multiplier, int) and -9 <= multiplier <= 9:
                v16["value"] = repr(float(raw) * 10**multiplier)
            else:
                v16["value"] = raw
            if "unit" in unit:
                v16["unit"] = unit["unit"]
            values.append(v16)
        out.append({"timestamp": entry.get("timestamp"), "sampledValue": values})
    return out


def energy_wh(samples: list) -> float | None:
    """The last energy register reading among parsed samples (Wh), or None."""
    for s in reversed(samples):
        if s.energy_wh is not None:
            return s.energy_wh
    return None
