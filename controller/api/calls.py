"""Which OCPP requests `POST /api/chargers/<id>/call/<Action>` may forward, per OCPP version.

Only the requests a central system sends (the OCPP 1.6 and 2.0.1 specifications' CSMS-initiated
messages, each also a name of the `ocpp` library's Action enum) pass: the library reads a schema
file named after the action, so a name from outside must never reach it unchecked. Requests that
replace a charger's firmware, certificates or network settings also need `[api] allow_risky_calls`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

from controller.api.guard import BadRequest, error, json_response
from controller.shell.state import SquareState
from drivers.contract.backend import (
    CallErrorReceived,
    CallTimedOut,
    ChargerNotConnected,
)
from drivers.contract.text import printable
from drivers.ocpp.found_profiles import from_request
from drivers.ocpp.message_limits import TooBig
from drivers.ocpp.profiles16 import is_own_profile

log = logging.getLogger("laadplein.api")

ACTION_NAME = re.compile(r"^[A-Za-z]{1,64}$")

OCPP16, OCPP201 = "ocpp1.6", "ocpp2.0.1"

_CSMS_REQUESTS_16 = frozenset({
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache", "ClearChargingProfile",
    "DataTransfer", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetLocalListVersion",
    "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList",
    "SetChargingProfile", "TriggerMessage", "UnlockConnector", "UpdateFirmware",
    # the OCPP 1.6 security whitepaper
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
    "InstallCertificate", "SignedUpdateFirmware",
})
_CSMS_REQUESTS_201 = frozenset({
    "CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache", "ClearChargingProfile",
    "ClearDisplayMessage", "ClearVariableMonitoring", "CostUpdated", "CustomerInformation", "DataTransfer",
    "DeleteCertificate", "GetBaseReport", "GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages",
    "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "GetMonitoringReport", "GetReport",
    "GetTransactionStatus", "GetVariables", "InstallCertificate", "PublishFirmware", "RequestStartTransaction",
    "RequestStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "SetDisplayMessage",
    "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile", "SetVariableMonitoring", "SetVariables",
    "TriggerMessage", "UnlockConnector", "UnpublishFirmware", "UpdateFirmware",
})

# Each name is checked against the library's enum too: a name it does not know has no schema file.
REQUESTS: dict[str, frozenset[str]] = {
    OCPP16: frozenset(a for a in _CSMS_REQUESTS_16 if a in {x.value for x in Action16}),
    OCPP201: frozenset(a for a in _CSMS_REQUESTS_201 if a in {x.value for x in Action201}),
}

# What a stranger with the token could use to take a charger over for good: new firmware, new trust
# anchors or client certificates, another central system to connect to.
RISKY = frozenset({
    "UpdateFirmware", "SignedUpdateFirmware", "PublishFirmware", "InstallCertificate", "DeleteCertificate",
    "CertificateSigned", "SetNetworkProfile",
    # a charger uploads its logs (id tags in them) or a customer's data to whatever URL or party is named
    "GetDiagnostics", "GetLog", "CustomerInformation",
})


# Settings whose change hands a charger to someone else: its password or security profile (OCPP 1.6
# security whitepaper's configuration keys; 2.0.1's SecurityCtrlr), the trust it places in the central
# system's certificate, the central systems it connects to (2.0.1 OCPPCommCtrlr).
RISKY_KEYS_16 = frozenset({
    "AuthorizationKey", "SecurityProfile", "AdditionalRootCertificateCheck", "CpoName",
    "CertificateSignedMaxChainSize", "CertificateStoreMaxLength",
})
RISKY_COMPONENTS_201 = frozenset({"SecurityCtrlr"})
RISKY_VARIABLES_201 = frozenset({("OCPPCommCtrlr", "NetworkConfigurationPriority")})


class CallRefused(Exception):
    """The action may not be sent; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_action(action: str, version: str | None, *, allow_risky: bool) -> None:
    """Raise CallRefused unless `action` is a request a central system sends in `version` (None: either)."""
    if not ACTION_NAME.match(action):
        raise CallRefused(400, "the action must be an OCPP request name (letters only, at most 64)")
    known = REQUESTS.get(version) if version is not None else None
    if known is None:
        known = REQUESTS[OCPP16] | REQUESTS[OCPP201]
    if action not in known:
        where = f"OCPP {version.removeprefix('ocpp')}" if version in REQUESTS else "OCPP 1.6 or 2.0.1"
        raise CallRefused(400, f"{action} is not an {where} request a central system sends")
    if action in RISKY and not allow_risky:
        raise CallRefused(
            403, f"{action} changes a charger's firmware, certificates or network settings, or sends its logs or a "
            "customer's data elsewhere: "
            "it needs allow_risky_calls = true in the config's [api] section"
        )


