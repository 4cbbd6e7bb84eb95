"""Evaluation replies: what makes one unusable (:func:`fedrec.federated.replies.check_evaluation`)."""

from __future__ import annotations

import pytest

from fedrec.federated.replies import check_evaluation

GOOD = {"loss": 3.2, "HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "coverage@10": 0.2, "users": 200}


def test_a_complete_reply_and_a_withheld_one_are_usable() -> None:
    assert check_evaluation(GOOD) is None
    assert check_evaluation({"withheld": 1}) is None  # a DP client's reply


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"loss": None}, "metric 'loss' is missing"),
        ({"users": None}, "metric 'users' is missing"),
        ({"loss": float("nan")}, "metric 'loss' is nan"),
        ({"MRR": float("inf")}, "metric 'MRR' is inf"),
        ({"users": 0}, "it scored 0 users"),
        ({"loss": "3.2"}, "metric 'loss' is '3.2', not a number"),
        ({"users": True}, "metric 'users' is True, not a number"),
        ({"HR@10": 1.5}, "metric 'HR@10' is 1.5, outside [0, 1]"),
    ],
)
def test_an_unusable_reply_says_why(change: dict, reason: str) -> None:
    metrics = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert check_evaluation(metrics) == reason
