"""The transaction half of the OCPP backend (`drivers.contract.backend.CentralSystemBackend`): tags,
starts and stops, meter values, kept in the live state (`controller.shell.state`) and its store.

What a charger is told is true is committed before the answer leaves (interfaces.md §7); tags only
ever leave here as their keyed hash (§8).
"""

from __future__ import annotations

import logging
from datetime import datetime

from controller.shell.state import SquareState
from drivers.contract import events as ev
from drivers.contract.backend import KnownTransaction, TransactionAnswer
from drivers.contract.words import ACCEPTED, INVALID


class Transactions:
    """The square's answers to chargers' authorizations and transactions, kept in `state` and its store."""

    def __init__(self, state: SquareState) -> None:
        self.state = state

    async def authorize(self, charger_id: str, id_tag: str) -> str:
        status = await self._tag_status(id_tag)
        self.state.rare(logging.INFO, charger_id, f"authorize-{status}", "charger %s: tag %s… authorized: %s", charger_id, self.state.store.hash_tag(id_tag)[:8], status)
        return status

    async def _tag_status(self, id_tag: str) -> str:
        if self.state.cfg.ocpp.auth == "free":
            return ACCEPTED
        return await self.state.store.tokens.status(id_tag, self.state.clock())

    async def start_transaction(
        self, charger_id: str, connector_id: int, id_tag: str | None, meter_start_wh: int, timestamp: datetime,
        *, charger_tx: str | None = None,
    ) -> TransactionAnswer:
        if charger_tx is not None:
            known = await self.state.store.session_by_charger_tx(charger_id, charger_tx)
            if known is not None and known["stopped"] is None:  # the charger sent its start again
                return TransactionAnswer(known["id"], await self._tag_status(id_tag) if id_tag else ACCEPTED)
        status = await self._tag_status(id_tag) if id_tag is not None else ACCEPTED
        bay = self.state.cfg.bay_for(charger_id, connector_id)
        configured = next((c for c in self.state.cfg.chargers if c.id == charger_id), None)
        if configured is not None and not 1 <= connector_id <= configured.connectors:
            # A connector the config does not have is one power sharing cannot steer or count: the
            # session is recorded (its stop must find it) but not authorized.
            status = INVALID
            self.state.rare(
                logging.WARNING, charger_id, "start-unknown-connector",
                "charger %s started a transaction on connector %s, which the config does not have (it has %s):"
                " answered Invalid; check [[chargers]] connectors", charger_id, connector_id, configured.connectors,
            )
        tag_hash = self.state.store.hash_tag(id_tag or "")
        # The charger holds a transaction id whatever the status: record the session in every case
        # so that its StopTransaction finds it (OCPP 1.6 §4.8: the charger may stop it itself).
        tx_id = await self.state.store.start_transaction(
            charger_id, connector_id, bay.id if bay else None, tag_hash, int(meter_start_wh), timestamp,
            charger_tx=charger_tx,
        )
        conn = self.state.connector(charger_id, connector_id)
        if conn is not None:
            if conn.transaction_id is not None and conn.transaction_id != tx_id:
                await self.state.close_unseen(charger_id, connector_id, conn.transaction_id, timestamp,
                                      f"the charger started transaction {tx_id} on the same connector")
            conn.transaction_id, conn.tx_seen_at, conn.charger_tx = tx_id, self.state.clock(), charger_tx
        self.state.note(
            "transaction_started",
            f"{self.state.where(charger_id, connector_id)}: transaction {tx_id} started, "
            + (f"tag {tag_hash[:8]}…, {status}" if id_tag is not None else "no tag yet"),
            at=self.state.clock(),
            charger_id=charger_id,
            bay_id=bay.id if bay else None,
            data={"transaction_id": tx_id, "meter_start_wh": meter_start_wh, "auth": status},
        )
        return TransactionAnswer(transaction_id=tx_id, status=status)

    async def stop_transaction(
        self,
        charger_id: str,
        transaction_id: int,
        meter_stop_wh: int,
        timestamp: datetime,
        reason: str | None,
        id_tag: str | None,
        samples: list[ev.MeterSample],
    ) -> str | None:
        owner = await self.state.store.session(transaction_id)
        if owner is not None and owner["charger"] != charger_id:
            # StopTransaction is a report the charger retries until answered: answer it, change nothing.
            connector_id = samples[0].connector_id if samples else 0
            self._foreign(charger_id, connector_id, "StopTransaction", transaction_id, owner)
            return INVALID
        if samples:
            tx = transaction_id if owner is not None else None  # an unknown id may be a later session's
            await self.state.store.add_meter_samples([_sample_row(s, tx) for s in samples])
        row = await self.state.store.stop_transaction(transaction_id, int(meter_stop_wh), timestamp, reason)
        if row is None:
            self.state.rare(logging.WARNING, charger_id, "stop-unknown", "charger %s stopped transaction %s, which the gateway does not know", charger_id, transaction_id)
        else:
            conn = self.state.connector(row["charger"], row["connector"])
            if conn is not None and conn.transaction_id == transaction_id:
                conn.transaction_id, conn.charger_tx = None, None
            energy = row.get("energy_wh")
            self.state.note(
                "transaction_stopped",
                f"{self.state.where(row['charger'], row['connector'])}: transaction {transaction_id} stopped"
                f" ({reason or 'Local'}), {energy if energy is not None else '?'} Wh",
                at=self.state.clock(),
                charger_id=charger_id,
                bay_id=row.get("bay"),
                data={"transaction_id": transaction_id, "energy_wh": energy, "reason": reason},
            )
        return await self._tag_status(id_tag) if id_tag else None

    async def transaction_for(self, charger_id: str, charger_tx: str) -> KnownTransaction | None:
        row = await self.state.store.session_by_charger_tx(charger_id, charger_tx)
        if row is None:
            return None
        energy = row["meter_stop_wh"] if row["meter_stop_wh"] is not None else row["meter_start_wh"] + (row["energy_wh"] or 0)
        return KnownTransaction(
            session_id=row["id"], connector_id=row["connector"], stopped=row["stopped"] is not None,
            energy_wh=float(energy), tagged=row["tag_hash"] != self.state.store.hash_tag(""),
        )

    async def transaction_meter_start(self, charger_id: str, transaction_id: int, meter_start_wh: int) -> None:
        await self.state.store.set_meter_start(transaction_id, meter_start_wh)

    async def transaction_tag(self, charger_id: str, transaction_id: int, id_tag: str) -> str:
        status = await self._tag_status(id_tag)
        await self.state.store.set_tag_hash(transaction_id, self.state.store.hash_tag(id_tag))
        self.state.rare(logging.INFO, charger_id, f"tx-tag-{status}", "charger %s: transaction %s got its tag %s…: %s",
                  charger_id, transaction_id, self.state.store.hash_tag(id_tag)[:8], status)
        return status

    async def meter_values(self, charger_id: str, samples: list[ev.MeterSample], *, live: bool = True) -> None:
        rows = []
        owners: dict[int, dict | None] = {}
        for s in samples:
            conn = self.state.connector(s.charger_id, s.connector_id)
            tx = s.transaction_id if s.transaction_id is not None else (conn.transaction_id if conn else None)
            if s.transaction_id is not None and (conn is None or conn.transaction_id != tx):
                if tx not in owners:
                    owners[tx] = await self.state.store.session(tx)
                tx = self._own_transaction(s, owners[tx])
            rows.append(_sample_row(s, tx))
        if rows:
            await self.state.store.add_meter_samples(rows)
        for s in samples if live else ():
            self.state.record(s)

    def _own_transaction(self, s: ev.MeterSample, owner: dict | None) -> int | None:
        """The transaction to store a sample under: the one it names when that is this connector's own
        (a late sample after the stop, a restart), else none (the reading is kept, no session's energy moves)."""
        assert s.transaction_id is not None
        if owner is not None and (owner["charger"], owner["connector"]) == (s.charger_id, s.connector_id):
            return s.transaction_id
        if owner is None:
            self.state.rare(logging.WARNING, s.charger_id, "samples-unknown-tx",
                            "%s: meter values for transaction %s, which the gateway does not know; kept without it",
                            self.state.where(s.charger_id, s.connector_id), s.transaction_id)
        else:
            self._foreign(s.charger_id, s.connector_id, "MeterValues", s.transaction_id, owner)
        return None

    def _foreign(self, charger_id: str, connector_id: int, action: str, transaction_id: int, owner: dict) -> None:
        self.state.record(ev.ForeignTransaction(
            charger_id, connector_id, self.state.clock(), action, str(transaction_id), f"{owner['charger']}/{owner['connector']}",
        ))

    def data_transfer(self, charger_id: str, vendor_id: str, message_id: str | None, data: str | None) -> str:
        self.state.rare(logging.INFO, charger_id, "datatransfer", "charger %s: DataTransfer from vendor %r message %r rejected (unknown)", charger_id, vendor_id, message_id)
        return "Rejected"


def _sample_row(s: ev.MeterSample, tx_id: int | None) -> tuple:
    return (s.charger_id, s.connector_id, tx_id, s.at, *s.current_a, s.power_w, s.energy_wh)
