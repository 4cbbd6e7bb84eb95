"""User shards: several clients per platform (``federation.shards_per_platform``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from fedrec.data import PlatformData
from fedrec.data.shard import shard_users
from fedrec.federated import client as client_mod
from fedrec.federated.client import PlatformParts, cached_client, client_config
from fedrec.federated.local import run_local
from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.rounds import initial_adapter
from fedrec.federated.server import Coordinator
from fedrec.federated.shards import by_platform, client_names, combine_eval, combine_train, partition_client
from fedrec.federated.supported import check_supported
from tests.conftest import compose_test_config

_cfg = compose_test_config  # no data


def _data_cfg(data_root: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_test_config("data.download=false", *overrides, data_root=data_root, tmp_path=tmp_path)


# -- the data ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["video", "social"])
def test_shards_are_disjoint_and_cover_every_user_with_all_their_data(
    platforms: dict[str, PlatformData], name: str
) -> None:
    data = platforms[name]
    shards = [shard_users(data, 7, s) for s in range(7)]
    ids = [u for sh in shards for u in sh.user_ids]
    assert len(ids) == len(set(ids)) == data.num_users and set(ids) == set(data.user_ids)
    assert max(sh.num_users for sh in shards) - min(sh.num_users for sh in shards) <= 1
    where = {u: i for i, u in enumerate(data.user_ids)}
    for sh in shards:
        assert sh.name == name and sh.item_ids is data.item_ids and sh.num_items == data.num_items
        for j, u in enumerate(sh.user_ids):
            i = where[u]
            np.testing.assert_array_equal(sh.train[j], data.train[i])
            assert sh.valid[j] == data.valid[i] and sh.test[j] == data.test[i]
    if data.friends:  # friend links stay inside the shard, renumbered
        for sh in shards:
            assert sh.friends is not None
            for u, fs in sh.friends.items():
                assert all(0 <= f < sh.num_users for f in fs)
                raw = {data.user_ids[f] for f in data.friends.get(where[sh.user_ids[u]], [])}
                assert {sh.user_ids[f] for f in fs} == raw & set(sh.user_ids)


def test_one_shard_is_the_platform_and_too_many_shards_are_refused(platforms: dict[str, PlatformData]) -> None:
    video = platforms["video"]
    assert shard_users(video, 1, 0) is video
    with pytest.raises(ValueError, match="943 users cannot be split into 944"):
        shard_users(video, 944, 0)
    with pytest.raises(ValueError, match="shard 3 of 3"):
        shard_users(video, 3, 3)


# -- names, partitions, config ----------------------------------------------------------------
def test_partitions_map_to_platform_major_shards() -> None:
    cfg = _cfg("platform=[video,ecommerce]", "federation.shards_per_platform=3")
    assert client_names(cfg) == ["video/0", "video/1", "video/2", "ecommerce/0", "ecommerce/1", "ecommerce/2"]
    assert [partition_client(cfg, k) for k in (0, 2, 3, 5)] == [
        ("video", 0),
        ("video", 2),
        ("ecommerce", 0),
        ("ecommerce", 2),
    ]
    with pytest.raises(ValueError, match="partition 6 has no client"):
        partition_client(cfg, 6)
    assert client_names(_cfg("platform=[video,ecommerce]")) == ["video", "ecommerce"]


def test_bad_shard_settings_and_dp_with_shards_are_refused() -> None:
    for bad in ("federation.shards_per_platform=0", "federation.client_cache=0"):
        with pytest.raises(ValueError, match="shards_per_platform and federation.client_cache must be >= 1"):
            _cfg(bad)
    with pytest.raises(ValueError, match="needs federation.shards_per_platform=1"):
        check_supported(_cfg("privacy=dp", "mode=local", "federation.shards_per_platform=2"))


# -- combining the shards ---------------------------------------------------------------------
def test_combine_weights_evaluation_by_users_and_training_by_examples() -> None:
    ev = combine_eval(
        [
            {"loss": 2.0, "HR@10": 0.5, "users": 10, "eval-seconds": 1.0},
            {"loss": 5.0, "HR@10": 0.2, "users": 30, "eval-seconds": 3.0},
        ]
    )
    assert ev == {"loss": pytest.approx(4.25), "HR@10": pytest.approx(0.275), "users": 40, "eval-seconds": 3.0}
    tr = combine_train(
        [
            {"num_examples": 30, "train_loss": 1.0, "steps": 2.0, "bytes_up": 5},
            {"num_examples": 10, "train_loss": 3.0, "steps": 1.0, "bytes_up": 5},
        ]
    )
    assert tr == {"num_examples": 40, "train_loss": pytest.approx(1.5), "steps": 3.0, "bytes_up": 10}
    grouped = by_platform(
        {"video/0": {"users": 1, "loss": 1.0}, "video/1": None, "social/0": None}, ["video", "social"], True
    )
    assert grouped == {"video": {"users": 1, "loss": 1.0}, "social": None}


def test_platform_metrics_over_shards_equal_the_whole_platform(data_root: Path, tmp_path: Path) -> None:
    """User-weighted shard metrics are the metrics of the union of their users (same adapter, same head)."""
    cfg = _data_cfg(data_root, tmp_path, "platform=video")
    parts = PlatformParts(client_config(cfg, "video"), "video")
    whole = parts.task(0, 1).evaluate("valid")
    shards = [parts.task(s, 4) for s in range(4)]
    assert all(t.catalogue is parts.catalogue and t.model.head is parts.head for t in shards)
    combined = combine_eval([t.evaluate("valid") for t in shards])
    assert combined is not None and combined["users"] == whole["users"] == 943
    for k in ("loss", "HR@10", "NDCG@10", "MRR"):
        assert combined[k] == pytest.approx(whole[k], rel=1e-5, abs=1e-7), k


def test_coordinator_keys_clients_by_name_and_combines_platforms(tmp_path: Path) -> None:
    cfg = _cfg("platform=[video,social]", "federation.shards_per_platform=2", "eval.loss_weights=users")
    initial, backbone = initial_adapter(cfg)
    co = Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: None)
    assert co.clients == ["video/0", "video/1", "social/0", "social/1"] and co.min_clients == 4
    state = {k: v + 0.01 for k, v in initial.items()}
    updates = [
        ClientUpdate(f"n{i}", c.split("/")[0], state, 10 * (i + 1), {"train_loss": float(i)}, 8, client=c)
        for i, c in enumerate(co.clients)
    ]
    updates.append(ClientUpdate("n1", "video", None, 0, problem="broken", client="video/1"))  # a second reply
    co.aggregate_train(1, updates)
    ranks = {"HR@10": 0.2, "NDCG@10": 0.1, "MRR": 0.05}  # every metric an evaluation reply must carry
    evals = [
        ClientEvaluation(f"n{i}", c.split("/")[0], {"loss": float(i + 1), **ranks, "users": 10 * (i + 1)}, c)
        for i, c in enumerate(co.clients)
    ]
    entry = co.end_round(1, evals, bytes_down=100, seconds=1.0)
    assert set(entry["clients"]) == set(co.clients) and entry["clients"]["video/1"]["valid"]["loss"] == 2.0
    why = "a second reply for 'video/1' in this step"
    assert entry["rejected"] == [{"platform": "video", "client": "video/1", "node": "n1", "reason": why}]
    video, social = entry["platforms"]["video"], entry["platforms"]["social"]
    assert video["valid"] == {
        "loss": pytest.approx((1 * 10 + 2 * 20) / 30),
        **{k: pytest.approx(v) for k, v in ranks.items()},
        "users": 30,
    }
    assert social["train"]["num_examples"] == 70 and social["train"]["train_loss"] == pytest.approx(
        (2 * 30 + 3 * 40) / 70
    )
    assert entry["cross_platform_loss"] == pytest.approx((1 * 10 + 2 * 20 + 3 * 30 + 4 * 40) / 100)
    assert entry["bytes"]["total"] == 100 * 4 + 8 * 4
    partial = co.end_round(2, evals[:3], bytes_down=100, seconds=1.0)
    assert partial["cross_platform_loss"] is None  # a shard missing: no cross-platform loss
    doc = co.finish("simulate", evals)
    assert set(doc["clients"]) == set(co.clients) and doc["platforms"]["social"]["test"]["users"] == 70


# -- the clients ------------------------------------------------------------------------------
def _train_sequence(cfg: DictConfig, state_root: Path, order: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    """Train ``(shard, round)`` in ``order`` through the process cache; each round starts from the same adapter."""
    client_mod._CLIENTS.clear()
    client_mod._PARTS.clear()
    initial, _ = initial_adapter(cfg)
    text = OmegaConf.to_yaml(cfg)
    out = {}
    for shard, rnd in order:
        c = cached_client(text, "video", state_root / f"video/{shard}", threads=1, shard=shard)
        res = c.train(initial, rnd)
        out[(shard, rnd)] = (res.loss, {k: v.copy() for k, v in res.state.items()}, len(client_mod._CLIENTS))
    return out


def test_an_evicted_client_is_rebuilt_from_its_disk_state(data_root: Path, tmp_path: Path) -> None:
    order = [(0, 1), (1, 1), (0, 2), (1, 2)]
    base = ("platform=video", "federation.shards_per_platform=2", "federation.local_steps=3", "train.lr=0.05")
    kept = _train_sequence(_data_cfg(data_root, tmp_path, *base, "federation.client_cache=8"), tmp_path / "a", order)
    evicted = _train_sequence(_data_cfg(data_root, tmp_path, *base, "federation.client_cache=1"), tmp_path / "b", order)
    assert [v[2] for v in kept.values()] == [1, 2, 2, 2] and [v[2] for v in evicted.values()] == [1, 1, 1, 1]
    assert client_mod._PARTS and len(client_mod._PARTS) == 1  # one platform's parts for both shards
    for key in order:
        assert evicted[key][0] == pytest.approx(kept[key][0], abs=1e-6), key
        for name, v in kept[key][1].items():
            np.testing.assert_allclose(evicted[key][1][name], v, atol=1e-6)
    # round 2 starts from round 1's local state (the head), which the rebuilt client read from disk
    assert (tmp_path / "b" / "video/0" / "local-r00001.pt").is_file()
    assert kept[(0, 2)][0] != pytest.approx(kept[(0, 1)][0], abs=1e-6)


@pytest.mark.slow
def test_run_local_with_shards(data_root: Path, tmp_path: Path) -> None:
    cfg = _data_cfg(
        data_root,
        tmp_path,
        "platform=[video,ecommerce]",
        "federation.shards_per_platform=3",
        "federation.rounds=2",
        "federation.local_steps=2",
        "federation.eval_max_users=10",
    )
    doc = run_local(cfg, tmp_path / "run")
    names = ["video/0", "video/1", "video/2", "ecommerce/0", "ecommerce/1", "ecommerce/2"]
    for h in doc["federation"]["history"]:
        assert list(h["clients"]) == names and h["cross_platform_loss"] is not None
        assert h["platforms"]["video"]["valid"]["users"] == 30  # 10 per shard
        steps = sum(h["clients"][f"video/{s}"]["train"]["steps"] for s in range(3))
        assert h["platforms"]["video"]["train"]["steps"] == steps
    assert set(doc["clients"]) == set(names) and set(doc["platforms"]) == {"video", "ecommerce"}
    assert doc["platforms"]["video"]["test"]["users"] == 943 and doc["platforms"]["ecommerce"]["test"]["users"] == 4905
    assert sorted(p.name for p in (tmp_path / "run" / "client_state").glob("*/video/*")) == ["0", "1", "2"]
