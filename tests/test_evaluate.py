"""Full-ranking metric maths on a ranking small enough to do by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from fedrec.data import PlatformData
from fedrec.evaluate import (
    RankingAccumulator,
    evaluate_ranking_variants,
    evaluate_rankings,
    metrics_from_ranks,
    target_ranks,
)

N_ITEMS = 13


def _platform() -> PlatformData:
    """3 users, 13 items. u0: train [0], valid 1, test 2; u1: train [3], valid 4, test 0;
    u2: train [1, 2], valid 3, test 12."""
    return PlatformData(
        name="hand",
        item_ids=[str(i) for i in range(N_ITEMS)],
        item_texts=[f"item {i}" for i in range(N_ITEMS)],
        user_ids=["u0", "u1", "u2"],
        train=[np.array([0]), np.array([3]), np.array([1, 2])],
        valid=np.array([1, 4, 3]),
        test=np.array([2, 0, 12]),
    )


def _row(values: dict[int, float], default: float = 0.0) -> list[float]:
    return [values.get(i, default) for i in range(N_ITEMS)]


# Scores per (split, user), with the rank each gives worked out by hand.
SCORES = {
    "test": {
        # target 2 (score 5); excluded: train 0 and valid 1, both scored higher (9, 8) and not counted;
        # item 3 ties the target (not counted); item 4 (7) is higher -> rank 2.
        0: _row({0: 9, 1: 8, 2: 5, 3: 5, 4: 7}),
        # target 0 (score 1); excluded 3, 4 (10, 10); items 1 (2) and 2 (3) higher; the rest 0 -> rank 3.
        1: _row({0: 1, 1: 2, 2: 3, 3: 10, 4: 10}),
        # target 12 (0.5); excluded 1, 2, 3 (100); items 0 and 4..11 (1.0) higher: 9 items -> rank 10.
        2: _row({1: 100, 2: 100, 3: 100, 12: 0.5}, default=1.0),
    },
    "valid": {
        # target 1; every candidate ties at 0; excluded item 0 scored 5 -> rank 1.
        0: _row({0: 5}),
        # target 4 scored -1, below all 11 other candidates (excluded item 3 is not one) -> rank 12.
        1: [-1.0 if i == 4 else float(i) for i in range(N_ITEMS)],
        # target 3 (5); items 7, 8 (6) higher; item 9 (5) ties; excluded 1 (9), 2 (9) -> rank 3.
        2: _row({1: 9, 2: 9, 3: 5, 7: 6, 8: 6, 9: 5}),
    },
}
HAND_RANKS = {"test": [2, 3, 10], "valid": [1, 12, 3]}
HAND_METRICS = {
    "test": {
        "HR@10": 1.0,
        "NDCG@10": (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(11)) / 3,
        "MRR": (1 / 2 + 1 / 3 + 1 / 10) / 3,
    },
    "valid": {
        "HR@10": 2 / 3,
        "NDCG@10": (1.0 + 0.0 + 0.5) / 3,
        "MRR": (1 + 1 / 12 + 1 / 3) / 3,
    },
}


def _score_fn(users: Sequence[int], split: str) -> torch.Tensor:
    return torch.tensor([SCORES[split][u] for u in users])


@pytest.mark.parametrize("split", ["valid", "test"])
def test_target_ranks_by_hand(split: str) -> None:
    data = _platform()
    users = [0, 1, 2]
    ranks = target_ranks(
        _score_fn(users, split), torch.as_tensor(data.target(split)), [data.history(u, split) for u in users]
    )
    assert ranks.tolist() == HAND_RANKS[split]


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_evaluate_ranking_by_hand(split: str, batch_size: int) -> None:
    got = evaluate_rankings(_platform(), split, _score_fn, batch_size=batch_size)
    assert got["users"] == 3
    for name, value in HAND_METRICS[split].items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_evaluate_ranking_user_subset() -> None:
    got = evaluate_rankings(_platform(), "test", _score_fn, users=[2])
    # u2's top-10 on test: every one of the 10 non-excluded items (of 13)
    assert got == {
        "HR@10": 1.0,
        "NDCG@10": pytest.approx(1 / math.log2(11)),
        "MRR": pytest.approx(0.1),
        "coverage@10": pytest.approx(10 / 13),
        "users": 1,
    }


def test_accumulator_loss_and_coverage_by_hand() -> None:
    acc = RankingAccumulator(num_items=4, k=2)
    # row 1: item 0 excluded -> candidates 1 (target), 2, 3; top-2 {1, 2}
    # row 2: item 2 excluded -> candidates 0, 1, 3 (target); top-2 {3, 0}
    acc.add(
        torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.5, 0.0, 5.0, 1.0]]), torch.tensor([1, 3]), [np.array([0]), np.array([2])]
    )
    got = acc.result()
    loss1 = math.log(math.exp(2) + math.exp(1) + 1) - 2
    loss2 = math.log(math.exp(0.5) + 1 + math.exp(1)) - 1
    assert got["loss"] == pytest.approx((loss1 + loss2) / 2, rel=1e-6)
    assert got["coverage@2"] == 1.0
    assert got["HR@2"] == 1.0 and got["MRR"] == 1.0
    one = RankingAccumulator(num_items=4, k=2)
    one.add(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([1]), [np.array([0])])
    assert one.result()["coverage@2"] == 0.5


def test_valid_item_is_excluded_only_for_test() -> None:
    # u0's valid item 1 is the one item scored above test target 2: excluded on test, so rank 1.
    data = _platform()
    scores = torch.tensor([_row({1: 3.0, 2: 2.0})])
    assert target_ranks(scores, torch.tensor([2]), [data.history(0, "test")]).tolist() == [1]
    assert target_ranks(scores, torch.tensor([2]), [data.history(0, "valid")]).tolist() == [2]


def test_target_in_exclude_list_is_still_ranked() -> None:
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    assert target_ranks(scores, torch.tensor([1]), [np.array([1])]).tolist() == [2]


def test_metrics_from_ranks_by_hand() -> None:
    got = metrics_from_ranks(np.array([1, 10, 11, 2]))
    assert got["HR@10"] == pytest.approx(3 / 4)
    assert got["NDCG@10"] == pytest.approx((1.0 + 1 / math.log2(11) + 0.0 + 1 / math.log2(3)) / 4)
    assert got["MRR"] == pytest.approx((1 + 1 / 10 + 1 / 11 + 1 / 2) / 4)
    assert got["users"] == 4
    got5 = metrics_from_ranks(torch.tensor([1, 6]), k=5)
    assert got5 == {"HR@5": 0.5, "NDCG@5": 0.5, "MRR": pytest.approx((1 + 1 / 6) / 2), "users": 2}


def test_metrics_from_no_ranks() -> None:
    assert metrics_from_ranks(np.zeros(0)) == {"HR@10": 0.0, "NDCG@10": 0.0, "MRR": 0.0, "users": 0}


def test_validation_users_is_a_fixed_subset_or_everyone() -> None:
    from fedrec.evaluate import validation_users

    a = validation_users(1000, 100, seed=0)
    assert a == validation_users(1000, 100, seed=0) and a == sorted(set(a)) and len(a) == 100
    assert a != validation_users(1000, 100, seed=1)
    assert validation_users(50, 100) == list(range(50)) and validation_users(50, -1) == list(range(50))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["target", "other"])
def test_non_finite_scores_are_an_error_never_a_hit(bad: float, where: str) -> None:
    scores = torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.2, 0.1]])
    scores[1, 0 if where == "target" else 2] = bad
    with pytest.raises(ValueError, match="non-finite scores"):
        target_ranks(scores, torch.tensor([1, 0]), [np.array([], dtype=np.int64)] * 2)


def test_variants_score_like_one_evaluation_each_in_one_pass() -> None:
    calls: list[list[int]] = []

    def variants(users: Sequence[int], split: str) -> dict[str, torch.Tensor]:
        calls.append(list(users))
        s = _score_fn(users, split)
        return {"as is": s, "negated": -s}

    got = evaluate_ranking_variants(_platform(), "test", variants, ["as is", "negated"], batch_size=2, loss=True)
    assert calls == [[0, 1], [2]]  # the model scores each batch once for every variant
    for name, fn in {"as is": _score_fn, "negated": lambda u, s: -_score_fn(u, s)}.items():
        alone = evaluate_rankings(_platform(), "test", fn, batch_size=2, loss=True)
        assert got[name] == alone
    assert "loss" in got["as is"] and "loss" not in evaluate_rankings(_platform(), "test", _score_fn)


@pytest.mark.parametrize("one", [True, False])
def test_a_nan_target_score_is_refused_by_every_evaluation(one: bool) -> None:
    """PROTOCOL.md's metric trap: NaN compares false with everything, so a NaN target would rank 1."""

    def nan_target(users: Sequence[int], split: str) -> torch.Tensor:
        s = _score_fn(users, split)
        s[:, 2] = float("nan")  # u0's test target
        return s

    with pytest.raises(ValueError, match="non-finite scores"):
        if one:
            evaluate_rankings(_platform(), "test", nan_target)
        else:
            evaluate_ranking_variants(
                _platform(), "test", lambda u, s: {"ok": _score_fn(u, s), "nan": nan_target(u, s)}, ["ok", "nan"]
            )


def test_minus_inf_marks_an_excluded_item_and_is_allowed() -> None:
    scores = torch.tensor([[0.1, -math.inf, 0.2]])
    assert target_ranks(scores, torch.tensor([0]), [np.array([], dtype=np.int64)]).tolist() == [2]
