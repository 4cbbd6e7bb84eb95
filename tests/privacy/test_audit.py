"""The empirical privacy audit: statistics with known answers, canaries, and ``fedrec audit`` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from scipy.stats import beta

from fedrec.config import compose_config
from fedrec.data.types import PlatformData
from fedrec.privacy.audit import (
    attack_auc,
    best_threshold,
    bound_violation,
    canary_examples,
    canary_losses,
    clopper_pearson,
    epsilon_ceiling,
    epsilon_from_rates,
    insert_canaries,
    make_canaries,
    membership_audit,
    private_run_config,
    split_epsilon_lower_bound,
    threshold_table,
    validate_audit,
)
from fedrec.privacy.dpsgd import count_users
from tests.privacy.conftest import make_task
from tests.synthetic import synthetic_platform

# -- statistics ----------------------------------------------------------------------------


def test_auc_matches_the_pair_count() -> None:
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.5, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # rounding makes ties
    pairs = (m[:, None] > n[None, :]).mean() + 0.5 * (m[:, None] == n[None, :]).mean()
    assert attack_auc(m, n) == pytest.approx(pairs)
    assert attack_auc([2, 3], [0, 1]) == 1.0 and attack_auc([0, 1], [2, 3]) == 0.0


def test_clopper_pearson_known_values() -> None:
    lo, hi = clopper_pearson([0, 5, 10], [10, 10, 10], 0.95)
    assert lo[0] == 0.0 and hi[2] == 1.0
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10))  # zero successes: closed form
    assert lo[2] == pytest.approx(0.025 ** (1 / 10))
    assert lo[1] == pytest.approx(beta.ppf(0.025, 5, 6)) and hi[1] == pytest.approx(beta.ppf(0.975, 6, 5))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson(1, 2, 1.0)


def test_epsilon_from_rates_formula() -> None:
    assert epsilon_from_rates(0.01, 0.5, 0.0) == pytest.approx(math.log(0.5 / 0.01))  # the larger of the two
    assert epsilon_from_rates(0.5, 0.01, 0.0) == pytest.approx(math.log(0.5 / 0.01))  # symmetric
    assert epsilon_from_rates(0.2, 0.3, 1e-3) == pytest.approx(max(math.log(0.799 / 0.3), math.log(0.699 / 0.2)))
    assert epsilon_from_rates(0.6, 0.6, 1e-5) == 0.0  # worse than guessing: clamped
    assert epsilon_from_rates(0.5, 0.5, 1e-5) == 0.0


@pytest.mark.parametrize("per_side", [20, 100, 1000])
def test_perfect_separation_gives_auc_one_and_a_bound_growing_with_canaries(per_side: int) -> None:
    m, n = np.linspace(1, 2, per_side), np.linspace(-1, 0, per_side)
    res = membership_audit(m, n, delta=1e-5, confidence=0.95, seed=0)
    assert res.auc == 1.0
    # evaluation half of size per_side // 2 + rest: zero errors, so the bound is the ceiling
    k = per_side - per_side // 2
    fpr_hi = 1 - 0.025 ** (1 / k)
    assert res.evaluation.fpr == 0.0 and res.evaluation.fnr == 0.0
    assert res.epsilon_lb == pytest.approx(math.log((1 - 1e-5 - fpr_hi) / fpr_hi))
    assert res.epsilon_lb == pytest.approx(res.ceiling)
    assert res.epsilon_lb_max == pytest.approx(epsilon_ceiling(per_side, per_side))


def test_bound_grows_with_canaries() -> None:
    bounds = [membership_audit(np.ones(m) + np.arange(m), -np.arange(m), seed=1).epsilon_lb for m in (10, 20, 50, 250)]
    assert bounds[0] == 0.0  # 5 per side in the evaluation half prove nothing at 95%
    assert 0 < bounds[1] < bounds[2] < bounds[3]


def test_identical_distributions_give_auc_half_and_no_bound() -> None:
    rng = np.random.default_rng(3)
    aucs, lbs = [], []
    for _ in range(20):
        res = membership_audit(rng.normal(size=200), rng.normal(size=200), seed=int(rng.integers(1 << 30)))
        aucs.append(res.auc)
        lbs.append(res.epsilon_lb)
    assert abs(np.mean(aucs) - 0.5) < 0.03
    assert np.mean(np.array(lbs) == 0.0) >= 0.85  # a valid 95% bound is positive only by rare chance
    assert max(lbs) < 0.5


def test_threshold_table_counts_errors_at_each_threshold() -> None:
    tab = threshold_table([3.0, 2.0, 1.0], [0.0, 1.5, 2.5], thresholds=[1.0, 2.0, 3.5])
    # member if score >= t
    assert tab["fn"].tolist() == [0, 1, 3] and tab["fp"].tolist() == [2, 1, 0]
    assert tab["fpr"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_threshold_is_chosen_on_one_half_and_evaluated_on_the_other() -> None:
    # selection half separable at a threshold that the evaluation half does not share
    rng = np.random.default_rng(0)
    m, n = rng.normal(1, 1, 400), rng.normal(0, 1, 400)
    evaluation, selection = split_epsilon_lower_bound(m, n, seed=5)
    assert evaluation.members == 200 and selection.members == 200
    # the chosen threshold is the selection half's best, evaluated on the rest
    perm_rng = np.random.default_rng(5)
    m_sel = m[perm_rng.permutation(400)[:200]]
    n_sel = n[perm_rng.permutation(400)[:200]]
    assert selection.threshold == best_threshold(m_sel, n_sel).threshold == evaluation.threshold
    # an honest split never beats the optimistic max over thresholds on all canaries
    assert evaluation.epsilon_lb <= best_threshold(m, n).epsilon_lb + 1e-12


def test_violation_message_only_when_the_bound_exceeds_epsilon() -> None:
    assert bound_violation("private", "full", 1.0, 8.0, 0.95) is None
    assert bound_violation("non-private", "full", 4.0, math.inf, 0.95) is None
    msg = bound_violation("private", "adapter", 2.5, 2.0, 0.95)
    assert msg is not None and "PRIVACY AUDIT FAILED" in msg and "2.5" in msg


def test_statistics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="no scores"):
        attack_auc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        membership_audit([1.0, np.nan], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        split_epsilon_lower_bound([1.0], [0.0, 1.0])


# -- canaries ------------------------------------------------------------------------------


def test_canaries_are_seeded_disjoint_and_never_collide(platforms: dict[str, PlatformData]) -> None:
    data = platforms["video"]
    c = make_canaries(data, 50, 10, seed=7)
    assert len(c) == 100 and c.member.sum() == 50
    assert set(c.members).isdisjoint(c.nonmembers) and len(c.members) + len(c.nonmembers) == 100
    assert not set(c.user_ids) & set(data.user_ids) and len(set(c.user_ids)) == 100
    assert c.users.min() == data.num_users and len(set(c.users.tolist())) == 100
    for h, t in zip(c.histories, c.targets, strict=True):
        assert len(h) == 10 and len(set(h.tolist())) == 10 and t not in h
        assert 0 <= h.min() and max(h.max(), t) < data.num_items
    same, other = make_canaries(data, 50, 10, seed=7), make_canaries(data, 50, 10, seed=8)
    assert (same.member == c.member).all()
    assert all((a == b).all() for a, b in zip(same.histories, c.histories, strict=True))
    assert not all((a == b).all() for a, b in zip(other.histories, c.histories, strict=True))


def test_canary_ids_avoid_real_ids() -> None:
    data = synthetic_platform(num_users=4)
    data.user_ids[0] = "canary-1"
    c = make_canaries(data, 2, 3)
    assert all(u.startswith("_canary-") for u in c.user_ids)


def test_canary_arguments_are_checked(platforms: dict[str, PlatformData]) -> None:
    with pytest.raises(ValueError, match="at least 2 canaries"):
        make_canaries(platforms["video"], 1, 10)
    with pytest.raises(ValueError, match="history length"):
        make_canaries(platforms["video"], 5, platforms["video"].num_items)


def test_canary_examples_end_with_the_audited_target() -> None:
    c = make_canaries(synthetic_platform(), 3, 4, seed=0)
    ex = canary_examples(c, 2)
    assert len(ex) == 6 and set(ex.users.tolist()) == set(c.users[c.member].tolist())
    for k in c.members:
        rows = np.flatnonzero(ex.users == c.users[k])
        last = rows[-1]
        assert ex.targets[last] == c.targets[k] and (ex.histories[last] == c.histories[k]).all()
        assert ex.targets[rows[0]] == c.histories[k][-1] and (ex.histories[rows[0]] == c.histories[k][:-1]).all()


def test_insert_canaries_trains_members_only_and_leaves_evaluation_alone() -> None:
    task = make_task(num_users=16)
    real_rows, real_users = len(task.examples), count_users(task)
    before = task.evaluate("valid")
    c = make_canaries(task.data, 3, 4, seed=1)
    added = insert_canaries(task, c, 1)
    assert added == 3 and len(task.examples) == real_rows + 3
    assert count_users(task) == real_users + 3  # the DP sampler sees the members
    assert set(task.examples.users[real_rows:].tolist()) == set(c.users[c.member].tolist())
    assert not np.isin(c.users[~c.member], task.examples.users).any()
    n = len(task.examples)
    assert task.user_hidden.shape[0] == task.user_tok.shape[0] == task.user_mask.shape[0] == n
    # the appended rows are the canaries' own inputs: a batch with them runs
    task.refresh_index()
    batch = task.batch(np.arange(real_rows, n), np.arange(5))
    assert task.model(**batch).shape == (3,)
    # evaluation is over the real users only, unchanged
    assert task.data.num_users == 16 and task.evaluate("valid") == pytest.approx(before)
    with pytest.raises(ValueError, match="inserted twice"):
        insert_canaries(task, c, 1)


def test_canary_losses_are_the_evaluation_loss_and_views_differ() -> None:
    task = make_task(num_users=8)
    c = make_canaries(task.data, 2, 3, seed=2)
    full, text = canary_losses(task, c, "full"), canary_losses(task, c, "adapter")
    assert full.shape == text.shape == (4,) and np.isfinite(full).all()
    assert not np.allclose(full, text)  # the ID term matters with the hybrid head
    # full-catalogue loss with history excluded, recomputed by hand
    u_text, u_id = task.user_vectors(c.histories, c.users.tolist())
    with torch.no_grad():
        scores = task.model.scores(u_text, u_id, task.refresh_index()).double()
    for k in range(4):
        s = scores[k].clone()
        s[c.histories[k]] = -math.inf
        expected = float(s.logsumexp(0) - scores[k, c.targets[k]])
        assert full[k] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="attack must be"):
        canary_losses(task, c, "everything")


# -- configuration -------------------------------------------------------------------------


def _compose(*overrides: str) -> DictConfig:
    return compose_config(overrides, command="audit")


def test_private_run_uses_audit_target_when_privacy_is_off() -> None:
    run, source = private_run_config(_compose("audit.epochs=2", "audit.target_epsilon=4"))
    assert list(run.platforms) == ["video"] and run.train.epochs == 2.0
    assert run.privacy.enabled and run.privacy.target_epsilon == 4.0 and run.privacy.budget is None
    assert source == "audit.target_epsilon=4.0"


def test_private_run_audits_the_privacy_group_when_it_is_on() -> None:
    run, source = private_run_config(_compose("privacy=dp", "privacy.noise_multiplier=0.7", "audit.target_epsilon=4"))
    assert run.privacy.target_epsilon is None and run.privacy.noise_multiplier == 0.7
    assert source == "the privacy group"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("audit.platform=nowhere", "not a selected platform"),
        ("audit.canaries=1", "audit.canaries"),
        ("audit.attacks=[full,gradient]", "audit.attacks"),
        ("audit.confidence=1.5", "audit.confidence"),
        ("audit.epochs=0", "audit.epochs"),
    ],
)
def test_bad_audit_settings_are_refused(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_audit(_compose(override))


# -- the command ---------------------------------------------------------------------------


@pytest.mark.slow
def test_audit_command_end_to_end(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    args = ["audit", "model=tiny", "train=smoke", "train.threads=1", "audit.canaries=8", "audit.history_len=5"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    audit = doc["audit"]
    assert doc["command"] == "audit" and audit["platform"] == "video"
    assert audit["canaries"]["users_trained"] == 943 + 8 and audit["canaries"]["training_rows_added"] == 8
    rows = {(r["model"], r["attack"]): r for r in audit["rows"]}
    assert set(rows) == {(m, a) for m in ("initial", "non-private", "private") for a in ("full", "adapter")}
    assert rows["non-private", "full"]["epsilon"] == math.inf and rows["initial", "full"]["epsilon"] == 0.0
    eps = rows["private", "full"]["epsilon"]
    assert 0 < eps <= 8.0 and audit["private_run"]["source"] == "audit.target_epsilon=8.0"
    assert audit["models"]["private"]["training"]["privacy"]["steps"] == 5
    for r in rows.values():
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["epsilon_lb"] <= r["ceiling"]
        assert r["epsilon_lb"] <= r["epsilon"]
    # utility on the real users only
    assert audit["models"]["private"]["test"]["users"] == 943
    assert audit["violations"] == [] and "ε_lb" in proc.stdout
    losses = audit["losses"]["non-private"]["full"]
    assert len(losses["member"]) == len(losses["nonmember"]) == 8
