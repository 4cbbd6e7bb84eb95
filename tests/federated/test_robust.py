"""Poisoning resistance: the update norm bound (reject / clip) and the weight share cap."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedrec.config import compose_config
from fedrec.federated.aggregate import fedavg
from fedrec.federated.messages import ClientUpdate
from fedrec.federated.robust import bound_update, capped_shares, update_norm
from fedrec.federated.rounds import initial_adapter
from fedrec.federated.server import Coordinator
from tests.conftest import REPO_ROOT

A = "layer.0.query.lora_A.default.weight"
B = "layer.0.query.lora_B.default.weight"


def _global(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {A: rng.normal(size=(4, 12)).astype(np.float32), B: np.zeros((10, 4), dtype=np.float32)}


def _honest(rng: np.random.Generator, ref: dict[str, np.ndarray], step: float = 0.01) -> dict[str, np.ndarray]:
    """A client's adapter: the global one plus a small training step."""
    return {k: (v + step * rng.normal(size=v.shape)).astype(np.float32) for k, v in ref.items()}


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return update_norm(a, b)


def test_update_norm_is_the_l2_norm_of_the_change_over_all_tensors() -> None:
    ref = {A: np.zeros((2, 2), np.float32), B: np.ones((1, 3), np.float32)}
    state = {A: np.array([[3.0, 0.0], [0.0, 0.0]], np.float32), B: np.array([[1.0, 5.0, 1.0]], np.float32)}
    assert update_norm(state, ref) == pytest.approx(5.0)  # sqrt(3^2 + 4^2)


@pytest.mark.parametrize("action", ["reject", "clip"])
def test_a_1e30_scaled_update_cannot_take_over_fedavg(action: str) -> None:
    rng = np.random.default_rng(0)
    ref = _global(rng)
    honest = [_honest(rng, ref) for _ in range(2)]
    attack = {k: (1e30 * v).astype(np.float32) for k, v in _honest(rng, ref).items()}
    assert np.isfinite(attack[A]).all()  # finite: check_update lets it through
    bound = 1.0
    assert all(update_norm(h, ref) < bound for h in honest)
    kept = [bound_update(s, ref, bound, action) for s in [*honest, attack]]
    assert [note is None for _, note in kept] == [True, True, False]
    assert "update norm" in str(kept[2][1]) and "exceeds federation.update_norm_bound=1" in str(kept[2][1])
    honest_only = fedavg(honest, [100, 100])
    unbounded = fedavg([*honest, attack], [100, 100, 100])
    assert _distance(unbounded, honest_only) > 1e28  # what the bound prevents
    if action == "reject":
        assert kept[2][0] is None
        result = fedavg([s for s, _ in kept if s is not None], [100, 100])
        assert _distance(result, honest_only) == 0.0
    else:
        clipped = kept[2][0]
        assert clipped is not None and "clipped" in str(kept[2][1])
        assert update_norm(clipped, ref) == pytest.approx(bound, rel=1e-5)
        # the direction is kept
        d_attack = np.concatenate([(attack[k].astype(np.float64) - ref[k]).ravel() for k in ref])
        d_clip = np.concatenate([(clipped[k].astype(np.float64) - ref[k]).ravel() for k in ref])
        assert float(d_attack @ d_clip / np.linalg.norm(d_attack) / np.linalg.norm(d_clip)) == pytest.approx(1.0)
        result = fedavg([s for s, _ in kept if s is not None], [100, 100, 100])
        # result - honest_only = (clipped - mean(honest)) / 3: at most (bound + honest step) / 3
        honest_step = update_norm(honest_only, ref)
        assert _distance(result, honest_only) <= (bound + honest_step) / 3 + 1e-5


def test_bound_off_or_within_keeps_the_update_and_unknown_action_is_refused() -> None:
    rng = np.random.default_rng(1)
    ref = _global(rng)
    big = {k: v + 10.0 for k, v in ref.items()}
    for bound in (0.0, 1e6):
        state, note = bound_update(big, ref, bound, "reject")
        assert note is None and state is not None
        np.testing.assert_array_equal(state[A], big[A])
    with pytest.raises(ValueError, match="update_norm_action must be one of"):
        bound_update(big, ref, 1.0, "drop")


def test_a_client_claiming_1e12_examples_gets_at_most_the_cap() -> None:
    shares = capped_shares([1e12, 500, 1500, 1000], 0.4)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == pytest.approx(0.4)
    # the excess is shared by the others in proportion to their weights
    np.testing.assert_allclose(shares[1:], 0.6 * np.array([500, 1500, 1000]) / 3000)
    rng = np.random.default_rng(2)
    ref = _global(rng)
    honest = [_honest(rng, ref) for _ in range(3)]
    liar = _honest(rng, ref, step=0.5)
    uncapped = fedavg([liar, *honest], [1e12, 500, 1500, 1000])
    capped = fedavg([liar, *honest], list(shares))
    assert _distance(uncapped, liar) < 1e-6  # without the cap the liar's adapter is the average
    assert _distance(capped, liar) > 0.5 * _distance(liar, fedavg(honest, [500, 1500, 1000]))


