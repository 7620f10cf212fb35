"""The square's configuration as frozen pydantic models: bounds on every number, cross-checks between sections.

The contract is interfaces.md §2. Values are never clamped: out of bounds is an error.
Models are strict because TOML is typed: "80" where a number belongs is a mistake, not a value to coerce.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from config.issues import CrossCheckError, Loc, field_value, number_text
from config.schema_api import API_TOKEN_FILE_NAME, ApiConfig, api_issues
from config.schema_devices import BatteryConfig, GridMeterConfig, battery_issues
from config.schema_links import (
    MqttConfig,
    OcppConfig,
    loopback_host,
    mqtt_issues,
    ocpp_issues,
)

__all__ = [
    "EXPOSED_MIN_PASSWORD_CHARS",
    "ApiConfig",
    "BatteryConfig",
    "BayConfig",
    "ChargerConfig",
    "ControlConfig",
    "GridConfig",
    "GridMeterConfig",
    "MqttConfig",
    "OcppConfig",
    "SignageConfig",
    "SiteConfig",
    "SquareConfig",
    "StorageConfig",
    "cross_issues",
    "loopback_host",
    "square_warnings",
]

#: A charger's id, configured or (with `allow_unknown_chargers`) met at the handshake: OCPP's identity
#: (at most 48 characters) in a charset safe in URLs, topics, logs and terminals, and without the `:`
#: that Basic Auth cannot carry in a user name.
CHARGER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,48}$"

# OCPP 2.0.1 (BasicAuthPassword) and the 1.6 security whitepaper ask for 16 to 40 characters. On a
# non-loopback ocpp.host a shorter charger password is refused unless the charger says insecure = true.
EXPOSED_MIN_PASSWORD_CHARS = 16


class SiteConfig(BaseModel):
    """Which square this is; `id` names its MQTT topics."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)
    name: str = Field("", max_length=200)
    timezone: str = "Europe/Amsterdam"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r} (e.g. 'Europe/Amsterdam')") from None
        return value


class GridConfig(BaseModel):
    """The grid connection: per-phase fuse limit in A, nominal voltage in V."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    phases: Literal[1, 3] = 3
    voltage_v: float = Field(230, ge=100, le=480)
    limit_a: float = Field(ge=6, le=4000)
    base_load_a: float = Field(0, ge=0, le=4000)

    @model_validator(mode="after")
    def _base_load_below_limit(self) -> GridConfig:
        issues = _grid_issues(self.model_dump())
        if issues:
            raise CrossCheckError(issues)
        return self


class StorageConfig(BaseModel):
    """The SQLite database file and how many days session data is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    path: Path = Field(Path("/var/lib/laadplein/laadplein.db"), strict=False)
    retention_days: int = Field(90, ge=1, le=3650)
    # An alarm when the database's filesystem has less free space than this, in MB.
    min_free_mb: int = Field(200, ge=1, le=1_000_000)


class ControlConfig(BaseModel):
    """The control loop: its period in s, the lowest current a car gets in A, the lease length in s."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    period_s: float = Field(1.0, ge=0.1, le=60)
    min_current_a: float = Field(6, ge=6, le=16)
    lease_s: int = Field(300, ge=10, le=3600)
    turn_s: int = Field(300, ge=10, le=86400)
    reaction_s: float = Field(10, ge=0, le=600)
    meter_interval_s: int = Field(5, ge=1, le=3600)


class SignageConfig(BaseModel):
    """The bay-light rules of signage.md; times in s."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_free_ev_bays: int = Field(0, ge=0, le=10_000)
    grace_s: int = Field(900, ge=0, le=86400)
    min_dwell_s: int = Field(30, ge=0, le=3600)
    language: Literal["nl", "en"] = "nl"
    offline_after_s: int = Field(30, ge=0, le=3600)
    sensor_timeout_s: int = Field(86400, ge=60, le=604800)
    startup_wait_s: int = Field(60, ge=0, le=3600)
    ack_timeout_s: float = Field(5, ge=1, le=60)


class ChargerConfig(BaseModel):
    """One charger: its OCPP id, its maximum current in A per phase, its connectors (or EVSEs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=CHARGER_ID_PATTERN)
    max_current_a: float = Field(ge=6, le=1000)
    phases: Literal[1, 3] = 3
    connectors: int = Field(1, ge=1, le=8)
    password: str | None = Field(None, min_length=1, max_length=64)
    # Stated on purpose: on a non-loopback ocpp.host this charger may connect without a password, or with
    # one under 16 characters. Without it such a charger is refused at the handshake (401).
    insecure: bool = False
    # Real chargers break the OCPP schemas (numeric meter values, "+00:00" times, missing fields): a
    # lenient charger's payloads are mended and accepted with a warning instead of a CALLERROR.
    lenient: bool = False
    # How the charger's L1, L2, L3 are wired to the grid's (OCPP ConnectorPhaseRotation): "STR" puts
    # a one-phase car on the grid's L2. Unset: read from the charger, else taken as RST.
    phase_rotation: Literal["RST", "RTS", "SRT", "STR", "TRS", "TSR"] | None = None


class BayConfig(BaseModel):
    """One parking bay with its light, served by one connector (OCPP 2.0.1: the EVSE id)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    charger: str = Field(min_length=1, max_length=48)
    connector: int = Field(ge=1, le=8)
    sensor: bool = False


