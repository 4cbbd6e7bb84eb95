"""The three aggregation modes end to end, in process (no Flower engine): real data, tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedrec.build import build_encoder
from fedrec.federated.aggregate import product
from fedrec.federated.arrays import to_numpy
from fedrec.federated.local import run_local
from tests.conftest import ComposeCfg

pytestmark = pytest.mark.slow


#: two platforms, two short rounds (on the tiny model)
RUN = (
    "platform=[video,ecommerce]",
    "federation.rounds=2",
    "federation.local_steps=3",
    "federation.eval_max_users=100",
    "train.lr=0.01",
)


def test_aggregation_modes_side_by_side(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    docs = {}
    for m in ("fedavg", "ffa", "svd"):
        docs[m] = run_local(compose_cfg(*RUN, f"federation.aggregation={m}", tmp_path=tmp_path / m), tmp_path / m)
    for mode, doc in docs.items():
        fed = doc["federation"]
        assert fed["aggregation"] == mode and [h["round"] for h in fed["history"]] == [1, 2]
        assert all(h["cross_platform_loss"] is not None and h["rejected"] == [] for h in fed["history"])
        assert set(doc["platforms"]) == {"video", "ecommerce"}
    up = {m: d["federation"]["history"][0]["bytes"]["up_per_client"] for m, d in docs.items()}
    assert up["ffa"] * 2 == up["fedavg"] == up["svd"]  # ffa sends B only

    init, _ = build_encoder(compose_cfg(*RUN, "federation.aggregation=ffa").model, 0)
    init_state = to_numpy(init.adapter_state())
    ffa = torch.load(tmp_path / "ffa" / "global_adapter.pt", weights_only=True)
    assert set(ffa) == {k for k in init_state if "lora_B" in k}
    svd = {k: v.numpy() for k, v in torch.load(tmp_path / "svd" / "global_adapter.pt", weights_only=True).items()}
    assert set(svd) == set(init_state)
    module = next(k.split(".lora_A.")[0] for k in svd if ".lora_A." in k)
    assert float(abs(product(svd, module)).max()) > 0  # the merged product moved away from B = 0
