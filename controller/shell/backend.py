"""The square as the OCPP driver sees it (`drivers.contract.backend.CentralSystemBackend`).

Two parts make it: the live state (`controller.shell.state`) says who may connect and takes the
drivers' events; `controller.shell.transactions` answers tags and keeps the sessions.
"""

from __future__ import annotations

from datetime import datetime

from controller.shell.state import SquareState
from controller.shell.transactions import Transactions
from drivers.contract.backend import KnownTransaction, TransactionAnswer
from drivers.contract.events import Event, MeterSample


class SquareBackend:
    """`CentralSystemBackend` over one square's live state and its transactions."""

    def __init__(self, state: SquareState) -> None:
        self.state = state
        self.transactions = Transactions(state)

    # ---- who may connect, and events: the live state --------------------------------------

    def charger_known(self, charger_id: str) -> bool:
        return self.state.charger_known(charger_id)

    def charger_password_ok(self, charger_id: str, password: str | None) -> bool:
        return self.state.charger_password_ok(charger_id, password)

    def charger_password_known(self, charger_id: str, password: str | None) -> bool | None:
        return self.state.charger_password_known(charger_id, password)

    def charger_lenient(self, charger_id: str) -> bool:
        return self.state.charger_lenient(charger_id)

    def connector_count(self, charger_id: str) -> int:
        return self.state.connector_count(charger_id)

    def record(self, event: Event) -> None:
        self.state.record(event)

    # ---- tags and sessions: the transactions ------------------------------------------------

    async def authorize(self, charger_id: str, id_tag: str) -> str:
        return await self.transactions.authorize(charger_id, id_tag)

    async def start_transaction(
        self, charger_id: str, connector_id: int, id_tag: str | None, meter_start_wh: int, timestamp: datetime,
        *, charger_tx: str | None = None,
    ) -> TransactionAnswer:
        return await self.transactions.start_transaction(
            charger_id, connector_id, id_tag, meter_start_wh, timestamp, charger_tx=charger_tx
        )

    async def transaction_for(self, charger_id: str, charger_tx: str) -> KnownTransaction | None:
        return await self.transactions.transaction_for(charger_id, charger_tx)

    async def transaction_meter_start(self, charger_id: str, transaction_id: int, meter_start_wh: int) -> None:
        await self.transactions.transaction_meter_start(charger_id, transaction_id, meter_start_wh)

    async def transaction_tag(self, charger_id: str, transaction_id: int, id_tag: str) -> str:
        return await self.transactions.transaction_tag(charger_id, transaction_id, id_tag)

    async def stop_transaction(
        self, charger_id: str, transaction_id: int, meter_stop_wh: int, timestamp: datetime,
        reason: str | None, id_tag: str | None, samples: list[MeterSample],
    ) -> str | None:
        return await self.transactions.stop_transaction(
            charger_id, transaction_id, meter_stop_wh, timestamp, reason, id_tag, samples
        )

    async def meter_values(self, charger_id: str, samples: list[MeterSample], *, live: bool = True) -> None:
        await self.transactions.meter_values(charger_id, samples, live=live)

    def data_transfer(self, charger_id: str, vendor_id: str, message_id: str | None, data: str | None) -> str:
        return self.transactions.data_transfer(charger_id, vendor_id, message_id, data)