def security_settings(action: str, payload: dict) -> tuple[list[str], list[list[str]]]:
    """The security settings a request changes: (the names of the risky ones, the passwords it sets).

    Risky: ChangeConfiguration (1.6) of a key in RISKY_KEYS_16 but AuthorizationKey, SetVariables
    (2.0.1) of a variable of a component in RISKY_COMPONENTS_201 but BasicAuthPassword, or one in
    RISKY_VARIABLES_201. Each password set is given as the texts a charger may log in with, none when
    it cannot be read: a 1.6 AuthorizationKey is hex, and chargers differ on whether they log in with
    the text its digits spell or with the digits themselves (both are in the field).
    """
    names: list[str] = []
    passwords: list[list[str]] = []
    if action == "ChangeConfiguration" and payload.get("key") in RISKY_KEYS_16:
        if payload["key"] == "AuthorizationKey":
            value = payload.get("value")
            spelled = _hex_text(value)
            passwords.append([*([spelled] if spelled is not None else []), *([value] if isinstance(value, str) else [])])
        else:
            names.append(str(payload["key"]))
    if action == "SetVariables" and isinstance(payload.get("setVariableData"), list):
        for item in payload["setVariableData"]:
            component = item.get("component") if isinstance(item, dict) else None
            variable = item.get("variable") if isinstance(item, dict) else None
            c_name = component.get("name") if isinstance(component, dict) else None
            v_name = variable.get("name") if isinstance(variable, dict) else None
            if (c_name, v_name) == ("SecurityCtrlr", "BasicAuthPassword"):
                value = item.get("attributeValue")
                passwords.append([value] if isinstance(value, str) else [])
            elif c_name in RISKY_COMPONENTS_201 or (c_name, v_name) in RISKY_VARIABLES_201:
                names.append(f"{c_name}.{v_name}")
    return sorted(set(names)), passwords


def _hex_text(value: object) -> str | None:
    """An AuthorizationKey's password: the text its hex digits spell, None when they spell none."""
    try:
        return bytes.fromhex(value).decode() if isinstance(value, str) else None
    except ValueError:
        return None


class ChargerCaller(Protocol):
    """What the API needs of the OCPP driver."""

    def connected(self) -> dict[str, str]: ...

    async def call(self, charger_id: str, action: str, payload: dict) -> dict: ...

    def tell_limits(self, charger_id: str, limits: dict[str, dict[str, object]]) -> None:
        """A charger's per-message limits as the operator gives them; ValueError when they do not read."""


