"""OCPP 1.6J handlers of a charger's connection: each records what the charger said and answers it
through the backend; the connection itself (frames, calls, lenient mode) is `drivers.ocpp.link`.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, RegistrationStatus

from drivers.contract.backend import CallFailed, ChargerNotConnected
from drivers.contract.clock import wire_ts
from drivers.contract.events import ChargerBooted, ConnectorStatusChanged
from drivers.ocpp.evse201 import MAX_TRANSACTIONS_PER_CHARGER
from drivers.ocpp.frames import parse_meter_values
from drivers.ocpp.link import ChargerLink, printable, utc_now

logger = logging.getLogger("laadplein.ocpp")

__all__ = ["ChargerLink16"]



class ChargerLink16(ChargerLink):
    """A charger speaking OCPP 1.6J."""

    _ocpp_version = "1.6"
    _call = call
    _call_result = call_result

    async def ask_status(self, connectors: list[int]) -> None:
        """Ask for the status of these connectors: all of them in one request when none has reported."""
        if not connectors:
            return
        if len(connectors) >= (self._backend.connector_count(self.id) or 1):
            await self.request("TriggerMessage", {"requestedMessage": "StatusNotification"})
            return
        for n in connectors:
            try:
                await self.request("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": n})
            except ChargerNotConnected:
                raise
            except CallFailed as exc:
                self._fault("trigger-status", logging.WARNING, "asking for the status of connector %d failed: %s", n, exc)

    # --- handlers: record, ask the backend, answer --------------------------------------------

    def _remember_transaction(self, transaction_id: int, connector_id: int) -> None:
        """Note the connector of a transaction (StopTransaction does not say it), keeping the newest few per charger."""
        known = self._context.tx_connectors
        known[(self.id, transaction_id)] = connector_id
        mine = [key for key in known if key[0] == self.id]
        for key in mine[:-MAX_TRANSACTIONS_PER_CHARGER]:
            del known[key]

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, firmware_version: str = "", **_: Any) -> Any:
        now = utc_now()
        self._backend.record(ChargerBooted(self.id, now, charge_point_vendor, charge_point_model, firmware_version))
        logger.info(
            "charger %s booted: %s %s, firmware %s",
            self.id, printable(charge_point_vendor), printable(charge_point_model), printable(firmware_version) or "?",
        )
        return call_result.BootNotification(
            current_time=wire_ts(now), interval=self._context.heartbeat_interval_s, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=wire_ts(utc_now()))

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str, info: str = "", **_: Any) -> Any:
        self._backend.record(ConnectorStatusChanged(self.id, connector_id, status, utc_now(), error_code, info))
        self.heard.add(connector_id)
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> Any:
        status = await self._backend.authorize(self.id, id_tag)
        return call_result.Authorize(id_tag_info=IdTagInfo(status=status))

    @on(Action.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any) -> Any:
        at = self._time(timestamp, utc_now(), "StartTransaction")
        answer = await self._backend.start_transaction(self.id, connector_id, id_tag, meter_start, at)
        self._remember_transaction(answer.transaction_id, connector_id)
        logger.info("charger %s: transaction %s started on connector %s (%s)", self.id, answer.transaction_id, connector_id, answer.status)
        return call_result.StartTransaction(transaction_id=answer.transaction_id, id_tag_info=IdTagInfo(status=answer.status))

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[Any] | None = None,
        **_: Any,
    ) -> Any:
        now = utc_now()
        connector_id = self._context.tx_connectors.pop((self.id, transaction_id), 0)
        samples, problems = parse_meter_values(
            self.id, connector_id, transaction_id, snake_to_camel_case(transaction_data or []), now
        )
        self._report(problems, "StopTransaction")
        at = self._time(timestamp, now, "StopTransaction")
        status = await self._backend.stop_transaction(self.id, transaction_id, meter_stop, at, reason, id_tag, samples)
        logger.info("charger %s: transaction %s stopped (%s)", self.id, transaction_id, reason or "Local")
        if id_tag is None or status is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(id_tag_info=IdTagInfo(status=status))

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None, **_: Any) -> Any:
        if transaction_id is not None and (self.id, transaction_id) not in self._context.tx_connectors:
            self._remember_transaction(transaction_id, connector_id)
        samples, problems = parse_meter_values(
            self.id, connector_id, transaction_id, snake_to_camel_case(meter_value), utc_now()
        )
        self._report(problems, "MeterValues")
        await self._backend.meter_values(self.id, samples)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None, **_: Any) -> Any:
        return call_result.DataTransfer(status=self._backend.data_transfer(self.id, vendor_id, message_id, data))

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: diagnostics upload %s", self.id, status)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: firmware update %s", self.id, status)
        return call_result.FirmwareStatusNotification()
