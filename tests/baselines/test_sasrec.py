"""SASRec (ID only): it learns a planted sequential pattern, keeps its best valid epoch, refuses NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.baselines import MostPop, fit_sasrec
from fedrec.config import SASRecConfig
from fedrec.data import PlatformData
from fedrec.evaluate import evaluate_rankings
from tests.synthetic import platform_from_histories

ITEMS = 30


def _successor_platform(users: int = 192, seed: int = 0) -> PlatformData:
    """Every user walks a fixed random cycle over the catalogue from a random start: item t + 1 = next[item t].

    The next item depends only on the current one, and every item is equally popular, so
    MostPop is near chance (about 10 / 30 hits among unseen items at best) and a sequence
    model can be near perfect.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(ITEMS)
    successor = np.empty(ITEMS, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    walks = []
    for _ in range(users):
        walk = [int(rng.integers(ITEMS))]
        for _ in range(int(rng.integers(4, 9)) + 1):
            walk.append(int(successor[walk[-1]]))
        walks.append(walk)
    return platform_from_histories("cycle", ITEMS, walks)


SMALL = SASRecConfig(dim=32, max_len=10, layers=1, heads=2, dropout=0.1, lr=5e-3, max_epochs=60, eval_every=5)


def test_sasrec_learns_a_planted_sequence() -> None:
    data = _successor_platform()
    scorer, info = fit_sasrec(data, SMALL, seed=0)
    test = evaluate_rankings(data, "test", scorer)
    pop = evaluate_rankings(data, "test", MostPop(data))
    assert test["NDCG@10"] > 0.8 > pop["NDCG@10"] + 0.4, (test, pop)
    # the model kept is the best valid epoch's
    curve = dict((int(e), v) for e, v in info["curve"])
    assert info["best_epoch"] == max(curve, key=lambda e: curve[e])
    assert evaluate_rankings(data, "valid", scorer)["NDCG@10"] == pytest.approx(info["best_valid_NDCG@10"], abs=1e-9)
    assert info["stopped"] in ("patience", "max_epochs") and info["epochs"] <= SMALL.max_epochs
    assert info["cpu_seconds"] > 0


def test_sasrec_stops_on_patience_and_reports_the_cap() -> None:
    data = _successor_platform(users=64, seed=1)
    # lr 1e-12: the weights barely move, so no evaluation after the first improves on it
    frozen = SASRecConfig(dim=16, max_len=10, layers=1, lr=1e-12, dropout=0.0, max_epochs=50, eval_every=2, patience=2)
    _, info = fit_sasrec(data, frozen, seed=0)
    assert info["stopped"] == "patience" and info["epochs"] == 6 and info["best_epoch"] == 2
    assert not info["still_improving"]
    capped = SASRecConfig(dim=16, max_len=10, layers=1, lr=5e-3, max_epochs=3, eval_every=5)
    _, info = fit_sasrec(data, capped, seed=0)
    assert info["stopped"] == "max_epochs" and [e for e, _ in info["curve"]] == [3]  # the last epoch is scored
    assert info["still_improving"]


def test_sasrec_short_histories_are_finite_and_nan_weights_raise() -> None:
    data = _successor_platform(users=64, seed=2)
    data.train[0] = data.train[0][:1]  # one item: a row that is almost all padding
    scorer, _ = fit_sasrec(data, SASRecConfig(dim=16, max_len=10, layers=1, max_epochs=1), seed=0)
    scores = scorer([0, 1], "valid")
    assert scores.shape == (2, ITEMS) and bool(torch.isfinite(scores).all())
    with torch.no_grad():
        scorer.model.items.weight[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite scores"):
        evaluate_rankings(data, "valid", scorer)


def test_sasrec_refuses_a_platform_without_sequences() -> None:
    data = _successor_platform(users=8, seed=3)
    for u in range(data.num_users):
        data.train[u] = data.train[u][:1]
    with pytest.raises(ValueError, match="at least 2 train items"):
        fit_sasrec(data, SASRecConfig(max_epochs=1), seed=0)


def test_trimming_a_batch_keeps_every_real_position() -> None:
    from fedrec.baselines.sasrec import SASRecModel, _trim
    from fedrec.seqrec.rows import sequential_rows

    data = _successor_platform(users=16, seed=4)
    rows = sequential_rows(data.train, 12)
    ids, mask, targets = rows.ids, rows.mask, rows.targets[..., 0]
    short = [u for u in range(16) if len(data.train[u]) <= 5]
    t_ids, t_mask, t_targets = _trim(ids[short], mask[short], targets[short])
    assert t_ids.shape[1] == max(len(data.train[u]) for u in short) - 1 < ids.shape[1]
    model = SASRecModel(ITEMS, SASRecConfig(dim=16, max_len=12, layers=2, dropout=0.0)).eval()
    with torch.no_grad():
        full = model.states(ids[short], mask[short])[mask[short]]
        trimmed = model.states(t_ids, t_mask)[t_mask]
        torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(t_targets[t_mask], targets[short][mask[short]])