class SquareConfig(BaseModel):
    """The whole square; only site, grid, chargers and bays are required."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    site: SiteConfig
    grid: GridConfig
    ocpp: OcppConfig = OcppConfig()
    mqtt: MqttConfig = MqttConfig()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()
    control: ControlConfig = ControlConfig()
    battery: BatteryConfig | None = None
    grid_meter: GridMeterConfig | None = None
    signage: SignageConfig = SignageConfig()
    chargers: list[ChargerConfig] = Field(min_length=1, max_length=1000)
    bays: list[BayConfig] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _cross_check(self) -> SquareConfig:
        issues = _square_issues(self.model_dump())
        if issues:
            raise CrossCheckError(issues)
        return self

    def charger(self, charger_id: str) -> ChargerConfig:
        """The charger with this id; KeyError when there is none."""
        for charger in self.chargers:
            if charger.id == charger_id:
                return charger
        raise KeyError(charger_id)

    def bay(self, bay_id: str) -> BayConfig:
        """The bay with this id; KeyError when there is none."""
        for bay in self.bays:
            if bay.id == bay_id:
                return bay
        raise KeyError(bay_id)

    def bay_for(self, charger_id: str, connector_id: int) -> BayConfig | None:
        """The bay that this charger's connector (or EVSE) serves, if any."""
        for bay in self.bays:
            if bay.charger == charger_id and bay.connector == connector_id:
                return bay
        return None

    @property
    def api_token_file(self) -> Path:
        """The admin API's token file: `api.token_file`, else `api-token` beside the database."""
        return self.api.token_file or Path(self.storage.path).parent / API_TOKEN_FILE_NAME

    @property
    def ocpp_max_handshakes_per_host(self) -> int:
        """Opening handshakes at once from one address: the config's, or one per charger plus 16."""
        configured = self.ocpp.max_handshakes_per_host
        return len(self.chargers) + 16 if configured is None else configured

    @property
    def ocpp_max_connections(self) -> int:
        """OCPP connections open at once, handshakes included: the config's, or two per charger plus 32."""
        configured = self.ocpp.max_connections
        return 2 * len(self.chargers) + 32 if configured is None else configured

    @property
    def topic_root(self) -> str:
        """The MQTT topic root `P` of interfaces.md §4."""
        return f"{self.mqtt.topic_prefix}/{self.site.id}"