def test_water_filling_caps_every_share_and_leaves_small_ones_alone() -> None:
    shares = capped_shares([100, 90, 5, 5], 0.3)  # two clients over the cap
    np.testing.assert_allclose(shares, [0.3, 0.3, 0.2, 0.2])
    np.testing.assert_allclose(capped_shares([1, 3], 1.0), [0.25, 0.75])  # 1 = off
    np.testing.assert_allclose(capped_shares([1e12, 1], 0.3), [0.5, 0.5])  # too few clients: equal shares
    for bad in ([], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="finite and > 0"):
            capped_shares(bad, 0.5)
    with pytest.raises(ValueError, match="max_weight_share must be in"):
        capped_shares([1.0], 0.0)


# -- wired into the coordinator ---------------------------------------------------------------------------------
def _coordinator(tmp_path: Path, *overrides: str) -> tuple[Coordinator, list[tuple[int, str]]]:
    cfg = compose_config(["model=tiny", "platform=[video,ecommerce,social]", *overrides], config_dir=REPO_ROOT / "conf")
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    return Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m))), logs


@pytest.mark.parametrize("action", ["reject", "clip"])
def test_coordinator_bounds_a_1e30_update_and_logs_why(tmp_path: Path, action: str) -> None:
    co, logs = _coordinator(tmp_path, "federation.update_norm_bound=1.0", f"federation.update_norm_action={action}")
    rng = np.random.default_rng(3)
    ref = {k: v.copy() for k, v in co.global_state.items()}
    video, social = _honest(rng, ref), _honest(rng, ref)
    attack = {k: (1e30 * v).astype(v.dtype) for k, v in _honest(rng, ref).items()}
    updates = [
        ClientUpdate("1", "video", video, 100),
        ClientUpdate("2", "social", social, 100),
        ClientUpdate("3", "ecommerce", attack, 100),
    ]
    new = co.aggregate_train(1, updates)
    assert new is not None
    honest_only = fedavg([social, video], [100, 100])
    warnings = [m for lvl, m in logs if lvl == logging.WARNING]
    assert len(warnings) == 1 and "exceeds federation.update_norm_bound=1" in warnings[0]
    if action == "reject":
        assert [r["node"] for r in co.pending["rejected"]] == ["3"] and co.pending["clipped"] == []
        assert "round 1: rejected the update of ecommerce (node 3): update norm" in warnings[0]
        assert _distance(new, honest_only) < 1e-6
    else:
        assert co.pending["rejected"] == [] and [r["node"] for r in co.pending["clipped"]] == ["3"]
        assert "round 1: clipped the update of ecommerce (node 3)" in warnings[0]
        assert _distance(new, honest_only) <= (1.0 + update_norm(honest_only, ref)) / 3 + 1e-5
    entry = co.end_round(1, [], bytes_down=0, seconds=0.0)
    assert len(entry["clipped"]) == (action == "clip") and len(entry["rejected"]) == (action == "reject")


def test_coordinator_caps_a_client_claiming_1e12_examples(tmp_path: Path) -> None:
    co, logs = _coordinator(tmp_path, "federation.max_weight_share=0.5")
    rng = np.random.default_rng(4)
    ref = {k: v.copy() for k, v in co.global_state.items()}
    liar, video, social = _honest(rng, ref, step=1.0), _honest(rng, ref), _honest(rng, ref)
    updates = [
        ClientUpdate("1", "video", video, 100),
        ClientUpdate("2", "social", social, 300),
        ClientUpdate("3", "ecommerce", liar, 10**12),
    ]
    new = co.aggregate_train(1, updates)
    assert new is not None
    # sorted by name: ecommerce (capped at 0.5), social 0.375, video 0.125
    expected = fedavg([liar, social, video], [0.5, 0.375, 0.125])
    assert _distance(new, expected) < 1e-5
    assert _distance(new, liar) > 0.4 * _distance(liar, fedavg([social, video], [300, 100]))
    warnings = [m for lvl, m in logs if lvl == logging.WARNING]
    assert len(warnings) == 1 and "ecommerce (node 3): aggregation weight share 1 capped to 0.5" in warnings[0]
    # each update's change from the global adapter goes into the round's record (to choose a bound from)
    train = co.pending["train"]
    assert train["ecommerce"]["update_norm"] == pytest.approx(update_norm(liar, ref))
    assert train["video"]["update_norm"] == pytest.approx(update_norm(video, ref))
    assert train["video"]["update_norm"] < train["ecommerce"]["update_norm"]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("federation.update_norm_action=drop", "update_norm_action"),
        ("federation.update_norm_bound=-1", "update_norm_bound must be >= 0"),
        ("federation.max_weight_share=0", "max_weight_share in \\(0, 1\\]"),
        ("federation.max_weight_share=1.5", "max_weight_share in \\(0, 1\\]"),
    ],
)
def test_bad_robustness_settings_are_refused(override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compose_config(["model=tiny", override], config_dir=REPO_ROOT / "conf")
