"""The sequence model (model.kind=seqrec) through the federated path, in process: real data, tiny BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec.build import build_encoder
from fedrec.federated.client import PlatformClient
from fedrec.federated.local import run_local
from fedrec.federated.supported import check_supported
from fedrec.seqrec.build import initial_state
from tests.conftest import ComposeCfg

pytestmark = pytest.mark.slow


#: the sequence model, trained by its own settings (no train=smoke)
SEQ = {"model": "seqrec_tiny", "smoke": False}


def seq_run(platforms: tuple[str, ...] = ("video", "social")) -> tuple[str, ...]:
    """The overrides of a short sequence-model federation over ``platforms`` (with ``model=seqrec_tiny``)."""
    return (
        f"platform=[{','.join(platforms)}]",
        "federation.rounds=2",
        "federation.local_epochs=0.3",
        "federation.eval_max_users=200",
        "train.progress=false",
        *(f"platforms.{p}.prior=none" for p in platforms),  # the prior: tests/seqrec/test_prior.py
    )


def test_a_seqrec_federation_trains_the_shared_part_and_serves_personal_models(compose_cfg: ComposeCfg, tmp_path: Path):
    cfg = compose_cfg(*seq_run(), **SEQ)
    doc = run_local(cfg, tmp_path / "run")
    hist = doc["federation"]["history"]
    assert [h["round"] for h in hist] == [1, 2] and all(h["rejected"] == [] for h in hist)
    assert all(np.isfinite(h["cross_platform_loss"]) for h in hist)
    init = initial_state(cfg, build_encoder(cfg.model, cfg.seed)[0])
    best = torch.load(tmp_path / "run" / "best_adapter.pt", weights_only=True)
    assert set(best) == set(init) and all(k.startswith("shared.") for k in best)  # frozen text: no adapter sent
    assert any(not np.allclose(best[k].numpy(), init[k]) for k in init)  # the federation moved the shared part
    for platform in ("video", "social"):
        test = doc["platforms"][platform]["test"]
        assert test["users"] > 0 and {"NDCG@10", "shared-NDCG@10", "shared-loss"} <= set(test)
        # the personal model adds item-ID embeddings fitted on the platform: on real data it beats the text path
        assert test["NDCG@10"] > test["shared-NDCG@10"]


def test_local_parts_stay_on_the_platform(compose_cfg: ComposeCfg, tmp_path: Path):
    cfg = compose_cfg(*seq_run(("video",)), "model.seq.local_parts=[adaptor]", "federation.rounds=1", **SEQ)
    client = PlatformClient(cfg, "video", tmp_path / "state")
    init = initial_state(cfg, client.encoder)
    sent = client.train(init, 1).state
    assert set(sent) == set(init)  # the local adaptor is sent too (it serves a platform that has none)
    kept = sent["shared.adaptor.weight"]
    moved = {k: v + 1.0 for k, v in sent.items()}
    client._load(moved, 1)  # round 2 starts: the global encoder, the platform's own adaptor of round 1
    shared = client.seq.task.shared  # type: ignore[union-attr]
    np.testing.assert_array_equal(shared.adaptor.weight.detach().numpy(), kept)
    name = next(k for k in moved if k.startswith("shared.encoder."))
    np.testing.assert_array_equal(dict(shared.named_parameters())[name[len("shared.") :]].detach().numpy(), moved[name])


@pytest.mark.parametrize(
    ("override", "message"),
    [("federation.aggregation=svd", "fedavg"), ("federation.shards_per_platform=2", "one client per platform")],
)
def test_unsupported_seqrec_settings_are_refused(compose_cfg: ComposeCfg, tmp_path: Path, override: str, message: str):
    with pytest.raises(ValueError, match=message):
        check_supported(compose_cfg(*seq_run(), override, **SEQ))


def test_bad_seq_settings_name_the_key(compose_cfg: ComposeCfg, tmp_path: Path):
    with pytest.raises(ValueError, match="model.seq.dim"):
        compose_cfg(*seq_run(), "model.seq.dim=15", **SEQ)
    with pytest.raises(ValueError, match="local_parts"):
        compose_cfg(*seq_run(), "model.seq.local_parts=[head]", **SEQ)


def test_a_dp_seqrec_federation_charges_the_ledger_and_withholds_evaluation(compose_cfg: ComposeCfg, tmp_path: Path):
    cfg = compose_cfg(*seq_run(("video",)), "command=simulate", "privacy=target_eps", "privacy.target_epsilon=8", **SEQ)
    doc = run_local(cfg, tmp_path / "run")
    hist = doc["federation"]["history"]
    trains = [h["platforms"]["video"]["train"] for h in hist]
    assert 0 < trains[0]["epsilon"] < trains[1]["epsilon"] <= 8.0 + 1e-6  # cumulative, within the target
    assert all("train-loss" not in t for t in trains)  # only the DP state and public metrics left the platform
    assert doc["federation"]["best_round"] == 2  # no validation reached the server: the latest round's state
    (ledger,) = (tmp_path / "run" / "client_state" / "privacy").glob("video-*.ledger")
    assert ledger.stat().st_size > 0
    assert doc["platforms"]["video"]["test"]["NDCG@10"] > 0  # read back from the platform's own report
