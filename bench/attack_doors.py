"""Attacks on the OCPP endpoint's doors: a flooding socket, a storm of half-open handshakes, unknown ids and
wrong passwords from one host, and the TLS suites wss:// offers."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bench.attack_ocpp import db_rows, frame, now_text
from bench.attack_report import Row
from drivers.sim.charger16 import SimCharger


async def flood(
    attacker: SimCharger,
    connector: int,
    db: Path,
    alarms: Callable[[], Awaitable[list[dict]]],
    seconds: float = 5.0,
    max_frames: int = 20_000,
) -> Row:
    """One socket writes MeterValues as fast as it can for `seconds`, ten readings a frame: rows written per second."""
    tx = attacker.transactions.get(connector)
    before = db_rows(
        db, "SELECT count(*) FROM meter_samples WHERE charger_id = 'CP01'"
    )[0][0]
    alarms_before = len(await alarms())
    readings = [
        {
            "timestamp": now_text(),
            "sampledValue": [
                {
                    "value": "10.0",
                    "measurand": "Current.Import",
                    "phase": f"L{p}",
                    "unit": "A",
                }
                for p in (1, 2, 3)
            ],
        }
    ] * 10
    sent, t0 = 0, time.monotonic()
    try:
        while time.monotonic() - t0 < seconds and sent < max_frames:
            await attacker._connection.send(
                frame(
                    "MeterValues",
                    {
                        "connectorId": connector,
                        "transactionId": tx,
                        "meterValue": readings,
                    },
                )
            )
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)
    except Exception as exc:  # noqa: BLE001 - a closed socket is an answer too
        note = f"; the socket ended: {type(exc).__name__}"
    else:
        note = ""
    took = time.monotonic() - t0
    await asyncio.sleep(2.0)  # let the gateway finish what it took in
    after = db_rows(db, "SELECT count(*) FROM meter_samples WHERE charger_id = 'CP01'")[
        0
    ][0]
    elapsed = time.monotonic() - t0
    written = after - before
    rate = written / elapsed  # what it wrote, also from its backlog, per second
    # What the gateway's per-charger caps let through in that time ([ocpp] max_messages_per_s with
    # message_burst, max_samples_per_frame, at their defaults); a gateway without caps is held to
    # 100 rows a second.
    caps = ocpp_caps()
    if caps is None:
        allowed, how = 100 * elapsed, "no caps: held to 100 rows/s"
    else:
        per_s, burst, per_frame = caps
        allowed = (burst + per_s * elapsed) * min(10, per_frame) + 10  # + one frame in flight
        how = f"caps {per_s:g} frames/s, burst {burst}, {per_frame} readings a frame: at most {allowed:.0f} rows"
    alarmed = len(await alarms()) > alarms_before
    return Row(
        "8",
        "meter rows one flooding socket wrote beyond the gateway's caps",
        sent,
        max(0, round(written - allowed)),
        0,
        f"{sent} frames of 10 readings in {took:.1f} s -> {written} rows ({rate:.0f}/s) written by 2 s later;"
        f" {how}; alarm raised: {alarmed}{note}",
    )


def ocpp_caps() -> tuple[float, int, int] | None:
    """The default per-charger caps of the gateway under test, None where it has none."""
    from config.schema import OcppConfig

    fields = OcppConfig.model_fields
    if not {"max_messages_per_s", "message_burst", "max_samples_per_frame"} <= set(fields):
        return None
    return (
        float(fields["max_messages_per_s"].default),
        int(fields["message_burst"].default),
        int(fields["max_samples_per_frame"].default),
    )


async def handshake_flood(
    port: int,
    api_ok: Callable[[], Awaitable[bool]],
    log_text: Callable[[], str],
    n: int = 300,
    hold_s: float = 3.0,
) -> list[Row]:
    """One host opens `n` OCPP sockets at once and never finishes the handshakes (the daemon at 256 files)."""
    tracebacks_before = log_text().count("Traceback")

    async def open_one(
        i: int,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 2.0
            )
            writer.write(f"GET /ocpp/CP01 HTTP/1.1\r\nHost: x\r\nX-{i}: ".encode())
            return reader, writer
        except (OSError, TimeoutError):
            return None

    opened = [
        c
        for c in await asyncio.gather(*(open_one(i) for i in range(n)))
        if c is not None
    ]
    reachable, tries, t_end = 0, 0, time.monotonic() + hold_s
    while time.monotonic() < t_end:
        tries += 1
        reachable += await api_ok()
        await asyncio.sleep(0.5)
    held = 0
    for reader, writer in opened:
        try:
            held += await asyncio.wait_for(reader.read(1), 0.01) != b""
        except TimeoutError:
            held += 1
        except OSError:
            pass
        writer.close()
    await asyncio.sleep(1.0)
    tracebacks = log_text().count("Traceback") - tracebacks_before
    return [
        Row(
            "8",
            f"API unreachable while one host opens {n} OCPP sockets (daemon at 256 files)",
            tries,
            tries - reachable,
            0,
            f"API answered {reachable} of {tries} probes",
        ),
        Row(
            "8",
            f"half-open OCPP handshakes one host keeps (of {len(opened)} opened)",
            len(opened),
            held,
            64,
            f"{held} still open after {hold_s:g} s",
        ),
        Row(
            "8",
            "tracebacks in the daemon log from the handshake flood",
            1,
            tracebacks,
            0,
            f"{tracebacks} new",
        ),
    ]


async def _handshake(url: str, charger_id: str, password: str | None) -> int:
    headers = {}
    if password is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{charger_id}:{password}".encode()).decode()
        )
    try:
        async with connect(
            f"{url}/{charger_id}",
            subprotocols=[Subprotocol("ocpp1.6")],
            open_timeout=5,
            additional_headers=headers,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
    except (OSError, TimeoutError):
        return 0


async def lockouts(url: str, known: str, n: int = 25) -> list[Row]:
    """`n` unknown charger ids from one host, then `n` wrong passwords for a known one: are they locked out?"""
    unknown = [
        await _handshake(url, f"ZZ{i:03d}", "guess-password-000000") for i in range(n)
    ]
    first = next((i + 1 for i, s in enumerate(unknown) if s == 429), None)
    wait_s = 6.0  # the bench's login_lockout_s is 5 s
    await asyncio.sleep(wait_s)
    wrong = [
        await _handshake(url, known, f"wrong-{i:02d}-password-xx") for i in range(n)
    ]
    first_wrong = next((i + 1 for i, s in enumerate(wrong) if s == 429), None)
    return [
        Row(
            "3",
            f"unknown charger ids tried before the host is locked out (of {n})",
            n,
            (first or n + 1) - 1,
            20,
            f"answers: {sorted(set(unknown))}; first 429 at attempt {first}",
        ),
        Row(
            "3",
            f"wrong passwords tried for {known} before it is locked out (of {n})",
            n,
            (first_wrong or n + 1) - 1,
            5,
            f"answers: {sorted(set(wrong))}; first 429 at attempt {first_wrong}",
        ),
    ]


CONTROL_SUITE = "ECDHE-RSA-AES128-GCM-SHA256"  # any TLS 1.2 server with an RSA certificate offers it
SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
}


def offered_suites(port: int) -> dict[str, str]:
    """Each suite OCPP 2.0.1 requires (A00.FR.318), tried alone over TLS 1.2: 'yes' or why not."""
    out = {}
    for name, openssl_name in [
        *SUITES.items(),
        (f"control {CONTROL_SUITE}", CONTROL_SUITE),
    ]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.set_ciphers(openssl_name + ":@SECLEVEL=0")
            with (
                socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
                ctx.wrap_socket(raw) as tls,
            ):
                out[name] = (
                    "yes"
                    if tls.cipher()[0] == openssl_name
                    else f"got {tls.cipher()[0]}"
                )
        except (ssl.SSLError, OSError) as exc:
            out[name] = f"no ({getattr(exc, 'reason', None) or type(exc).__name__})"
    return out
