"""EASE: the closed form against a dense brute-force solve, λ chosen on valid, the protocol's video figure."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec.baselines import EASE, fit_ease
from fedrec.data import PlatformData
from fedrec.evaluate import evaluate_rankings
from tests.synthetic import platform_from_histories


def _random_platform(users: int, items: int, seed: int, per_user: int = 4) -> PlatformData:
    """Random histories of ``per_user`` train items; valid and test items outside each user's train items."""
    rng = np.random.default_rng(seed)
    return platform_from_histories("rand", items, [list(rng.permutation(items)[: per_user + 2]) for _ in range(users)])


def _brute_force_b(data: PlatformData, lam: float) -> np.ndarray:
    """B = I - P / diag(P) with P = inv(XᵀX + λI) by a dense inverse, diagonal zeroed."""
    x = np.zeros((data.num_users, data.num_items))
    for u, items in enumerate(data.train):
        x[u, items] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(data.num_items))
    b = np.eye(data.num_items) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def _history(data: PlatformData, split: str) -> np.ndarray:
    h = np.zeros((data.num_users, data.num_items))
    for u in range(data.num_users):
        h[u, data.history(u, split)] = 1.0
    return h


# more users than items (the item Gram is factored) and fewer (the user Gram is, then mapped back)
@pytest.mark.parametrize(("users", "items"), [(30, 9), (5, 12)])
@pytest.mark.parametrize("lam", [0.5, 20.0])
def test_ease_matches_dense_solve(users: int, items: int, lam: float) -> None:
    data = _random_platform(users, items, seed=users + items)
    model = EASE(data, lam)
    want = _brute_force_b(data, lam)
    b = model.weights().numpy()
    np.testing.assert_allclose(b, want, rtol=1e-9, atol=1e-10)
    assert np.all(np.diag(b) == 0.0)
    assert np.abs(b).max() > 1e-3  # not trivially zero
    for split in ("valid", "test"):
        got = model(list(range(users)), split).numpy()
        np.testing.assert_allclose(got, _history(data, split) @ want, rtol=1e-9, atol=1e-10)


def test_ease_rejects_bad_lambda() -> None:
    data = _random_platform(6, 8, seed=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="λ must be a positive"):
            EASE(data, bad)
    with pytest.raises(ValueError, match="at least one λ"):
        fit_ease(data, [])


def test_fit_ease_picks_the_best_valid_lambda() -> None:
    data = _random_platform(80, 25, seed=3, per_user=6)
    grid = [0.05, 1.0, 10.0, 100.0, 3000.0]
    brute = {}
    for lam in grid:
        b = torch.from_numpy(_brute_force_b(data, lam))

        def score(users: list[int], split: str, b: torch.Tensor = b) -> torch.Tensor:
            return torch.from_numpy(_history(data, split)[users]) @ b

        brute[lam] = evaluate_rankings(data, "valid", score)["NDCG@10"]
    assert len({round(v, 9) for v in brute.values()}) > 1  # the grid matters on this data
    best = max(grid, key=lambda lam: brute[lam])  # max returns the first of equal values
    model, info = fit_ease(data, grid)
    assert info["lambda"] == best and model.lam == best
    assert info["valid_NDCG@10"] == pytest.approx({f"{lam:g}": v for lam, v in brute.items()}, abs=1e-12)
    assert evaluate_rankings(data, "valid", model)["NDCG@10"] == pytest.approx(brute[best], abs=1e-12)


def test_ease_video_matches_protocol(platforms: dict[str, PlatformData]) -> None:
    """PROTOCOL.md: video, λ = 200 chosen from {10, 50, 200, 500, 1000, 3000}; test HR@10 0.0859, NDCG@10 0.0391."""
    video = platforms["video"]
    model, info = fit_ease(video, [10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0])
    assert info["lambda"] == 200.0
    test = evaluate_rankings(video, "test", model)
    assert test["users"] == 943
    assert test["HR@10"] == pytest.approx(0.0859, abs=1e-3)
    assert test["NDCG@10"] == pytest.approx(0.0391, abs=1e-3)


def test_a_cached_fit_is_the_fit_and_a_corrupt_cache_is_refit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _random_platform(40, 15, seed=5, per_user=5)
    grid = [1.0, 10.0, 100.0]
    model, info = fit_ease(data, grid, cache_dir=tmp_path)
    files = list(tmp_path.glob("ease-v1-*.pt"))
    assert len(files) == 1 and "cached" not in info
    again, info2 = fit_ease(data, grid, cache_dir=tmp_path)
    assert info2["cached"] is True and info2["lambda"] == info["lambda"]
    users = list(range(data.num_users))
    assert torch.equal(again(users, "test"), model(users, "test"))
    # another grid or other data is another fit, not this one
    assert "cached" not in fit_ease(data, [2.0], cache_dir=tmp_path)[1]
    other = _random_platform(40, 15, seed=6, per_user=5)
    assert "cached" not in fit_ease(other, grid, cache_dir=tmp_path)[1]
    # a truncated file is refit (logged) and rewritten, the result unchanged
    files[0].write_bytes(files[0].read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="fedrec.baselines"):
        refit, info3 = fit_ease(data, grid, cache_dir=tmp_path)
    assert "unreadable" in caplog.text and "cached" not in info3
    assert torch.equal(refit(users, "test"), model(users, "test"))
    assert fit_ease(data, grid, cache_dir=tmp_path)[1]["cached"] is True
