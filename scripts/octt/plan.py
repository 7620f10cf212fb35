"""The pure parts of the tzi-OCTT run: which cases, the square's config, the suite's settings, the
trigger API's requests turned into admin API requests, and the results table. No I/O, no clock."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SUITE_URL = "https://github.com/tzi-app/tzi-OCTT.git"
# The suite's commit this runner was written and tried against ("CSMS trigger system changes for
# 2.0.1 tests", 2026-03-05). Its sample certificates expire on 2027-02-14: after that, make new ones
# with the checkout's generate_certs.sh.
SUITE_COMMIT = "9ccbec8c13fdb273370a0370229970cc632988d4"

V16, V201 = "1.6", "2.0.1"
VERSIONS = (V16, V201)

# The stations of the suite's pytest.ini, as the square knows them. The suite's security profile 3
# stations (CP16_SP3, CP202_SP3: a client certificate, no password) are left out: the gateway has no
# profile 3, and they are refused at the handshake like any id it does not know.
PASSWORD = "test1234"
STATION_16 = "CP16_SP1"
STATION_201 = "CP201_SP1"
STATION_201_SP2 = "CP202_SP2"
# (id, connectors or EVSEs): CP201_SP1 has a second EVSE for the master pass cases.
CHARGERS = ((STATION_16, 2), (STATION_201, 2), (STATION_201_SP2, 1))
GROUP_ID = "GROUP001"

# The suite's id tokens and the status each must have (pytest.ini); INVALID_ID_TOKEN (100000C02)
# stays off the list, so it is unknown: Invalid.
TOKENS = (
    ("TAG-001", "Accepted", None),
    ("100000C01", "Accepted", None),
    ("100000C39B", "Accepted", None),
    ("MASTERC47", "Accepted", GROUP_ID),
    ("EMAID001", "Accepted", None),
    ("100000C06", "Blocked", None),
    ("100000C07", "Expired", None),
)

_CASE_ROW = re.compile(r"^\|\s*(TC_[A-Z0-9_]+_CSMS)\s*\|")
_CASE_16 = re.compile(r"^TC_(\d{3}(?:_\d)?)_CSMS$")
_CASE_201 = re.compile(r"^TC_([A-P])_(\d{2})_CSMS$")


def applicable_cases(coverage_md: str) -> dict[str, list[str]]:
    """The central system cases docs/oca-coverage.md lists as applying to the gateway, per version.

    Those are the rows of its two version tables ("## OCPP 1.6J", "## OCPP 2.0.1"); the notes and
    the "Left out" table that follow are not. A station case (`_CS`) is not a suite case.
    """
    found: dict[str, list[str]] = {V16: [], V201: []}
    version: str | None = None
    for line in coverage_md.splitlines():
        if line.startswith("## "):
            version = V16 if line.startswith("## OCPP 1.6") else V201 if line.startswith("## OCPP 2.0.1") else None
            continue
        match = _CASE_ROW.match(line)
        if version is not None and match and match.group(1) not in found[version]:
            found[version].append(match.group(1))
    return found


def case_version(case_id: str) -> str:
    """1.6 for TC_001_CSMS, 2.0.1 for TC_B_01_CSMS; ValueError for anything else."""
    if _CASE_16.fullmatch(case_id):
        return V16
    if _CASE_201.fullmatch(case_id):
        return V201
    raise ValueError(f"{case_id!r} is not a central system case id (TC_001_CSMS, TC_004_1_CSMS, TC_B_01_CSMS)")


def case_file(case_id: str) -> PurePosixPath:
    """The suite's file of a case, relative to its checkout: 1.6/test_tc_004_1_csms.py, 2.0.1/B/test_tc_b_01_csms.py."""
    if case_version(case_id) == V16:
        return PurePosixPath(V16, f"{case_id.lower()}.py".replace("tc_", "test_tc_", 1))
    block = case_id.split("_")[1]
    return PurePosixPath(V201, block, f"test_{case_id.lower()}.py")


def case_id_of(path: PurePosixPath) -> str:
    """The case id of one of the suite's files (the inverse of case_file)."""
    return path.stem.removeprefix("test_").upper()


def action_name(kebab: str) -> str:
    """The OCPP action a trigger names: remote-start-transaction -> RemoteStartTransaction."""
    return "".join(word.capitalize() for word in kebab.split("-"))


@dataclass(frozen=True)
class ApiRequest:
    """One request to the gateway's admin API."""

    method: str
    path: str
    body: dict


@dataclass(frozen=True)
class Bridged:
    """What a trigger request becomes: admin API requests in order (the answer of the last one is the
    trigger's answer), or, when the gateway has no counterpart, `refusal` (answered 501)."""

    requests: tuple[ApiRequest, ...] = ()
    refusal: str | None = None
    new_password: str | None = field(default=None, compare=False)
    undo: tuple[ApiRequest, ...] = ()
    """Sent when a later request fails: a password stored for a change that never reached the
    station is put back, so that one failed case does not lock the station out of the next ones."""


