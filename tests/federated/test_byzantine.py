"""Robust aggregation (federation.robust): equal to Flower's FedMedian, FedTrimmedAvg and Krum on the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, Krum

from fedrec.config import compose_config
from fedrec.federated.aggregate import fedavg
from fedrec.federated.byzantine import krum, krum_scores, median, robust_aggregate, trimmed_mean
from fedrec.federated.messages import ClientUpdate
from fedrec.federated.rounds import initial_adapter
from fedrec.federated.server import Coordinator
from tests.conftest import REPO_ROOT
from tests.federated.test_server import _meta

SHAPES = {"m.lora_A.default.weight": (4, 12), "m.lora_B.default.weight": (10, 4), "other.weight": (3,)}


def _states(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    return [{k: (v + 0.1 * rng.normal(size=v.shape)).astype(np.float32) for k, v in base.items()} for _ in range(n)]


def _replies(states: list[dict[str, np.ndarray]]) -> list[Message]:
    """The states as training replies the way Flower's strategies receive them (num-examples differ)."""
    return [
        Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v.copy()) for k, v in s.items()}),
                    "metrics": MetricRecord({"num-examples": 10 * (i + 1)}),
                }
            ),
            metadata=_meta(i + 1, "train"),
        )
        for i, s in enumerate(states)
    ]


def _flower(strategy: FedMedian | FedTrimmedAvg | Krum, states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays, _ = strategy.aggregate_train(1, _replies(states))
    assert arrays is not None
    return {k: v.numpy() for k, v in arrays.items()}


def _assert_equal(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == np.float32 and ours[k].shape == theirs[k].shape
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_median_equals_flowers_fedmedian(n: int) -> None:
    states = _states(n, seed=n)
    _assert_equal(median(states), _flower(FedMedian(), states))


@pytest.mark.parametrize(("n", "beta"), [(3, 0.2), (5, 0.2), (5, 0.4), (7, 0.3), (10, 0.1), (4, 0.0)])
def test_trimmed_mean_equals_flowers_fedtrimmedavg(n: int, beta: float) -> None:
    states = _states(n, seed=10 + n)
    _assert_equal(trimmed_mean(states, beta), _flower(FedTrimmedAvg(beta=beta), states))


@pytest.mark.parametrize(("n", "f"), [(3, 0), (5, 1), (7, 2), (6, 0)])
def test_krum_picks_what_flowers_krum_picks(n: int, f: int) -> None:
    states = _states(n, seed=20 + n)
    states[1] = {k: v + 50.0 for k, v in states[1].items()}  # an outlier Krum must never pick
    picked, index = krum(states, f)
    assert index != 1
    _assert_equal(picked, _flower(Krum(num_malicious_nodes=f), states))
    assert int(np.argmin(krum_scores(states, f))) == index


def test_a_minority_of_1e30_updates_cannot_move_median_trimmed_mean_or_krum() -> None:
    honest = _states(4, seed=3)
    attack = {k: (1e30 * v).astype(np.float32) for k, v in honest[0].items()}
    states = [*honest, attack]
    ref = fedavg(honest, [1, 1, 1, 1])
    for rule in ("median", "trimmed_mean", "krum"):
        out, note = robust_aggregate(rule, states, trim_fraction=0.2, byzantine=1)
        assert note
        for k in out:  # within the honest updates' spread (0.1 noise), nowhere near 1e30
            assert np.abs(out[k] - ref[k]).max() < 1.0, rule
    with pytest.raises(ValueError, match="federation.robust must be one of"):
        robust_aggregate("mean", states)


def test_svd_with_a_robust_rule_and_bad_parameters_are_refused() -> None:
    def compose(*o: str) -> None:
        compose_config(["model=tiny", *o], config_dir=REPO_ROOT / "conf")

    with pytest.raises(ValueError, match="federation.robust=median is not supported with federation.aggregation=svd"):
        compose("federation.aggregation=svd", "federation.robust=median")
    with pytest.raises(ValueError, match="robust_trim_fraction must be in"):
        compose("federation.robust=trimmed_mean", "federation.robust_trim_fraction=0.5")
    with pytest.raises(ValueError, match="robust_byzantine must be >= 0"):
        compose("federation.robust=krum", "federation.robust_byzantine=-1")
    with pytest.raises(ValueError, match="federation.robust='mean' is not one of"):
        compose("federation.robust=mean")


def test_the_coordinator_aggregates_with_the_robust_rule_ignoring_example_counts(tmp_path: Path) -> None:
    cfg = compose_config(
        ["model=tiny", "platform=[video,ecommerce,social]", "federation.robust=median"], config_dir=REPO_ROOT / "conf"
    )
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    co = Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m)))
    rng = np.random.default_rng(0)
    ups = {p: {k: v + rng.normal(size=v.shape).astype(v.dtype) for k, v in initial.items()} for p in co.clients}
    liar = {k: (1e30 * v).astype(v.dtype) for k, v in ups["social"].items()}
    new = co.aggregate_train(
        1,
        [
            ClientUpdate("1", "video", ups["video"], 10),
            ClientUpdate("2", "ecommerce", ups["ecommerce"], 10),
            ClientUpdate("3", "social", liar, 10**12),
        ],
    )
    assert new is not None
    expected = median([ups["video"], ups["ecommerce"], liar])  # of 3: between the two honest values
    for k in new:
        np.testing.assert_array_equal(new[k], expected[k])
        assert np.all(np.abs(new[k]) <= np.maximum(np.abs(ups["video"][k]), np.abs(ups["ecommerce"][k])) + 1e-6)
    assert any("coordinate-wise median of 3 updates (ecommerce, social, video)" in m for _, m in logs)
