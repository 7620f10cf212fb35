"""The broker's access list for one square (mosquitto `acl_file` syntax): one user per device, each
allowed only its own topics of interfaces.md §4.

The gateway is the only writer of lights, state and status; a bay's light fixture reads its own
command and writes its own ack; a bay's sensor writes only its own occupancy; a dashboard reads.
mosquitto's `pattern` lines can put a user name in a topic only as a whole level, and the topics
name the bay, not the device, so each device gets its own `user` block, written from the config.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.mqtt.wire import (
    ack_topic,
    check_topic_level,
    light_topic,
    occupancy_topic,
    state_topic,
    status_topic,
)

__all__ = ["DASHBOARD_USER", "GATEWAY_USER", "acl_text", "broker_users", "fixture_user", "sensor_user"]

GATEWAY_USER = "laadplein"  # the gateway's user name when `[mqtt] username` is not set
DASHBOARD_USER = "dashboard"


def fixture_user(bay_id: str) -> str:
    """The broker user of a bay's light fixture."""
    return f"light-{check_topic_level(bay_id, 'bay id')}"


def sensor_user(bay_id: str) -> str:
    """The broker user of a bay's occupancy sensor."""
    return f"sensor-{check_topic_level(bay_id, 'bay id')}"


def broker_users(bays: Sequence[tuple[str, bool]], gateway_user: str = GATEWAY_USER) -> list[str]:
    """Every user of the square, in the order of the access list: gateway, dashboard, then per bay
    (`bays`: (bay id, has a sensor)) its fixture and its sensor."""
    users = [gateway_user, DASHBOARD_USER]
    for bay_id, has_sensor in bays:
        users.append(fixture_user(bay_id))
        if has_sensor:
            users.append(sensor_user(bay_id))
    return users


def acl_text(root: str, bays: Sequence[tuple[str, bool]], gateway_user: str = GATEWAY_USER, *, site: str = "") -> str:
    """The mosquitto access list for the square under topic root `root` (`P`); `bays` as broker_users takes them."""
    for user in (gateway_user, DASHBOARD_USER):
        if not user or any(c.isspace() for c in user):
            raise ValueError(f"broker user name {user!r} must not be empty or contain spaces")
    lines = [
        f"# mosquitto access list for the laadplein square {site or root} (topic root {root}).",
        "# Written by `laadplein broker-acl` from the square's config: write it again when bays change.",
        "# Anything not allowed here is refused; mosquitto.conf must say allow_anonymous false.",
        "",
        "# The gateway: the only writer of light commands, the state and its own status.",
        f"user {gateway_user}",
        f"topic readwrite {root}/#",
        "",
        "# Dashboards: read only.",
        f"user {DASHBOARD_USER}",
        f"topic read {state_topic(root)}",
        f"topic read {status_topic(root)}",
        f"topic read {light_topic(root, '+')}",
    ]
    for bay_id, has_sensor in bays:
        lines += [
            "",
            f"# Bay {bay_id}: its light fixture reads its command and says what it shows.",
            f"user {fixture_user(bay_id)}",
            f"topic read {light_topic(root, bay_id)}",
            f"topic read {status_topic(root)}",
            f"topic write {ack_topic(root, bay_id)}",
        ]
        if has_sensor:
            lines += [
                f"# Bay {bay_id}: its occupancy sensor.",
                f"user {sensor_user(bay_id)}",
                f"topic write {occupancy_topic(root, bay_id)}",
            ]
    return "\n".join(lines) + "\n"