# The suite's names of the requests whose items per message it sets.
_ACTIONS_BY_FIELD = {"get_variables": "GetVariables", "set_variables": "SetVariables", "get_report": "GetReport"}

# Triggers that change the suite's own CSMS's settings, with no counterpart in the gateway.
_NO_COUNTERPART = {
    "set-security-profile": "the gateway has one security profile per endpoint (2 with TLS, else 1), set in the config",
    "set-pending-boot": "the gateway accepts every BootNotification of a configured charger (never Pending)",
}


def _call(station: str, action: str, payload: dict) -> ApiRequest:
    return ApiRequest("POST", f"/api/chargers/{station}/call/{action}", payload)


def _password(station: str, password: str) -> ApiRequest:
    return ApiRequest("PUT", f"/api/chargers/{station}/password", {"password": password})


def bridge(path: str, body: dict, new_password: str) -> Bridged:
    """The admin API requests an operator makes for one trigger of the suite (README "CSMS Trigger Server").

    - `/api/octt/<version>/<station>/call/<Action>` and `/api/octt/<version>/<station>/<kebab-action>`:
      the call endpoint with the body as the payload.
    - A new charger password (2.0.1 `update-basic-auth-password`, 1.6 ChangeConfiguration of
      AuthorizationKey): the gateway's procedure, `PUT .../password` first, then the request. For
      `update-basic-auth-password` the central system chooses the password: `new_password`.
    - `/api/octt/set-basic-auth-password`: `PUT .../password`; `/api/octt/create-token`: `PUT /api/tokens`.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:2] != ["api", "octt"] or len(parts) < 3:
        return Bridged(refusal=f"not a trigger path: {path}")
    if parts[2:] == ["set-basic-auth-password"]:
        return Bridged((_password(str(body.get("station_id")), str(body.get("password"))),))
    if parts[2:] == ["create-token"]:
        return Bridged((ApiRequest("PUT", "/api/tokens", {"tag": body.get("token_id"), "status": body.get("status")}),))
    if len(parts) < 5 or parts[2] not in VERSIONS:
        return Bridged(refusal=f"not a trigger path: {path}")
    station, rest = parts[3], parts[4:]
    if rest[0] == "call" and len(rest) == 2:
        return Bridged((_call(station, rest[1], body),))
    if len(rest) != 1:
        return Bridged(refusal=f"not a trigger path: {path}")
    kebab = rest[0]
    if kebab in _NO_COUNTERPART:
        return Bridged(refusal=f"{kebab}: {_NO_COUNTERPART[kebab]}")
    if kebab == "set-items-per-message":
        # the operator's word on the station's limits (the gateway also learns them from its answers)
        limits = {_ACTIONS_BY_FIELD[k]: {"items": v} for k, v in body.items() if k in _ACTIONS_BY_FIELD}
        if not limits:
            return Bridged(refusal=f"set-items-per-message: none of {', '.join(sorted(_ACTIONS_BY_FIELD))} given")
        return Bridged((ApiRequest("PUT", f"/api/chargers/{station}/message-limits", limits),))
    if kebab == "update-basic-auth-password":
        item = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
                "attributeValue": new_password}
        return Bridged((_password(station, new_password), _call(station, "SetVariables", {"setVariableData": [item]})),
                       new_password=new_password, undo=(_password(station, PASSWORD),))
    action = action_name(kebab)
    if action == "ChangeConfiguration" and isinstance(body.get("value"), str) and body.get("key") == "AuthorizationKey":
        # the suite's stations then log in with the key's hex digits themselves
        return Bridged((_password(station, body["value"]), _call(station, action, body)), undo=(_password(station, PASSWORD),))
    return Bridged((_call(station, action, body),))


def square_toml(*, ocpp_port: int, api_port: int, mqtt_port: int, tls: dict[str, str], conformance: bool) -> str:
    """The square the suite's stations connect to: its charger ids and password, a bay per connector,
    the local list for its tokens, wss:// with the suite's own server certificates."""
    ocpp = [
        'host = "127.0.0.1"', f"port = {ocpp_port}", 'path = "/ocpp"', 'auth = "local_list"', "call_timeout_s = 10",
        # the suite's stations open a connection per case, several a second
        "max_messages_per_s = 100", "login_lockout_s = 1",
        *(f'{key} = "{value}"' for key, value in sorted(tls.items())),
    ]
    if conformance:
        ocpp.append("conformance_mode = true")
    lines = [
        '[site]\nid = "octt"\nname = "tzi-OCTT conformance run"\n',
        "[grid]\nphases = 3\nlimit_a = 80\n",
        "[ocpp]\n" + "\n".join(ocpp) + "\n",
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n',
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\ntoken_file = "api-token"\n',
        '[storage]\npath = "state/laadplein.db"\n',
        "[signage]\nmin_free_ev_bays = 0\n",
    ]
    for charger, connectors in CHARGERS:
        lines.append(f'[[chargers]]\nid = "{charger}"\nmax_current_a = 32\nphases = 3\nconnectors = {connectors}\n'
                     f'password = "{PASSWORD}"\n')
    bay = 0
    for charger, connectors in CHARGERS:
        for n in range(1, connectors + 1):
            bay += 1
            lines.append(f'[[bays]]\nid = "B{bay:02d}"\ncharger = "{charger}"\nconnector = {n}\nsensor = false\n')
    return "\n".join(lines)


