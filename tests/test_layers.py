"""The layering rule, enforced: only ``fedrec.cli`` imports Flower or the Flower apps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT


def _contracts() -> list[dict]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a test dependency (pip install -e '.[test]')"
    out = subprocess.run([lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_contract_covers_every_library_module() -> None:
    """A new module under fedrec/ is inside the contract unless it belongs to the application layer."""
    library = next(
        c for c in _contracts() if "fedrec.cli" in c["forbidden_modules"] and "flwr" in c["forbidden_modules"]
    )
    listed = set(library["source_modules"])
    tree = {
        f"fedrec.{p.stem}"
        for p in (REPO_ROOT / "fedrec").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())
    }
    assert tree - {"fedrec.cli"} == listed


def test_packaged_folders_are_listed() -> None:
    """Every package folder of the tree is in pyproject's explicit package list (a wheel would miss it)."""
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO_ROOT).parts)
        for top in ("fedrec", "server", "clients")
        for p in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found <= listed
    assert "fedrec.conf" in listed
