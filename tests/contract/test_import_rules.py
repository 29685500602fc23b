"""The dependency rules of ARCHITECTURE.md are enforced: a wrong arrow fails `make lint`.

`lint-imports` (import-linter) reads the contracts in pyproject.toml. These
tests run it on the real tree, which must pass, and on a copy of the packages
with one deliberate bad import each, which must fail naming the broken rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proto", "hardware", "edge_agent", "ota", "fleet_server", "simulators")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (the dev extra)"
)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The tree first on the path, so a copy is analysed instead of the installed packages.
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}  # one contract a line
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_real_tree_keeps_every_rule() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_copied_tree_keeps_every_rule_too(copy_of_the_tree: Path) -> None:
    """The copy is what the failing cases change; it must pass before they do."""
    result = _lint_imports(copy_of_the_tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "rule"),
    [
        ("proto/topics.py", "import fleet_server  # noqa", "proto (the wire contract)"),
        ("proto/solar.py", "import paho.mqtt.client  # noqa", "proto (the wire contract)"),
        ("fleet_server/power.py", "import hardware.solar  # noqa", "fleet_server imports"),
        ("fleet_server/enrollment.py", "import edge_agent.enroll  # noqa", "fleet_server imports"),
        ("hardware/solar.py", "import edge_agent  # noqa", "hardware imports proto only"),
        ("ota/__init__.py", "import hardware  # noqa", "ota imports proto only"),
        ("edge_agent/enroll.py", "import fleet_server.enrollment  # noqa", "edge_agent imports"),
        ("edge_agent/enroll.py", "import sqlmodel  # noqa", "edge_agent imports"),
    ],
)
def test_a_wrong_arrow_fails_the_lint(
    copy_of_the_tree: Path, module: str, line: str, rule: str
) -> None:
    _add_import(copy_of_the_tree, module, line)
    result = _lint_imports(copy_of_the_tree)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(rule) for row in broken), result.stdout
