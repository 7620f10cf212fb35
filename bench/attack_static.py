"""What can be judged without a live attack: file modes, `laadplein check`'s warnings, the CLI and a proxy,
the systemd unit, the supply chain."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

from bench.attack_report import Row
from bench.attack_rig import check, mode
from tests.integration.harness import REPO

UNIT = REPO / "scripts" / "systemd" / "laadplein.service"
HARDENING = (
    "SystemCallFilter=@system-service",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "DevicePolicy=closed",
    "UMask=0077",
    "RemoveIPC=yes",
    "PrivateMounts=yes",
    "LimitNOFILE=",
    "MemoryMax=",
    "TasksMax=",
)


def file_modes(db: Path, token: Path) -> list[Row]:
    db_mode, token_mode = mode(db), mode(token)
    open_to_others = db.exists() and bool(db.stat().st_mode & 0o077)
    rows = [
        Row(
            "10",
            "database readable by group or others (umask)",
            1,
            int(open_to_others),
            0,
            f"{db.name} is {db_mode}",
        )
    ]
    rows.append(
        Row(
            "10",
            "API token file readable by group or others",
            1 if token.exists() else 0,
            int(bool(token.stat().st_mode & 0o077)) if token.exists() else None,
            0,
            f"{token.name} is {token_mode}"
            if token.exists()
            else "no token file made by the daemon",
        )
    )
    return rows


def check_warnings(config_text: str, folder: Path) -> Row:
    """A square on 0.0.0.0 without TLS, an 8-character password and a charger without one: what does check say?"""
    text = config_text.replace(
        'password = "attack-bench-pw-0123456789"', 'password = "short-pw"', 1
    )
    path = folder / "weak.toml"
    path.write_text(text)
    rc, out = check(path)
    lower = out.lower()
    flagged = [
        what
        for what, found in (
            ("no TLS", "tls" in lower),
            (
                "short password",
                bool(re.search(r"16|short", lower)) and "password" in lower,
            ),
            ("no password (CP04)", "cp04" in lower and "password" in lower),
        )
        if found
    ]
    return Row(
        "3",
        "weaknesses `laadplein check` names (no TLS, short password, no password)",
        3,
        len(flagged),
        3,
        f"exit {rc}; named: {', '.join(flagged) or 'none'}",
        at_least=True,
    )


def cli_proxy(config: Path) -> Row:
    """`laadplein status` with http_proxy pointing at a listener: does the token go through the proxy?"""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def accept() -> None:
        listener.settimeout(15)
        try:
            conn, _ = listener.accept()
            conn.settimeout(2)
            seen.append(conn.recv(4096))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",)}
    env.update(
        http_proxy=f"http://127.0.0.1:{port}", HTTP_PROXY=f"http://127.0.0.1:{port}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "status", "--config", str(config)],
        cwd=REPO,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    listener.close()
    thread.join(3)
    through = bool(seen)
    carried_token = through and b"authorization" in seen[0].lower()
    return Row(
        "10",
        "CLI requests to the admin API sent through http_proxy",
        1,
        int(through),
        0,
        f"status exit {done.returncode}; the proxy saw a request: {through} (with the token: {carried_token})",
    )


def unit_rows() -> list[Row]:
    text = UNIT.read_text()
    settings = {
        line.strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    missing = [h for h in HARDENING if not any(s.startswith(h) for s in settings)]
    rows = [
        Row(
            "11",
            "systemd hardening settings missing from the unit",
            len(HARDENING),
            len(missing),
            0,
            f"missing: {', '.join(missing) or 'none'}",
        )
    ]
    try:
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(UNIT)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        match = re.search(
            r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr
        )
        exposure = float(match.group(1)) if match else None
        why = f"systemd-analyze security --offline: {match.group(0) if match else (done.stderr.strip()[:120] or 'no figure')}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        exposure, why = None, f"systemd-analyze not usable: {exc}"
    rows.append(
        Row(
            "11",
            "systemd-analyze security exposure of the unit (target below 2.0)",
            1,
            exposure,
            1.9,
            why,
        )
    )
    return rows


def supply_chain() -> list[Row]:
    locks = [
        p
        for pattern in (
            "requirements*.txt",
            "*.lock",
            "pylock*.toml",
            "**/requirements*.txt",
            "requirements/*.txt",
        )
        for p in REPO.glob(pattern)
        if ".venv" not in p.parts and "node_modules" not in p.parts
    ]
    hashed = [
        p
        for p in locks
        if "--hash=sha256:" in p.read_text(errors="replace")
        or 'hash = "sha256' in p.read_text(errors="replace")
    ]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    unbounded = [d for d in deps if "<" not in d]
    return [
        Row(
            "12",
            "lock files with hashes for the gateway install",
            1,
            len(hashed),
            1,
            f"found: {', '.join(str(p.relative_to(REPO)) for p in hashed) or 'none'}",
            at_least=True,
        ),
        Row(
            "12",
            "runtime dependencies without an upper bound",
            len(deps),
            len(unbounded),
            0,
            f"unbounded: {', '.join(unbounded) or 'none'}",
        ),
    ]


def docs_rows() -> list[Row]:
    docs = " ".join(
        p.read_text(errors="replace")
        for p in [*(REPO / "docs").glob("*.md"), REPO / "README.md"]
    )
    credentials = "LoadCredentialEncrypted" in docs or "systemd-creds" in docs
    acl = [
        p
        for p in REPO.rglob("*acl*")
        if ".venv" not in p.parts and ".git" not in p.parts and p.is_file()
    ]
    return [
        Row(
            "10",
            "docs on the gateway secret in systemd's encrypted credentials",
            1,
            int(credentials),
            1,
            "found"
            if credentials
            else "no LoadCredentialEncrypted / systemd-creds in docs",
            at_least=True,
        ),
        Row(
            "4",
            "mosquitto ACL shipped in the repository",
            1,
            len(acl),
            1,
            f"found: {', '.join(str(p.relative_to(REPO)) for p in acl[:3]) or 'none'}",
            at_least=True,
        ),
    ]
