"""``federation.secure_aggregation=secaggplus``: the config refusals, and a SecAgg+ run matching plain fedavg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedrec.config import compose_config
from fedrec.federated.local import run_local
from tests.federated.test_simulate import BASE as SIM_BASE

BASE = [
    *SIM_BASE,
    "federation.rounds=2",
    "federation.compare_local=false",
    "federation.compare_baselines=[]",
    "federation.export_joint_model=false",
]
SECAGG = ["federation.secure_aggregation=secaggplus", "federation.secagg_max_weight=1000"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("federation.aggregation=svd", "federation.aggregation=svd"),
        ("federation.robust=median", "federation.robust=median"),
        ("federation.update_norm_bound=1.0", "federation.update_norm_bound"),
        ("federation.max_weight_share=0.5", "federation.max_weight_share"),
        ("federation.weighting=uniform", "federation.weighting=uniform"),
        ("federation.secagg_quantization_range=4294967296", "federation.secagg_quantization_range"),
        ("federation.secagg_num_shares=2", "federation.secagg_num_shares"),
    ],
)
def test_refused(override: str, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("=", "=")):
        compose_config([*BASE, *SECAGG, override])


def test_one_platform_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 clients"):
        compose_config([*BASE[:2], "platform=video", *SECAGG])


def test_server_optimizer_allowed() -> None:
    cfg = compose_config([*BASE, *SECAGG, "federation.server_optimizer=fedavgm"])  # it steps on the mean
    assert cfg.federation.secure_aggregation == "secaggplus" and cfg.federation.server_optimizer == "fedavgm"


@pytest.mark.slow
def test_secagg_matches_plain(data_root: Path, tmp_path: Path) -> None:
    """Two SecAgg+ rounds in simulation end within the quantization error of the in-process plain fedavg run."""
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "sec"
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", "simulate", *BASE, *SECAGG, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    for h in doc["federation"]["history"]:
        assert h["secure_aggregation"]["clients"] == ["ecommerce", "video"], h
        assert "update_norm" not in h["platforms"]["video"]["train"]  # no individual update was seen
    cfg = compose_config([*BASE, f"data.cache_dir={tmp_path / 'cache'}"])
    run_local(cfg, tmp_path / "plain")
    sec = torch.load(out / "global_adapter.pt")
    plain = torch.load(tmp_path / "plain" / "global_adapter.pt")
    # per round, the mean's error per value is below clients * 2 * clip / range / (sum examples / max_weight)
    # = 2 * 16 / 2**26 / (96 / 1000) ~ 5e-6; after two rounds (round 2 trains from round 1's mean) 1e-4
    worst = max(float((sec[k] - plain[k]).abs().max()) for k in plain)
    assert worst < 1e-4, worst
