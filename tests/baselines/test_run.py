"""The PROTOCOL.md count and text baselines, and run_baselines: exact maths on a tiny platform, the protocol table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import fedrec.model.backbone as backbone_module
from fedrec.baselines import (
    FrozenText,
    ItemKNN,
    MostPop,
    baseline_label,
    encode_items,
    item_vectors_cache_path,
    run_baselines,
)
from fedrec.baselines.run import ease_grid, options_from_config
from fedrec.config import SASRecConfig, register_configs, validate
from fedrec.data import PlatformData
from tests.conftest import REPO_ROOT

#: PROTOCOL.md, "Baselines under this protocol (test split)": (HR@10, NDCG@10).
PROTOCOL_TABLE = {
    "ecommerce": {"mostpop": (0.0012, 0.0004), "itemknn": (0.0559, 0.0331), "frozen_text": (0.0351, 0.0177)},
    "video": {"mostpop": (0.0498, 0.0255), "itemknn": (0.0594, 0.0280), "frozen_text": (0.0244, 0.0103)},
    "social": {"mostpop": (0.0818, 0.0442), "itemknn": (0.2029, 0.1229), "frozen_text": (0.0515, 0.0278)},
}
USERS = {"ecommerce": 4905, "video": 943, "social": 1883}
TOL = 1e-3


def _assert_protocol(metrics: dict[str, float], platform: str, model: str) -> None:
    hr, ndcg = PROTOCOL_TABLE[platform][model]
    assert metrics["users"] == USERS[platform]
    assert metrics["HR@10"] == pytest.approx(hr, abs=TOL), f"{platform}/{model} HR@10"
    assert metrics["NDCG@10"] == pytest.approx(ndcg, abs=TOL), f"{platform}/{model} NDCG@10"


def _tiny() -> PlatformData:
    """5 users, 7 items; item 6 has no train interaction (it is only some users' valid/test item)."""
    return PlatformData(
        name="tiny",
        item_ids=[str(i) for i in range(7)],
        item_texts=[f"item {i}" for i in range(7)],
        user_ids=[f"u{u}" for u in range(5)],
        train=[np.array([0, 1, 2]), np.array([1, 2]), np.array([2, 3, 4]), np.array([0, 4]), np.array([5])],
        valid=np.array([3, 6, 0, 1, 2]),
        test=np.array([6, 0, 5, 2, 6]),
    )


def _itemknn_dense(data: PlatformData, split: str) -> np.ndarray:
    """Brute force: dense X, cosine by explicit loops, scores by summing rows."""
    x = np.zeros((data.num_users, data.num_items))
    for u, items in enumerate(data.train):
        x[u, items] = 1.0
    n = x.sum(axis=0)
    s = np.zeros((data.num_items, data.num_items))
    for i in range(data.num_items):
        for j in range(data.num_items):
            if i != j and n[i] > 0 and n[j] > 0:
                s[i, j] = (x[:, i] * x[:, j]).sum() / (math.sqrt(n[i]) * math.sqrt(n[j]))
    return np.stack([sum((s[i] for i in data.history(u, split)), np.zeros(data.num_items)) for u in range(5)])


def test_mostpop_tiny() -> None:
    scores = MostPop(_tiny())([0, 3], "test")
    assert scores.tolist() == [[2, 2, 3, 1, 2, 1, 0]] * 2


@pytest.mark.parametrize("split", ["valid", "test"])
def test_itemknn_tiny_matches_brute_force(split: str) -> None:
    data = _tiny()
    got = ItemKNN(data)(list(range(5)), split).numpy()
    np.testing.assert_allclose(got, _itemknn_dense(data, split), rtol=1e-6, atol=1e-7)


def test_itemknn_tiny_by_hand() -> None:
    # n = [2, 2, 3, 1, 2, 1, 0]; items 1 and 2 co-occur for users 0 and 1: S[1, 2] = 2 / sqrt(2 * 3).
    knn = ItemKNN(_tiny())
    s = knn.similarity.toarray()
    assert s[1, 2] == pytest.approx(2 / math.sqrt(6))
    assert s[2, 1] == pytest.approx(2 / math.sqrt(6))
    assert np.all(np.diag(s) == 0)
    assert np.all(s[6] == 0) and np.all(s[:, 6] == 0)  # no train interaction -> similarity 0
    assert np.all(s[5] == 0)  # item 5's only user has no other item
    # user 1 on test: history [1, 2, 6 (valid)]; score of item 0 = S[1, 0] + S[2, 0] + 0.
    want = 1 / math.sqrt(4) + 1 / math.sqrt(6)
    assert knn([1], "test")[0, 0].item() == pytest.approx(want, rel=1e-6)


def test_frozen_text_uses_last_20_history_items() -> None:
    rng = np.random.default_rng(0)
    n_items = 30
    history = rng.permutation(n_items)[:25]
    data = PlatformData(
        name="long",
        item_ids=[str(i) for i in range(n_items)],
        item_texts=[str(i) for i in range(n_items)],
        user_ids=["u"],
        train=[history[:-1]],
        valid=np.array([history[-1]]),
        test=np.array([rng.permutation(np.setdiff1d(np.arange(n_items), history))[0]]),
    )
    vectors = torch.as_tensor(rng.normal(size=(n_items, 4)), dtype=torch.float32)
    scorer = FrozenText(data, item_vectors=vectors)
    for split, seen in (("valid", history[:-1]), ("test", history)):
        user = vectors[torch.as_tensor(seen[-20:])].mean(dim=0)
        torch.testing.assert_close(scorer([0], split)[0], vectors @ user)


def test_frozen_text_rejects_wrong_vector_count() -> None:
    with pytest.raises(ValueError, match="item vectors"):
        FrozenText(_tiny(), item_vectors=torch.zeros(3, 4))


def test_run_baselines_tiny_shape_and_precomputed_vectors() -> None:
    data = _tiny()
    vectors = torch.eye(7)
    sasrec = SASRecConfig(dim=8, max_len=4, max_epochs=2, eval_every=1)
    got = run_baselines(
        {"tiny": data}, item_vectors={"tiny": vectors}, progress=False, ease_lambdas={"tiny": [1.0, 5.0]}, sasrec=sasrec
    )
    assert set(got) == {"tiny"}
    assert set(got["tiny"]) == {"mostpop", "itemknn", "frozen_text", "ease", "sasrec"}
    assert got["tiny"]["ease"]["fit"]["lambda"] in (1.0, 5.0)
    assert set(got["tiny"]["ease"]["fit"]["valid_NDCG@10"]) == {"1", "5"}
    assert got["tiny"]["sasrec"]["fit"]["epochs"] == 2 and len(got["tiny"]["sasrec"]["fit"]["curve"]) == 2
    assert baseline_label("ease", got["tiny"]["ease"]).startswith("ease (λ=")
    assert baseline_label("sasrec", got["tiny"]["sasrec"]).startswith("sasrec (epoch ")
    assert baseline_label("itemknn", got["tiny"]["itemknn"]) == "itemknn"
    for model, per_split in got["tiny"].items():
        assert set(per_split) == ({"valid", "test", "fit"} if model in ("ease", "sasrec") else {"valid", "test"})
        assert set(per_split["test"]) == {"HR@10", "NDCG@10", "MRR", "coverage@10", "users"}
        assert per_split["test"]["users"] == 5
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baselines({"tiny": data}, models=["bpr"], progress=False)


@pytest.fixture(scope="module")
def count_baselines(platforms: dict[str, PlatformData]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    return run_baselines(platforms, models=("mostpop", "itemknn"), splits=("test",), progress=False)


@pytest.mark.parametrize("model", ["mostpop", "itemknn"])
@pytest.mark.parametrize("platform", ["ecommerce", "video", "social"])
def test_count_baselines_match_protocol(count_baselines: dict, platform: str, model: str) -> None:
    _assert_protocol(count_baselines[platform][model]["test"], platform, model)


def test_encode_items_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["Toy Story (1995) | genres: Animation", "GoldenEye (1995) | genres: Action"]
    first = encode_items(texts, "minilm", cache_dir=tmp_path)
    assert first.shape == (2, 384) and first.dtype == torch.float32
    torch.testing.assert_close(first.norm(dim=1), torch.ones(2))
    path = item_vectors_cache_path(tmp_path, "minilm", texts, 32)
    assert path is not None and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert item_vectors_cache_path(tmp_path, "minilm", texts, 16) != path
    assert item_vectors_cache_path(tmp_path, "minilm", texts[::-1], 32) != path
    assert item_vectors_cache_path(None, "minilm", texts, 32) is None
    assert item_vectors_cache_path(tmp_path, "tiny", texts, 32) is None  # random weights: never cached

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not load the backbone")

    monkeypatch.setattr(backbone_module, "load_backbone", no_loading)
    torch.testing.assert_close(encode_items(texts, "minilm", cache_dir=tmp_path), first)


@pytest.mark.slow
def test_frozen_text_video_matches_protocol(
    platforms: dict[str, PlatformData], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Encodes the 1,682 video items with the real all-MiniLM-L6-v2 (fp32): ~25 s on 2 cores.
    # The other two platforms (2,420 and 17,632 items) take ~100 s more and are not encoded here.
    video = {"video": platforms["video"]}
    got = run_baselines(video, models=("frozen_text",), splits=("valid", "test"), cache_dir=tmp_path, progress=False)
    _assert_protocol(got["video"]["frozen_text"]["test"], "video", "frozen_text")
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not load the backbone")

    monkeypatch.setattr(backbone_module, "load_backbone", no_loading)
    again = run_baselines(video, models=("frozen_text",), splits=("valid", "test"), cache_dir=tmp_path, progress=False)
    assert again == got


def test_baseline_config_group_and_its_errors() -> None:
    register_configs()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["seed=4", "baseline.sasrec.max_epochs=7"])
        validate(cfg)
        opts = options_from_config(cfg)
        assert opts["seed"] == 4 and opts["sasrec"] == SASRecConfig(max_epochs=7)
        assert ease_grid(opts["ease_lambdas"], "social") == [300.0, 1000.0]  # PROTOCOL.md
        assert ease_grid(opts["ease_lambdas"], "video") == [10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0]
        assert ease_grid([1, 2], "video") == [1.0, 2.0]
        for override, message in (
            ("baseline.ease.lambdas=[0,10]", "baseline.ease.lambdas must be a non-empty list of positive"),
            ("+baseline.ease.platform_lambdas.video=[]", "platform_lambdas.video must be a non-empty"),
            ("baseline.sasrec.heads=3", "not divisible by baseline.sasrec.heads=3"),
            ("baseline.sasrec.patience=0", "baseline.sasrec.patience must be >= 1"),
            ("baseline.sasrec.dropout=1.0", "dropout must be in"),
            ("baselines=[bpr]", "unknown models ['bpr']"),
        ):
            with pytest.raises(ValueError, match=re.escape(message)):
                validate(compose("config", overrides=[override]))
