"""`laadplein broker-acl`: the broker's access list for the square's devices, and a password per device.

The access list goes to stdout (for /etc/mosquitto/laadplein.acl). With `--passwords FILE` every device
user also gets a random password, written as `user:password` lines to a new file readable only by its
owner: hand each device its line, then hash the file for mosquitto with `mosquitto_passwd -U`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from controller.cli.client import DEFAULT_CONFIG, config_path
from drivers.mqtt.acl import GATEWAY_USER, acl_text, broker_users

EXIT_OK, EXIT_USAGE = 0, 2
PASSWORD_BYTES = 24  # 32 characters of URL-safe base64: nobody guesses it, a device's config field takes it


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `broker-acl`."""
    p = sub.add_parser("broker-acl", help="the MQTT broker's access list (one user per device) for this square")
    p.add_argument("--config", help=f"config file (default $LAADPLEIN_CONFIG, then {DEFAULT_CONFIG})")
    p.add_argument("--users", action="store_true", help="print only the user names, one a line")
    p.add_argument("--passwords", metavar="FILE",
                   help="also write a new random password for every user to FILE (user:password lines, mode 0600; "
                        "an existing file is not overwritten)")
    p.set_defaults(func=cmd_broker_acl)


def cmd_broker_acl(args: argparse.Namespace) -> int:
    from config.loader import ConfigError, load_config

    try:
        cfg = load_config(config_path(args.config))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_USAGE
    bays = [(b.id, b.sensor) for b in cfg.bays]
    gateway = cfg.mqtt.username or GATEWAY_USER
    users = broker_users(bays, gateway)
    if args.passwords:
        try:
            write_passwords(Path(args.passwords), users)
        except OSError as exc:
            print(f"laadplein broker-acl: {args.passwords}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"laadplein broker-acl: {len(users)} passwords written to {args.passwords}", file=sys.stderr)
    if args.users:
        print("\n".join(users))
    else:
        sys.stdout.write(acl_text(cfg.topic_root, bays, gateway, site=cfg.site.id))
    return EXIT_OK


def write_passwords(path: Path, users: list[str]) -> dict[str, str]:
    """A new file of `user:password` lines, mode 0600, one fresh random password per user; refuses an existing file."""
    passwords = {user: secrets.token_urlsafe(PASSWORD_BYTES) for user in users}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(f"{user}:{password}\n" for user, password in passwords.items())
    return passwords
