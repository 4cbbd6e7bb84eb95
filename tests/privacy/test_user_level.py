"""The unit is the user: sampling, no cross-user coupling, and refusing inputs that mix users."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fedrec.config import register_configs, validate
from fedrec.privacy import PerSampleGradients, UserSampler, check_user_level, plan_private, train_private
from fedrec.privacy.sampling import secure_uniform
from fedrec.task import PlatformTask
from tests.conftest import REPO_ROOT
from tests.privacy.conftest import one_row_per_user, trainable

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def per_sample(task: PlatformTask, rows: np.ndarray, negatives: np.ndarray) -> tuple[torch.Tensor, dict]:
    task.model.train()
    per_sample = PerSampleGradients(task.model)
    named = trainable(task)
    try:
        losses = per_sample(**task.batch(rows, negatives))
        losses.sum().backward()
        dense = per_sample.dense([p for _, p in named], len(rows))
        grads = {n: g.detach().clone() for (n, _), g in zip(named, dense, strict=True)}
    finally:
        per_sample.close()
        for _, p in trainable(task):
            p.grad = None
    return losses.detach(), grads


def test_a_users_loss_and_gradient_do_not_change_when_another_user_is_removed(tiny_task: PlatformTask) -> None:
    rows = one_row_per_user(tiny_task, 6)
    negatives = np.arange(tiny_task.data.num_items)
    losses, grads = per_sample(tiny_task, rows, negatives)
    for removed in (0, 3, 5):
        keep = np.delete(np.arange(len(rows)), removed)
        sub_losses, sub_grads = per_sample(tiny_task, rows[keep], negatives)
        torch.testing.assert_close(sub_losses, losses[keep], rtol=1e-5, atol=1e-6)
        for name in grads:
            torch.testing.assert_close(sub_grads[name], grads[name][keep], rtol=1e-4, atol=1e-7)
    # and the per-sample gradients do differ between users (the comparison is not vacuous)
    name = next(n for n in grads if "lora_B" in n)
    assert float((grads[name][0] - grads[name][1]).norm()) > 1e-6


def test_sampler_takes_at_most_one_example_per_user_at_rate_q() -> None:
    users = np.repeat(np.arange(200), 3)  # 3 examples per user
    users = np.random.default_rng(1).permutation(users)
    sampler = UserSampler(users, sample_rate=0.1, rng=np.random.default_rng(0))
    assert sampler.num_users == 200
    sizes, picked = [], np.zeros(len(users), dtype=int)
    for _ in range(2000):
        rows = sampler.sample()
        assert len(np.unique(users[rows])) == len(rows)  # one example per sampled user
        sizes.append(len(rows))
        picked[rows] += 1
    assert abs(np.mean(sizes) - 20.0) < 0.5  # E|B| = q * users
    per_user = np.bincount(users, weights=picked)
    assert abs(per_user.mean() / 2000 - 0.1) < 0.005
    assert (picked > 0).all()  # every example of every user gets chosen sometimes


def test_secure_sampling_uses_uniforms_in_the_unit_interval() -> None:
    u = secure_uniform(10000)
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02
    rows = UserSampler(np.arange(100), 0.5, secure=True).sample()
    assert 20 < len(rows) < 80


def test_friend_signal_is_refused_with_dp(tiny_task: PlatformTask) -> None:
    tiny_task.inputs.friend_tokens = 16  # what TextInputs sets when friend_signal is on
    with pytest.raises(ValueError, match="friend_signal"):
        check_user_level(tiny_task)
    plan = plan_private(24, 4, steps_per_round=1)
    with pytest.raises(ValueError, match="friend_signal"):
        train_private(tiny_task, plan, progress=False)


def test_config_refuses_dp_with_friend_signal_and_accepts_the_privacy_group() -> None:
    register_configs()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base=None):
        off = compose("config")
        assert off.privacy.enabled is False
        validate(off)
        dp = compose("config", overrides=["privacy=dp", "mode=local"])
        assert dp.privacy.enabled and dp.privacy.delta == 1e-5 and dp.privacy.accountant == "rdp"
        validate(dp)
        target = compose("config", overrides=["privacy=target_eps", "privacy.target_epsilon=2"])
        assert target.privacy.budget == 2.0
        bad = compose("config", overrides=["privacy=dp", "mode=local", "platforms.social.friend_signal=true"])
        with pytest.raises(ValueError, match="friend_signal=true cannot be combined"):
            validate(bad)
        with pytest.raises(ValueError, match="privacy.accountant"):
            validate(compose("config", overrides=["privacy=dp", "mode=local", "privacy.accountant=gdp"]))
        with pytest.raises(ValueError, match="mode=local"):
            validate(compose("config", overrides=["privacy=dp", "mode=centralized"]))
        validate(compose("config", overrides=["privacy=dp", "command=simulate"]))  # federated: per platform
        # friend signal without DP stays allowed
        validate(compose("config", overrides=["platforms.social.friend_signal=true"]))
