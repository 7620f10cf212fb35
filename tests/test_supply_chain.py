"""The gateway's install is reproducible: a lock file with hashes, bounds below breaking releases."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "gateway.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


def locked() -> dict[str, tuple[str, str | None, int]]:
    """{canonical name: (version, environment marker or None, number of hashes)} of the lock file."""
    pins: dict[str, tuple[str, str | None, int]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if found := PIN.match(line):
            name = canonicalize_name(found[1])
            assert name not in pins, f"{name} pinned twice"
            pins[name] = (found[2], found[3], 0)
        else:
            assert HASH.match(line) and name is not None, f"not a pin or a sha256 hash: {line!r}"
            version, marker, hashes = pins[name]
            pins[name] = (version, marker, hashes + 1)
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_every_runtime_dependency_has_an_upper_bound():
    for req in runtime_requirements():
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{req}: no upper bound"


def test_lock_pins_every_dependency_with_hashes_within_the_bounds():
    pins = locked()
    assert pins and all(hashes >= 1 for _, _, hashes in pins.values())
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {LOCK.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{name}=={pins[name][0]} is outside {req}"
    # what builds laadplein itself, for `pip install --no-build-isolation --no-deps .`
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in map(Requirement, build):
        assert req.specifier.contains(pins[canonicalize_name(req.name)][0]), req


def test_lock_is_closed_under_the_requirements_of_what_it_pins():
    """Where this environment has a locked package at its locked version, what that package
    requires on this platform is locked too (pip --require-hashes refuses anything unlisted)."""
    pins = locked()
    checked = 0
    for name, (version, marker, _) in pins.items():
        if marker is not None:
            continue  # another platform's package (pywin32)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in pins, f"{name} needs {req}, which is not locked"
    assert checked >= len(runtime_requirements())  # the test venv has the locked versions


def test_install_guide_installs_from_the_lock_with_hashes():
    guide = (REPO / "docs" / "install-debian.md").read_text()
    assert "--require-hashes -r requirements/gateway.txt" in guide
    assert "pip\" install --no-build-isolation --no-deps ." in guide
    # no install step of the guide fetches anything unpinned
    commands = "\n".join(re.findall(r"^```sh\n(.*?)^```", guide, re.MULTILINE | re.DOTALL))
    installs = [line for line in commands.splitlines() if re.search(r"\bpip\"? install\b", line)]
    assert installs and all("--require-hashes" in line or "--no-deps" in line for line in installs), installs
