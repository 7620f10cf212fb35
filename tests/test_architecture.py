"""The arrows of docs/architecture.md hold: `lint-imports` keeps the contracts in pyproject.toml, and
breaks on a violation planted in a copy of the tree (so the check is known to bite)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "drivers", "signage", "battery", "config")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the packages in `root`, as the test run and CI call it."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
         "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_import_contracts_are_kept():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("drivers/mqtt/link.py", "import controller.shell.state", "drivers never import controller"),
        ("drivers/contract/events.py", "import drivers.ocpp.frames", "drivers.contract (the shared vocabulary)"),
        ("controller/core/sharing.py", "import controller.shell.power", "the pure core imports only"),
        ("battery/dispatch.py", "import controller.core.sharing_types", "never import controller"),
        ("drivers/meters/sdm630.py", "import drivers.sim.sdm630", "import drivers.sim"),
        ("signage/texts.py", "import signage.rules", "no circles"),
        ("controller/shell/reconcile.py", "import controller.shell.cycle", "no circles"),
    ],
)
def test_a_planted_violation_breaks_the_check(copy_of_the_tree: Path, module: str, planted: str, contract: str):
    assert lint_imports(copy_of_the_tree).returncode == 0
    target = copy_of_the_tree / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    done = lint_imports(copy_of_the_tree)
    assert done.returncode != 0, done.stdout
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken) or contract in done.stdout.split("Broken contracts")[-1], done.stdout


def _logger_names() -> list[tuple[str, str]]:
    """(file, first argument) of every `logging.getLogger(...)` in the product's packages."""
    import ast

    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                        and node.args):
                    arg = node.args[0]
                    name = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
                    found.append((str(path.relative_to(REPO)), name))
    return found


def test_every_logger_of_ours_is_named_laadplein_part_whatever_file_it_is_in():
    # A technician filters the journal on these names; moving a file must not change them.
    third_party = {"ocpp", "pymodbus", "websockets", "aiohttp.access", "aiosqlite", "_name", "noisy"}
    names = _logger_names()
    assert len(names) > 20
    ours = [(f, n) for f, n in names if n not in third_party]
    assert [(f, n) for f, n in ours if not n.startswith("laadplein.")] == []


def test_no_module_of_ours_is_imported_by_name_at_run_time():
    # lint-imports sees import statements only: importlib.import_module("drivers.sim...") or
    # __import__ would carry an arrow past every contract, so the product code has none.
    import ast

    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                name = node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else (
                    node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None)
                if name in ("import_module", "__import__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