def suite_env(*, checkout: str, ocpp_port: int, bridge_port: int, action_timeout_s: int) -> dict[str, str]:
    """The suite's settings (its pytest.ini takes them from the environment first): this square's
    address (wss://localhost, the name its server certificate carries), the bridge, its own
    certificates by their place in the checkout (its pytest.ini names another machine's)."""
    certs = f"{checkout}/certs"
    return {
        "CSMS_ADDRESS": f"wss://localhost:{ocpp_port}/ocpp",
        "CSMS_TRIGGER_ADDRESS": f"http://127.0.0.1:{bridge_port}",
        "CP16_SP1": STATION_16,
        "CP201_SP1": STATION_201,
        "CP201_SP2": STATION_201_SP2,
        "BASIC_AUTH_CP_PASSWORD": PASSWORD,
        "TLS_CA_CERT": f"{certs}/ca.pem",
        "TLS_CLIENT_CERT": f"{certs}/client.pem",
        "TLS_CLIENT_KEY": f"{certs}/client.key",
        "TLS_INVALID_CLIENT_CERT": f"{certs}/invalid_client.pem",
        "TLS_INVALID_CLIENT_KEY": f"{certs}/invalid_client.key",
        "CSMS_ACTION_TIMEOUT": str(action_timeout_s),
        "CONFIGURED_SECURITY_PROFILE": "2",
        "GROUP_ID": GROUP_ID,
        "MASTERPASS_GROUP_ID": GROUP_ID,
    }


def tls_files(checkout: str) -> dict[str, str]:
    """The gateway's certificate pairs: the suite's RSA server certificate, and its ECDSA one beside it."""
    certs = f"{checkout}/certs"
    return {
        "tls_cert_file": f"{certs}/server_rsa.pem", "tls_key_file": f"{certs}/server_rsa.key",
        "tls_ecdsa_cert_file": f"{certs}/server.pem", "tls_ecdsa_key_file": f"{certs}/server.key",
    }


@dataclass(frozen=True)
class Outcome:
    """One pytest item of a case: its outcome, the error's line, the frames around it, the bridge's troubles."""

    case: str
    item: str
    outcome: str  # passed | failed | skipped | error
    message: str = ""
    last_from_gateway: str = ""
    last_from_station: str = ""
    bridge_notes: tuple[str, ...] = ()


def labels(outcomes: list[Outcome]) -> list[str]:
    """Each item's name in the table: its case id, and the test's own name when the case has several."""
    per_case: dict[str, int] = {}
    for o in outcomes:
        per_case[o.case] = per_case.get(o.case, 0) + 1
    return [o.case if per_case[o.case] == 1 else f"{o.case} {o.item}" for o in outcomes]


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Items run, passed, failed (errors included), skipped; and the cases with at least one failure."""
    failed = [o for o in outcomes if o.outcome in ("failed", "error")]
    return {
        "cases": len({o.case for o in outcomes}),
        "items": len(outcomes),
        "passed": sum(o.outcome == "passed" for o in outcomes),
        "failed": len(failed),
        "skipped": sum(o.outcome == "skipped" for o in outcomes),
        "failed_cases": len({o.case for o in failed}),
    }


def table(outcomes: list[Outcome]) -> str:
    """The per-case table, then each failure with the frame that caused it."""
    names = labels(outcomes)
    width = max([len(name) for name in names] + [4])
    lines = [f"{'case':<{width}}  result", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {'FAIL' if o.outcome in ('failed', 'error') else o.outcome.upper()}"
              for name, o in zip(names, outcomes, strict=True)]
    for name, o in zip(names, outcomes, strict=True):
        if o.outcome not in ("failed", "error"):
            continue
        lines += ["", f"== {name}: {o.message or o.outcome}"]
        lines.append(f"   last frame from the gateway: {o.last_from_gateway or '(none)'}")
        lines.append(f"   last frame from the station: {o.last_from_station or '(none)'}")
        lines += [f"   bridge: {note}" for note in o.bridge_notes]
    counts = summary(outcomes)
    total = (f"{counts['cases']} cases ({counts['items']} items): {counts['passed']} passed, "
             f"{counts['failed']} failed ({counts['failed_cases']} cases), {counts['skipped']} skipped")
    lines += ["", total]
    return "\n".join(lines)
