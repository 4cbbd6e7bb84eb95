"""The empirical audit: statistics with known answers, canary construction, ``fedrec audit`` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrec.privacy.audit import add_canaries, attack_auc, empirical_epsilon, epsilon_bound
from tests.synthetic import synthetic_platform


def test_auc_of_separable_and_identical_scores() -> None:
    assert attack_auc(np.arange(10, 20.0), np.arange(10.0)) == 1.0
    assert attack_auc(np.arange(10.0), np.arange(10, 20.0)) == 0.0
    same = np.random.default_rng(0).normal(size=400)
    assert attack_auc(same[:200], same[200:]) == pytest.approx(0.5, abs=0.07)


def test_epsilon_lower_bound_grows_with_evidence_and_vanishes_without_signal() -> None:
    # perfect separation: with n evaluation canaries per side the bound is log((1 - d - ub(0, n)) / ub(0, n))
    small = empirical_epsilon(np.arange(100, 120.0), np.arange(20.0))["epsilon_lb"]
    large = empirical_epsilon(np.arange(1000, 1400.0), np.arange(400.0))["epsilon_lb"]
    assert 0 < small < large
    ub = 1 - 0.025 ** (1 / 200)  # Clopper-Pearson upper bound of 0 of 200 at one-sided 2.5%
    assert large == pytest.approx(math.log((1 - 1e-5 - ub) / ub), rel=1e-6)
    rng = np.random.default_rng(1)
    noise = empirical_epsilon(rng.normal(size=200), rng.normal(size=200))["epsilon_lb"]
    assert noise < 0.3
    assert epsilon_bound(0.5, 0.5, 1e-5) == 0.0


def test_canaries_are_disjoint_seeded_and_do_not_touch_real_users() -> None:
    data = synthetic_platform(num_users=30)
    a, b = add_canaries(data, 8, history_len=5, seed=3), add_canaries(data, 8, history_len=5, seed=3)
    assert a.data.num_users == 30 + 16 and a.real_users == 30
    assert set(a.members).isdisjoint(a.non_members) and set(a.members) | set(a.non_members) == set(range(30, 46))
    assert (a.members == b.members).all() and all(
        (x == y).all() for x, y in zip(a.data.train, b.data.train, strict=True)
    )
    for u in range(30):
        assert (a.data.train[u] == data.train[u]).all() and a.data.valid[u] == data.valid[u]
    for u in range(30, 46):
        seq = np.concatenate([a.data.train[u], [a.data.valid[u], a.data.test[u]]])
        assert len(set(seq.tolist())) == len(seq) == 5 + 3  # distinct real catalogue items
    assert add_canaries(data, 8, history_len=5, seed=4).members.tolist() != a.members.tolist()


@pytest.mark.slow
def test_fedrec_audit_end_to_end(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    args = [
        "audit",
        "platform=video",
        "model=tiny",
        "train=smoke",
        "train.max_steps=-1",
        "audit.canaries=20",
        "audit.epochs=1",
        "audit.target_epsilon=2",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    models = doc["audit"]["models"]
    assert set(models) == {"non-private", "private"}
    assert math.isinf(models["non-private"]["formal_epsilon"]) and 1.8 <= models["private"]["formal_epsilon"] <= 2.0
    for m in models.values():
        assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["epsilon_lb"] <= m["formal_epsilon"]
        assert m["test"]["users"] == 943  # utility on the real users only
    assert "attack AUC" in proc.stdout and "empirical eps" in proc.stdout
