"""``fedrec train privacy=dp`` trains each platform with user-level DP-SGD and reports epsilon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_train_local_with_dp_reports_epsilon(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    args = ["train", "mode=local", "platform=video", "model=tiny", "train=smoke", "privacy=dp", "eval.splits=[valid]"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args, "privacy.max_grad_norm=0.5", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    priv = doc["training"]["video"]["privacy"]
    assert priv["accountant"] == "rdp" and priv["delta"] == 1e-5 and priv["max_grad_norm"] == 0.5
    assert priv["steps"] == 5 and 0 < priv["epsilon"] < 10 and priv["refused"] == ""
    assert priv["sample_rate"] == doc["config"]["train"]["batch_size"] / 943
    assert doc["config"]["privacy"]["enabled"] is True
    # the printed table ends in the epsilon the run spent, the one in results.json
    words = " ".join(proc.stdout.split())  # rich wraps the title to the width
    assert "privacy spent: over 1 epoch(s) of local training (user-level epsilon, delta=1e-05" in words
    row = [line for line in proc.stdout.splitlines() if line.startswith("│ video")][-1]
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells == ["video", f"{priv['epsilon']:.3f}", f"{priv['noise_multiplier']:.4g}", f"{priv['sample_rate']:.4g}"]
