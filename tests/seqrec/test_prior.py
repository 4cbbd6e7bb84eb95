"""The platform prior: z-scored blend, the weight chosen on valid, the served metrics beside the parts'."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedrec.seqrec.platform import SeqPlatform
from fedrec.seqrec.prior import Prior, blend, fit_ease_prior, zscore
from fedrec.seqrec.serving import served_metrics
from fedrec.seqrec.task import SeqTask


def test_blend_is_a_weighted_sum_of_per_user_z_scores() -> None:
    m = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    p = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    z = zscore(m)
    torch.testing.assert_close(z[0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.all(z[1] == 0)  # a constant row carries no preference
    torch.testing.assert_close(blend(m, p, 0.25), 0.75 * zscore(m) + 0.25 * zscore(p))
    torch.testing.assert_close(blend(m, p, 0.0), m)
    torch.testing.assert_close(blend(m, p, 1.0), p)


def test_the_weight_is_the_best_on_valid_and_the_served_model_is_reported(make_task: Callable[..., SeqTask]) -> None:
    plat = SeqPlatform(make_task())
    plat.task.personalize(2, 8, 1e-2, np.random.default_rng(0))
    grid = [0.0, 0.5, 1.0]
    prior = plat.fit_prior(fit_ease_prior(plat.task.data, [10.0, 100.0]), grid)
    valid = plat.task.evaluate_blends("valid", grid, "personal")
    assert prior.weight in grid
    assert valid[prior.weight]["NDCG@10"] == max(v["NDCG@10"] for v in valid.values())
    assert prior.info["valid_NDCG@10"] == {f"{w:g}": valid[w]["NDCG@10"] for w in grid}
    out = served_metrics(plat, "test", None, 256)
    assert out["prior-weight"] == prior.weight
    # one pass over the users for the three (evaluate_variants), exactly the three passes of their own
    for prefix, which in (("", "served"), ("personal-", "personal"), ("shared-", "shared")):
        alone = plat.task.evaluate("test", which)
        assert {k: out[f"{prefix}{k}"] for k in alone if k != "users" or not prefix} == {
            k: v for k, v in alone.items() if k != "users" or not prefix
        }, which


def test_a_prior_that_knows_the_answer_takes_the_weight(make_task: Callable[..., SeqTask]) -> None:
    task = make_task()
    plat = SeqPlatform(task)
    data = task.data

    def oracle(users, split):  # type: ignore[no-untyped-def]
        s = torch.zeros(len(users), data.num_items)
        s[torch.arange(len(users)), torch.as_tensor(data.target(split)[list(users)])] = 1.0
        return s

    prior = plat.fit_prior(Prior("oracle", oracle), [0.0, 0.5, 1.0])
    assert prior.weight > 0 and task.evaluate("test", "served")["NDCG@10"] == pytest.approx(1.0)
