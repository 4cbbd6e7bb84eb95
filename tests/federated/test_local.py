"""The three aggregation modes end to end, in process (no Flower engine): real data, tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedrec.build import build_encoder
from fedrec.config import compose_config
from fedrec.federated.aggregate import product
from fedrec.federated.arrays import to_numpy
from fedrec.federated.local import run_local

pytestmark = pytest.mark.slow


def _cfg(data_root: Path, tmp_path: Path, mode: str):
    cfg = compose_config(
        [
            "model=tiny",
            "train=smoke",
            "platform=[video,ecommerce]",
            f"data.root={data_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "federation.rounds=2",
            "federation.local_steps=3",
            "federation.eval_max_users=100",
            f"federation.aggregation={mode}",
            "train.lr=0.01",
        ]
    )
    return cfg


def test_aggregation_modes_side_by_side(data_root: Path, tmp_path: Path) -> None:
    docs = {m: run_local(_cfg(data_root, tmp_path / m, m), tmp_path / m) for m in ("fedavg", "ffa", "svd")}
    for mode, doc in docs.items():
        fed = doc["federation"]
        assert fed["aggregation"] == mode and [h["round"] for h in fed["history"]] == [1, 2]
        assert all(h["cross_platform_loss"] is not None and h["rejected"] == [] for h in fed["history"])
        assert set(doc["platforms"]) == {"video", "ecommerce"}
    up = {m: d["federation"]["history"][0]["bytes"]["up_per_client"] for m, d in docs.items()}
    assert up["ffa"] * 2 == up["fedavg"] == up["svd"]  # ffa sends B only

    init, _ = build_encoder(_cfg(data_root, tmp_path, "ffa").model, 0)
    init_state = to_numpy(init.adapter_state())
    ffa = torch.load(tmp_path / "ffa" / "global_adapter.pt", weights_only=True)
    assert set(ffa) == {k for k in init_state if "lora_B" in k}
    svd = {k: v.numpy() for k, v in torch.load(tmp_path / "svd" / "global_adapter.pt", weights_only=True).items()}
    assert set(svd) == set(init_state)
    module = next(k.split(".lora_A.")[0] for k in svd if ".lora_A." in k)
    assert float(abs(product(svd, module)).max()) > 0  # the merged product moved away from B = 0