def cross_issues(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Every cross-field problem in raw config data (the parsed TOML), each with its key path from the top.

    Pydantic skips a model's validators once one of its fields fails, so the loader runs these checks
    on the raw data too. Missing or ill-typed values are skipped here: their own field errors report them.
    """
    issues: list[tuple[Loc, str]] = []
    for section, check in (
        ("grid", _grid_issues), ("ocpp", ocpp_issues), ("mqtt", mqtt_issues), ("battery", battery_issues),
    ):
        table = data.get(section)
        if isinstance(table, Mapping):
            issues.extend(((section, *loc), message) for loc, message in check(table))
    api = data.get("api")
    if isinstance(api, Mapping):
        issues.extend((("api", *loc), message) for loc, message in api_issues(api))
    issues.extend(_square_issues(data))
    return issues


def _grid_issues(grid: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    limit_a = field_value(GridConfig, "limit_a", grid)
    base_load_a = field_value(GridConfig, "base_load_a", grid)
    if limit_a is None or base_load_a is None or base_load_a < limit_a:
        return []
    return [(("base_load_a",), f"{number_text(base_load_a)} A must be below limit_a ({number_text(limit_a)} A)")]


def _square_issues(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    charger_entries = _entries(data, "chargers")
    connectors_of: dict[str, int | None] = {}  # charger id -> its connector count, None when invalid
    first_charger: dict[str, int] = {}
    for index, entry in charger_entries or []:
        charger_id = entry.get("id")
        if not isinstance(charger_id, str):
            continue
        if charger_id in first_charger:
            first = first_charger[charger_id]
            issues.append((("chargers", index, "id"), f"duplicate charger id {charger_id!r} (also chargers.{first})"))
        else:
            first_charger[charger_id] = index
            connectors_of[charger_id] = field_value(ChargerConfig, "connectors", entry)
    known = ", ".join(sorted(connectors_of))
    first_bay: dict[str, int] = {}
    served: dict[tuple[str, int], str] = {}
    for index, entry in _entries(data, "bays") or []:
        bay_id = entry.get("id")
        if isinstance(bay_id, str):
            if bay_id in first_bay:
                issues.append((("bays", index, "id"), f"duplicate bay id {bay_id!r} (also bays.{first_bay[bay_id]})"))
            else:
                first_bay[bay_id] = index
        charger_id = entry.get("charger")
        if charger_entries is None or not isinstance(charger_id, str):
            continue
        if charger_id not in connectors_of:
            issues.append((("bays", index, "charger"), f"no charger {charger_id!r} (known: {known})"))
            continue
        connector = field_value(BayConfig, "connector", entry)
        if connector is None:
            continue
        connectors = connectors_of[charger_id]
        if connectors is not None and connector > connectors:
            issues.append(
                (
                    ("bays", index, "connector"),
                    f"connector {connector} but charger {charger_id!r} has {connectors} connector(s)",
                )
            )
            continue
        if (charger_id, connector) in served:
            issues.append(
                (
                    ("bays", index, "connector"),
                    f"charger {charger_id!r} connector {connector} already serves {served[charger_id, connector]}",
                )
            )
        else:
            served[charger_id, connector] = f"bay {bay_id!r}" if isinstance(bay_id, str) else f"bays.{index}"
    bays = data.get("bays")
    signage = data.get("signage", {})
    if isinstance(bays, list) and isinstance(signage, Mapping):
        min_free_ev_bays = field_value(SignageConfig, "min_free_ev_bays", signage)
        if min_free_ev_bays is not None and min_free_ev_bays > len(bays):
            issues.append(
                (("signage", "min_free_ev_bays"), f"{min_free_ev_bays} is more than the number of bays ({len(bays)})")
            )
    return issues


def _entries(data: Mapping[str, Any], name: str) -> list[tuple[int, Mapping[str, Any]]] | None:
    """The tables of array `name` with their indexes; None when the array itself is missing or not an array."""
    value = data.get(name)
    if not isinstance(value, list):
        return None
    return [(index, entry) for index, entry in enumerate(value) if isinstance(entry, Mapping)]


def square_warnings(square: SquareConfig) -> list[tuple[Loc, str]]:
    """What a valid config leaves open to others on the network, each with its key path: shown, never refused.

    No TLS on a non-loopback OCPP endpoint, chargers without a password (stated insecure or not),
    passwords shorter than OCPP asks for, unknown charger ids let in, a broker elsewhere reached
    without TLS or anonymously, and conformance mode (no charger steered).
    """
    ocpp = square.ocpp
    exposed = not ocpp.on_loopback
    warnings: list[tuple[Loc, str]] = []
    if exposed and ocpp.tls_cert_file is None:
        warnings.append((("ocpp", "host"), (f"{ocpp.host} is not loopback and there is no TLS (tls_cert_file): "
                         "chargers' passwords and id tags cross the network readable (plain ws://)")))
    if exposed and ocpp.allow_unknown_chargers:
        warnings.append((("ocpp", "allow_unknown_chargers"), f"any charger id is let in on {ocpp.host} without a password"))
    if ocpp.conformance_mode:
        warnings.append((("ocpp", "conformance_mode"), ("on: the gateway sets up and steers no charger, every charger "
                         "counts at its maximum; for certification runs only")))
    for index, charger in enumerate(square.chargers):
        if charger.password is None:
            if charger.insecure:
                why = "insecure = true: anyone who knows its id can connect as it"
            elif exposed:
                why = (f"on the non-loopback ocpp.host {ocpp.host} it is refused until it has one (password "
                       f"here or PUT /api/chargers/{charger.id}/password) or insecure = true")
            else:
                why = "anyone on this machine who knows its id can connect as it"
            warnings.append((("chargers", index, "id"), f"charger {charger.id} has no password; {why}"))
        elif len(charger.password) < EXPOSED_MIN_PASSWORD_CHARS:
            then = ""
            if exposed and not charger.insecure:
                then = f"; on the non-loopback ocpp.host {ocpp.host} it is refused unless insecure = true"
            warnings.append((("chargers", index, "password"), (f"charger {charger.id}: the password has "
                             f"{len(charger.password)} characters, OCPP asks for {EXPOSED_MIN_PASSWORD_CHARS} to 40{then}")))
    mqtt = square.mqtt
    if not loopback_host(mqtt.host):
        if mqtt.ca_file is None:
            warnings.append((("mqtt", "host"), (f"the broker {mqtt.host} is not on this machine and there is no TLS "
                             "(ca_file): light commands, occupancy and the broker password cross the network readable")))
        if mqtt.username is None:
            warnings.append((("mqtt", "username"), (f"the gateway logs in to the broker {mqtt.host} anonymously (no username): "
                             "a broker that lets anyone in lets anyone write the bays' lights and occupancy")))
    return warnings
