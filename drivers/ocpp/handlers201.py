"""OCPP 2.0.1 handlers of a charger's connection: each turns what the charger said into the square's
version-neutral events and backend calls, and answers; the connection itself is `drivers.ocpp.link`.

A 2.0.1 charger names its transactions itself and reports them through TransactionEvent
(Started/Updated/Ended, numbered by seqNo, replayed with `offline` after an outage); the gateway
keeps its own session id for each (the backend maps the two) and follows EVSE status and
charging state in `drivers.ocpp.evse201`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from drivers.contract.backend import CallFailed, ChargerNotConnected
from drivers.contract.clock import wire_ts
from drivers.contract.events import (
    ChargerBooted,
    ConnectorStatusChanged,
    ForeignTransaction,
    ProfilesFound,
)
from drivers.contract.words import ACCEPTED, INVALID
from drivers.ocpp.evse201 import (
    ChargerBook,
    Transaction,
    energy_wh,
    meter_values_as_v16,
    sequence_problem,
)
from drivers.ocpp.found_profiles import read_profile
from drivers.ocpp.frames import parse_meter_values
from drivers.ocpp.link import ChargerLink, printable, utc_now

logger = logging.getLogger("laadplein.ocpp")

__all__ = ["ChargerLink201"]

# Security events (OCPP 2.0.1 Appendix 1) that say nothing is wrong; the others are logged as warnings.
ROUTINE_SECURITY_EVENTS = frozenset({
    "StartupOfTheDevice", "ResetOrReboot", "SettingSystemTime", "FirmwareUpdated", "ReconfigurationOfSecurityParameters",
})


class ChargerLink201(ChargerLink):
    """A charger speaking OCPP 2.0.1."""

    _ocpp_version = "2.0.1"
    _call = call
    _call_result = call_result

    @property
    def book(self) -> ChargerBook:
        """This charger's EVSEs and transactions, kept by the server across reconnects."""
        books = self._context.books201
        book = books.get(self.id)
        if book is None:
            book = books[self.id] = ChargerBook()
        return book

    async def ask_status(self, connectors: list[int]) -> None:
        """Ask for these EVSEs' connector status (a charger sends them by itself only after a boot)."""
        for evse_id in connectors:
            try:
                await self.request("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": evse_id, "connectorId": 1}})
            except ChargerNotConnected:
                raise
            except CallFailed as exc:
                self._fault("trigger-status", logging.WARNING, "asking for the status of EVSE %d failed: %s", evse_id, exc)

    def _emit(self, evse_id: int, at: datetime, error_code: str = "NoError", *, only_on_change: bool = False) -> None:
        """Tell the square the EVSE's status (in its own words), when one is known."""
        evse = self.book.evse(evse_id)
        status = evse.status()
        if status is None or (only_on_change and status == evse.reported):
            return
        evse.reported = status
        self._backend.record(ConnectorStatusChanged(self.id, evse_id, status, at, error_code, ""))

    # --- provisioning, availability -------------------------------------------------------------

    @on(Action.boot_notification)
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        now = utc_now()
        vendor = str(charging_station.get("vendor_name", ""))
        model = str(charging_station.get("model", ""))
        firmware = str(charging_station.get("firmware_version", ""))
        self._backend.record(ChargerBooted(self.id, now, vendor, model, firmware))
        logger.info(
            "charger %s booted (%s): %s %s, firmware %s",
            self.id, printable(reason), printable(vendor), printable(model), printable(firmware) or "?",
        )
        return call_result.BootNotification(current_time=wire_ts(now), interval=self._context.heartbeat_interval_s, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=wire_ts(utc_now()))

    @on(Action.status_notification)
    def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any) -> Any:
        if evse_id == 0:
            return call_result.StatusNotification()  # the station as a whole: its EVSEs report for themselves
        evse = self.book.evse(evse_id)
        evse.set_connector(connector_id, connector_status)
        self.heard.add(evse_id)
        self._emit(evse_id, utc_now(), "OtherError" if evse.connector_status == "Faulted" else "NoError")
        return call_result.StatusNotification()

    # --- authorization ---------------------------------------------------------------------------

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        status = await self._backend.authorize(self.id, str(id_token.get("id_token", "")))
        return call_result.Authorize(id_token_info={"status": status})

    # --- transactions ---------------------------------------------------------------------------

    @on(Action.transaction_event)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        meter_value: list[Any] | None = None,
        offline: bool = False,
        **_: Any,
    ) -> Any:
        now = utc_now()
        charger_tx = str(transaction_info["transaction_id"])
        evse_id = evse.get("id") if evse else None
        known = self.book.transactions.get(charger_tx)
        if known is not None and known.ended and event_type == "Started":
            del self.book.transactions[charger_tx]  # an id used again (a charger counting afresh): a new transaction
        if charger_tx not in self.book.transactions:
            await self._recover(charger_tx, event_type)
        tx = self.book.transaction(charger_tx, evse_id)
        if evse_id is not None and tx.evse_id is not None and evse_id != tx.evse_id:
            return await self._foreign(tx, charger_tx, evse_id, now, id_token)
        problem = sequence_problem(tx.last_seq, seq_no)
        if problem is not None:
            self._fault("seq", logging.WARNING, "transaction %s: %s%s", printable(charger_tx[:36]), problem, " (sent offline)" if offline else "")
        fresh = tx.note_seq(seq_no)
        late = fresh and tx.last_seq is not None and seq_no < tx.last_seq  # sent before one already handled
        tag, answered = _tag_of(id_token)
        if not fresh:  # handled before: answer again, change nothing
            return await self._answer(tag, answered)
        if tx.evse_id is None:
            return await self._unplaced(tx, charger_tx, event_type, tag, answered)
        tag = tag or tx.pending_tag
        tx.pending_tag = None
        at = self._time(timestamp, now, "TransactionEvent")
        samples, problems = parse_meter_values(
            self.id, tx.evse_id, None, meter_values_as_v16(snake_to_camel_case(meter_value or [])), now
        )
        self._report(problems, "TransactionEvent")
        reading = energy_wh(samples)
        status = await self._placed(tx, charger_tx, tag, reading, at)
        if reading is not None and not late:
            tx.energy_wh = reading
        samples = [_with_tx(s, tx.session_id) for s in samples]
        evse_state = self.book.evse(tx.evse_id)
        if event_type == "Ended":
            await self._end(tx, charger_tx, at, transaction_info.get("stopped_reason"), samples)
            tx.ended = True
            if evse_state.transaction in (charger_tx, None):
                evse_state.transaction_ended(transaction_info.get("charging_state"))
        else:
            if samples:
                # readings the charger kept while the gateway was away are history, not what flows now
                await self._backend.meter_values(self.id, samples, live=not (offline or late))
            if not tx.ended and not late:  # an Updated sent before a later one, or replayed after its Ended, changes nothing live
                evse_state.transaction, evse_state.ended = charger_tx, False
                if "charging_state" in transaction_info:
                    evse_state.charging_state = transaction_info["charging_state"]
        self._emit(tx.evse_id, now, only_on_change=True)
        return await self._answer(None, answered, status)

    async def _foreign(self, tx: Transaction, charger_tx: str, evse_id: int, now: datetime, id_token: dict[str, Any] | None) -> Any:
        """An event naming a transaction of another EVSE (a transaction never moves): answered (the
        charger retries an unanswered one), applied to nothing, its seqNo not counted."""
        self._backend.record(ForeignTransaction(self.id, evse_id, now, "TransactionEvent", charger_tx, f"{self.id}/{tx.evse_id}"))
        _, answered = _tag_of(id_token)
        return await self._answer(None, answered, INVALID)

    async def _answer(self, tag: str | None, answered: bool, status: str | None = None) -> Any:
        """The answer: with idTokenInfo whenever the event carried an idToken (E-rules)."""
        if not answered:
            return call_result.TransactionEvent()
        if status is None:
            status = await self._backend.authorize(self.id, tag) if tag is not None else ACCEPTED
        return call_result.TransactionEvent(id_token_info={"status": status})

    async def _placed(self, tx: Transaction, charger_tx: str, tag: str | None, reading: float | None, at: datetime) -> str | None:
        """Open the session of a transaction on its EVSE, or record what is new about it; the tag's status."""
        assert tx.evse_id is not None
        if tx.session_id is None:
            answer = await self._backend.start_transaction(
                self.id, tx.evse_id, tag, int(reading) if reading is not None else 0, at, charger_tx=charger_tx
            )
            tx.session_id, tx.tagged, tx.start_known = answer.transaction_id, tag is not None, reading is not None
            logger.info(
                "charger %s: transaction %s (%s) started on EVSE %d%s",
                self.id, answer.transaction_id, printable(charger_tx[:36]), tx.evse_id, f" ({answer.status})" if tag else "",
            )
            return answer.status if tag is not None else None
        if not tx.start_known and reading is not None:
            # the start came without a reading: the first one seen stands in for it
            await self._backend.transaction_meter_start(self.id, tx.session_id, int(reading))
            tx.start_known = True
        if tag is not None and not tx.tagged:
            tx.tagged = True
            return await self._backend.transaction_tag(self.id, tx.session_id, tag)
        return None

    async def _unplaced(self, tx: Transaction, charger_tx: str, event_type: str, tag: str | None, answered: bool) -> Any:
        """An event of a transaction no event has placed on an EVSE yet (the driver was authorized before
        plugging in): answer the tag; the session starts once an event names the EVSE."""
        if event_type == "Ended":
            logger.info("charger %s: transaction %s ended before it reached an EVSE", self.id, printable(charger_tx[:36]))
        elif tag is not None:
            tx.pending_tag = tag
        return await self._answer(tag, answered)

    async def _recover(self, charger_tx: str, event_type: str) -> None:
        """A transaction first heard of after a restart of the gateway: its session, from the backend.
        A Started naming a transaction that is over is a new one (a charger counting its ids again)."""
        known = await self._backend.transaction_for(self.id, charger_tx)
        if known is None or (known.stopped and event_type == "Started"):
            return
        tx = self.book.transaction(charger_tx, known.connector_id)
        tx.session_id, tx.tagged, tx.ended, tx.energy_wh = known.session_id, known.tagged, known.stopped, known.energy_wh

    async def _end(self, tx: Transaction, charger_tx: str, at: datetime, reason: str | None, samples: list) -> None:
        assert tx.session_id is not None and tx.evse_id is not None
        stop_wh = tx.energy_wh
        if stop_wh is None:  # no reading in the whole transaction: nothing measured
            known = await self._backend.transaction_for(self.id, charger_tx)
            stop_wh = known.energy_wh if known is not None and known.energy_wh is not None else 0
        await self._backend.stop_transaction(self.id, tx.session_id, int(stop_wh), at, reason, None, samples)
        logger.info(
            "charger %s: transaction %s (%s) ended on EVSE %d (%s)",
            self.id, tx.session_id, printable(charger_tx[:36]), tx.evse_id, printable(reason or "Local"),
        )

    @on(Action.meter_values)
    async def on_meter_values(self, evse_id: int, meter_value: list[Any], **_: Any) -> Any:
        if evse_id == 0:
            return call_result.MeterValues()  # the station's main meter: not a connector's reading
        samples, problems = parse_meter_values(
            self.id, evse_id, None, meter_values_as_v16(snake_to_camel_case(meter_value)), utc_now()
        )
        self._report(problems, "MeterValues")
        await self._backend.meter_values(self.id, samples)
        return call_result.MeterValues()

    # --- reports and notifications ----------------------------------------------------------------

    @on(Action.notify_event)
    def on_notify_event(self, generated_at: str, seq_no: int, event_data: list[dict[str, Any]], **_: Any) -> Any:
        for event in event_data[:5]:
            # Deltas and periodic reports are routine; a monitor that alerts, or a Problem raised, is not.
            problem = (event.get("variable") or {}).get("name") == "Problem" and str(event.get("actual_value")).lower() == "true"
            if event.get("trigger") == "Alerting" or problem:
                component = event.get("component", {}).get("name", "?")
                variable = event.get("variable", {}).get("name", "?")
                self._fault(
                    f"event {component}", logging.WARNING, "%s.%s = %s (%s)",
                    printable(str(component)), printable(str(variable)), printable(str(event.get("actual_value", ""))[:60]),
                    printable(str(event.get("trigger", ""))),
                )
        return call_result.NotifyEvent()

    @on(Action.security_event_notification)
    def on_security_event_notification(self, type: str, timestamp: str, tech_info: str | None = None, **_: Any) -> Any:
        level = logging.INFO if type in ROUTINE_SECURITY_EVENTS else logging.WARNING
        self._fault(f"security {type}", level, "security event %s%s", printable(type[:50]), f": {printable(tech_info[:120])}" if tech_info else "")
        return call_result.SecurityEventNotification()

    @on(Action.notify_report)
    def on_notify_report(self, request_id: int, generated_at: str, seq_no: int, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: firmware update %s", self.id, printable(status))
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: log upload %s", self.id, printable(status))
        return call_result.LogStatusNotification()

    @on(Action.notify_charging_limit)
    def on_notify_charging_limit(self, charging_limit: dict[str, Any], **_: Any) -> Any:
        self._fault("charging-limit", logging.WARNING, "an external charging limit was set on it (%s)", printable(str(charging_limit.get("charging_limit_source", "?"))))
        return call_result.NotifyChargingLimit()

    @on(Action.report_charging_profiles)
    def on_report_charging_profiles(
        self, request_id: int, charging_limit_source: str, charging_profile: list[dict[str, Any]], evse_id: int,
        tbc: bool = False, **_: Any,
    ) -> Any:
        """The station's profiles, after a GetChargingProfiles (K09): answered, and logged for the operator."""
        shown = "; ".join(
            f"id {p.get('id')} {printable(str(p.get('charging_profile_purpose', '?')))} stack level {p.get('stack_level')}"
            for p in charging_profile[:10] if isinstance(p, dict)
        )
        more = f" and {len(charging_profile) - 10} more" if len(charging_profile) > 10 else ""
        logger.info("charger %s: EVSE %s holds %d charging profile(s) set by %s (request %s%s): %s%s", self.id, evse_id,
                    len(charging_profile), printable(charging_limit_source), request_id,
                    ", more to come" if tbc else "", shown, more)
        found = tuple(f for f in (read_profile(self.id, evse_id, p) for p in charging_profile) if f is not None)
        if found:
            self._backend.record(ProfilesFound(self.id, found, utc_now()))
        return call_result.ReportChargingProfiles()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None, **_: Any) -> Any:
        text = data if isinstance(data, str) or data is None else str(data)[:200]
        return call_result.DataTransfer(status=self._backend.data_transfer(self.id, vendor_id, message_id, text))


def _tag_of(id_token: dict[str, Any] | None) -> tuple[str | None, bool]:
    """(the tag to authorize or None, whether the event carried an idToken and so needs idTokenInfo)."""
    if not id_token:
        return None, False
    if id_token.get("type") == "NoAuthorization" or not id_token.get("id_token"):
        return None, True
    return str(id_token["id_token"]), True


def _with_tx(sample: Any, session_id: int | None) -> Any:
    from dataclasses import replace

    return replace(sample, transaction_id=session_id)
