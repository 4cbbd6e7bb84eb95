"""A wheel (``pip install .``, not ``-e``) carries everything ``fedrec simulate`` needs: apps and conf."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_wheel_install_runs_a_tiny_simulation(tmp_path: Path, data_root: Path) -> None:
    wheels, src = tmp_path / "wheels", tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):  # build off the tree: its build/ and caches stay clean
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in ("fedrec", "server", "clients", "conf"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("fedrec-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # fedrec itself from the wheel; its dependencies from the test environment (a plain path entry: the
    # editable install's import hook there is not loaded, so `fedrec` can only come from the wheel)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FEDREC_CONF")}
    env |= {"FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    where = subprocess.run(
        [py, "-c", "import fedrec, server, clients; print(fedrec.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    sim = subprocess.run(
        [
            py,
            "-m",
            "fedrec.cli",
            "simulate",
            "model=tiny",
            "train=smoke",
            "platform=[video]",
            "federation.rounds=1",
            "federation.local_steps=2",
            "federation.eval_max_users=50",
            "federation.compare_local=false",
            "federation.compare_baselines=[]",
            "federation.export_joint_model=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["federation"]["rounds"] == 1
    assert doc["platforms"]["video"]["test"]["users"] == 943