class ChargerCalls:
    """The view of `POST /api/chargers/<id>/call/<Action>`: checks the action, forwards it, logs the call."""

    def __init__(self, state: SquareState, ocpp: ChargerCaller,
                 read_body: Callable[[web.Request], Awaitable[dict]], *, allow_risky: bool) -> None:
        self.state = state
        self.ocpp = ocpp
        self.read_body = read_body
        self.allow_risky = allow_risky

    async def handle(self, request: web.Request) -> web.Response:
        """Forward one OCPP request a central system may send; every attempt goes in the event log."""
        charger_id = request.match_info["charger"]
        action = request.match_info["action"]
        if charger_id not in self.state.chargers:
            return error(404, f"no charger {charger_id!r}")
        live = self.state.chargers[charger_id]
        version = self.ocpp.connected().get(charger_id) or live.ocpp_version
        try:
            check_action(action, version, allow_risky=self.allow_risky)
        except CallRefused as exc:
            self._note_call(request, charger_id, action, exc.status, "refused")
            return error(exc.status, str(exc))
        try:
            payload = await self.read_body(request)
        except BadRequest as exc:
            self._note_call(request, charger_id, action, 400, "not a JSON object within bounds")
            return error(400, str(exc))
        own = from_request(charger_id, action, payload, own_ids=True)
        if own is not None and is_own_profile(own.profile_id):
            self._note_call(request, charger_id, action, 400, "a profile id of the gateway's own")
            return error(400, f"{action}: chargingProfileId {own.profile_id} is in the range the gateway keeps for its own "
                              "profiles (990000-999999); give the profile another id")
        refused = await self._security_refusal(charger_id, action, payload)
        if refused is not None:
            self._note_call(request, charger_id, action, 403, "refused: a security setting")
            return error(403, refused)
        try:
            answer = await self.ocpp.call(charger_id, action, payload)
        except ChargerNotConnected:
            self._note_call(request, charger_id, action, 409, "not connected")
            return error(409, f"charger {charger_id} is not connected")
        except CallTimedOut:
            self._note_call(request, charger_id, action, 504, "no answer in time")
            return error(504, f"charger {charger_id} did not answer {action} in time")
        except CallErrorReceived as exc:
            self._note_call(request, charger_id, action, 502, f"CALLERROR {exc.code}")
            return error(502, f"charger {charger_id} answered {action} with a CALLERROR", code=exc.code, description=exc.description)
        except ValueError as exc:  # the request does not fit the OCPP schema, or the charger's message limits
            why = "over the charger's per-message limits" if isinstance(exc, TooBig) else "does not fit the OCPP schema"
            self._note_call(request, charger_id, action, 400, why)
            return error(400, f"{action}: {exc}")
        status = answer.get("status") if isinstance(answer, dict) else None
        await self._note_profiles(charger_id, action, payload, status)
        self._note_call(request, charger_id, action, 200, f"answered {status}" if isinstance(status, str) else "answered")
        return json_response(answer)

    async def _security_refusal(self, charger_id: str, action: str, payload: dict) -> str | None:
        """Why a request that changes a charger's security settings is refused, or None.

        Without `allow_risky_calls`, a new password goes only when it is the one the gateway holds for
        the charger (set first with PUT /api/chargers/<id>/password), and the other security settings
        not at all.
        """
        if self.allow_risky:
            return None
        names, passwords = security_settings(action, payload)
        if names:
            return (f"{action} of {', '.join(names)} changes how the charger logs in or whom it trusts: "
                    "it needs allow_risky_calls = true in the config's [api] section")
        has_password = self.state.passwords.required(charger_id)
        for candidates in passwords:
            ok = False
            for password in candidates if has_password else []:
                ok = ok or await asyncio.to_thread(self.state.charger_password_ok, charger_id, password)
            if not ok:
                return (f"{action}: the new password is not the one the gateway holds for {charger_id} (a charger "
                        f"sending it would be refused): set it first with PUT /api/chargers/{charger_id}/password, "
                        "or allow_risky_calls = true in the config's [api] section")
        return None

    async def _note_profiles(self, charger_id: str, action: str, payload: dict, status: object) -> None:
        """A profile the operator set (or cleared) through the gateway bounds its leases from now on; it
        may also have replaced or cleared the gateway's own, so what the gateway remembers of the
        charger's set-up is struck from the store before the operator hears back."""
        if status != "Accepted":
            return
        if action in ("SetChargingProfile", "ClearChargingProfile"):
            try:
                await self.state.store.setups.forget(charger_id)
            except (sqlite3.Error, OSError) as exc:
                log.warning("charger %s: its remembered set-up could not be struck from the store (%s)", charger_id, exc)
            self.state.bounds.operator_request(charger_id)
        if action == "ClearChargingProfile":
            self.state.bounds.cleared(charger_id, payload)
            return
        profile = from_request(charger_id, action, payload)
        if profile is not None:
            self.state.bounds.found(profile, self.state.connector_tx(charger_id, profile.connector_id))
            self.state.wake.set()

    def _note_call(self, request: web.Request, charger_id: str, action: str, code: int, result: str) -> None:
        """One event per call: who (the token's holder, from which address), the action and the result.

        The payload is never logged: it may hold an id tag (idTag, idToken).
        """
        peer = request.remote or "?"
        result = printable(result, 60)
        self.state.note(
            "charger_call",
            f"charger {charger_id}: {action} from the admin API (admin at {peer}): {code} {result}",
            charger_id=charger_id,
            data={"action": action, "who": "admin", "peer": peer, "status": code, "result": result},
        )
        log.info("charger %s: %s from the admin API (admin at %s): %d %s", charger_id, action, peer, code, result)
