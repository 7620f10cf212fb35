"""Run tzi-OCTT's central system cases that docs/oca-coverage.md lists as applying to the gateway.

    python3 -m scripts.octt [--suite CHECKOUT] [--version 1.6|2.0.1] [--case TC_B_01_CSMS ...]

Without --suite, tzi-OCTT is cloned over https at the pinned commit (plan.SUITE_COMMIT) into
~/.cache/laadplein/octt; its own Python (it needs websockets 13) is a venv made there from its
requirements.txt, unless --suite-python names one. The run starts a mosquitto and the gateway
(conformance mode when the gateway has it) on free 127.0.0.1 ports with the suite's stations,
password, tokens and server certificates, plays the suite's trigger server on the admin API, runs
each case in its own pytest run and prints a table, and each failure with the last frame each way.
Exit 0 when every case passed, 1 when one failed, 2 when the run could not be set up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from scripts.octt.bridge import AdminApi, Bridge, Notes
from scripts.octt.plan import (
    TOKENS,
    V16,
    V201,
    ApiRequest,
    Outcome,
    applicable_cases,
    case_file,
    case_version,
    square_toml,
    suite_env,
    summary,
    table,
    tls_files,
)
from scripts.octt.rig import (
    REPO,
    Gateway,
    Mosquitto,
    RigError,
    checkout,
    free_port,
    run_case,
    suite_python,
)

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


def gateway_has_conformance_mode() -> bool:
    from config.schema_links import OcppConfig

    return "conformance_mode" in OcppConfig.model_fields


def chosen_cases(args: argparse.Namespace, suite: Path) -> tuple[list[str], list[str]]:
    """(the cases to run, the applicable ones the suite does not have)."""
    if args.case:
        for case in args.case:
            case_version(case)
        wanted = list(args.case)
    else:
        listed = applicable_cases((REPO / "docs" / "oca-coverage.md").read_text(encoding="utf-8"))
        wanted = [c for v in (V16, V201) if args.version in (v, "all") for c in listed[v]]
    missing = [c for c in wanted if not (suite / case_file(c)).is_file()]
    return sorted((c for c in wanted if c not in missing), key=lambda c: (case_version(c), c)), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m scripts.octt", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, help="a tzi-OCTT checkout (default: clone the pinned commit)")
    parser.add_argument("--suite-python", type=Path, help="a Python with the suite's requirements.txt installed")
    parser.add_argument("--version", choices=(V16, V201, "all"), default="all")
    parser.add_argument("--case", action="append", help="run this case id (repeatable) instead of the applicable list")
    parser.add_argument("--conformance", choices=("auto", "on", "off"), default="auto",
                        help="[ocpp] conformance_mode (auto: on when this gateway has it)")
    parser.add_argument("--action-timeout-s", type=int, default=15, help="the suite's CSMS_ACTION_TIMEOUT")
    parser.add_argument("--case-timeout-s", type=float, default=180)
    parser.add_argument("--workdir", type=Path, help="keep config, logs and database here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the outcomes to this file")
    args = parser.parse_args(argv)

    has_mode = gateway_has_conformance_mode()
    if args.conformance == "on" and not has_mode:
        print("octt: this gateway has no [ocpp] conformance_mode; run with --conformance off", file=sys.stderr)
        return EXIT_SETUP
    conformance = has_mode and args.conformance != "off"
    try:
        suite = checkout(args.suite)
        cases, missing = chosen_cases(args, suite)
        python = suite_python(suite, args.suite_python)
    except (RigError, ValueError) as exc:
        print(f"octt: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print(f"tzi-OCTT at {suite}; {len(cases)} cases; conformance mode {'on' if conformance else 'off'}")
    if missing:
        print(f"not in this checkout of the suite: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="octt-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            outcomes = _run(args, suite, python, cases, work, conformance)
        except RigError as exc:
            print(f"octt: {exc}", file=sys.stderr)
            return EXIT_SETUP
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps({"conformance_mode": conformance, "summary": summary(outcomes),
                                         "outcomes": [asdict(o) for o in outcomes]}, indent=1) + "\n")
    return EXIT_FAILED if summary(outcomes)["failed"] else EXIT_OK


def _run(args: argparse.Namespace, suite: Path, python: Path, cases: list[str], work: Path,
         conformance: bool) -> list[Outcome]:
    ocpp_port, api_port = free_port(), free_port()
    with Mosquitto(work) as broker:
        text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker.port,
                           tls=tls_files(str(suite)), conformance=conformance)
        with Gateway(work, text, api_port) as gateway:
            api = AdminApi(api_port, gateway.token)
            for tag, status, group in TOKENS:
                body = {"tag": tag, "status": status} | ({"group": group} if group else {})
                code, answer = api.send(ApiRequest("PUT", "/api/tokens", body))
                if code != 200:
                    raise RigError(f"PUT /api/tokens for the suite's tokens: {code} {answer}")
            notes = Notes()
            outcomes: list[Outcome] = []
            with Bridge(api, notes) as bridge:
                env = suite_env(checkout=str(suite), ocpp_port=ocpp_port, bridge_port=bridge.port,
                                action_timeout_s=args.action_timeout_s)
                for case in cases:
                    notes.case = case
                    found = run_case(python, suite, case, env, work / "record.jsonl", args.case_timeout_s)
                    taken = notes.take(case)
                    outcomes += [replace(o, bridge_notes=taken) if o.outcome in ("failed", "error") else o
                                 for o in found]
                    print(f"  {case}: {', '.join(sorted({o.outcome for o in found}))}", flush=True)
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
