"""Which OCPP requests `POST /api/chargers/<id>/call/<Action>` may forward, per OCPP version.

Only the requests a central system sends (the OCPP 1.6 and 2.0.1 specifications' CSMS-initiated
messages, each also a name of the `ocpp` library's Action enum) pass: the library reads a schema
file named after the action, so a name from outside must never reach it unchecked. Requests that
replace a charger's firmware, certificates or network settings also need `[api] allow_risky_calls`.
"""

from __future__ import annotations

import re

from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

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
})


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
        raise CallRefused(400, f"{action} is not a request a central system sends in {where}")
    if action in RISKY and not allow_risky:
        raise CallRefused(
            403, f"{action} changes a charger's firmware, certificates or network settings: "
            "it needs allow_risky_calls = true in the config's [api] section"
        )
