"""The attack bench's second square: wss:// with an RSA pair (and an ECDSA pair where the gateway takes
one) and unknown chargers allowed, for the TLS suites on offer and charger ids carrying hostile text."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bench import attack_doors, attack_ocpp, attack_static
from bench.attack_mqtt import Broker
from bench.attack_report import Row
from bench.attack_rig import guarded, square_toml, start_square
from tests.certs import self_signed
from tests.integration.ports import free_port


def _pair(folder: Path, name: str, key: Any) -> tuple[Path, Path]:
    return self_signed(folder / f"{name}.crt", folder / f"{name}.key", key=key, names=("127.0.0.1",))


async def tls_square(
    tmp: Path, broker: Broker, rows: list[Row], notes: list[str]
) -> None:
    """A second daemon with wss://: an RSA pair and, where the gateway takes one, an ECDSA pair beside it."""
    folder = tmp / "tls"
    folder.mkdir()
    rsa_cert, rsa_key = _pair(
        folder, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_cert, ec_key = _pair(folder, "ecdsa", ec.generate_private_key(ec.SECP256R1()))
    ports = {"ocpp": free_port(), "api": free_port(), "mqtt": broker.port}
    base = f'tls_cert_file = "{rsa_cert}"\ntls_key_file = "{rsa_key}"\nallow_unknown_chargers = true\n'
    ecdsa = f'tls_ecdsa_cert_file = "{ec_cert}"\ntls_ecdsa_key_file = "{ec_key}"\n'
    probe = folder / "ecdsa-probe.toml"
    probe.write_text(
        square_toml(
            ocpp_port=ports["ocpp"],
            api_port=ports["api"],
            mqtt_port=broker.port,
            mqtt_extra=broker.daemon_keys(folder),
            meter_port=None,
            ocpp_host="127.0.0.1",
            open_charger=False,
            ocpp_extra=base + ecdsa,
        )
    )
    rc, _ = await asyncio.to_thread(attack_static.check, probe)
    extra = base + ecdsa if rc == 0 else base
    if rc != 0:
        notes.append(
            "the gateway takes no ECDSA pair beside the RSA one (`laadplein check` refuses tls_ecdsa_*)"
        )

    def make_text(**options: Any) -> str:
        options.pop("open_charger", None)
        return square_toml(
            ocpp_port=ports["ocpp"],
            api_port=ports["api"],
            mqtt_port=broker.port,
            mqtt_extra=broker.daemon_keys(folder),
            meter_port=None,
            ocpp_host="127.0.0.1",
            open_charger=False,
            ocpp_extra=extra,
            **options,
        )

    started = await asyncio.to_thread(start_square, folder, ports, make_text)
    d = started.daemon
    try:
        offered = await asyncio.to_thread(attack_doors.offered_suites, ports["ocpp"])
        yes = sum(v == "yes" for k, v in offered.items() if not k.startswith("control"))
        rows.append(
            Row(
                "3",
                "TLS suites OCPP 2.0.1 requires that wss:// offers (TLS 1.2)",
                4,
                yes,
                4,
                "; ".join(f"{k}: {v}" for k, v in offered.items()),
                at_least=True,
            )
        )
        await guarded(rows, "9", "unknown id text", unknown_id_text(ports["ocpp"], d))
    finally:
        await asyncio.to_thread(d.stop)


async def unknown_id_text(port: int, d: Any) -> Row:
    """With allow_unknown_chargers: a charger id carrying ESC and a newline, over wss://."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    answer = "accepted"
    try:
        async with connect(
            f"wss://127.0.0.1:{port}/ocpp/X%1B%5B31mY%0AFORGED-ID",
            ssl=ctx,
            subprotocols=[Subprotocol("ocpp1.6")],
            open_timeout=5,
        ) as ws:
            await ws.send(
                attack_ocpp.frame(
                    "BootNotification",
                    {"chargePointVendor": "v", "chargePointModel": "m"},
                )
            )
            await asyncio.wait_for(ws.recv(), 5)
    except InvalidStatus as exc:
        answer = f"HTTP {exc.response.status_code}"
    except (OSError, TimeoutError) as exc:
        answer = f"{type(exc).__name__}"
    await asyncio.sleep(0.5)
    log = d.log()
    raw = log.count("\x1b") + sum(
        1 for line in log.splitlines() if line.startswith("FORGED")
    )
    return Row(
        "9",
        "ESC bytes / forged lines from an unknown charger id in the daemon log",
        1,
        raw,
        0,
        f"handshake: {answer}; raw bytes or forged lines in the log: {raw}",
    )
