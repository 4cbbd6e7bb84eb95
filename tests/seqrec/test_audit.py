"""The sequence model's privacy audit: canaries as whole-user rows, the attacked loss, the command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.privacy.canaries import make_canaries
from fedrec.seqrec.audit import target_losses, with_canaries
from fedrec.seqrec.model import shared_scores
from fedrec.seqrec.rows import left_pad
from fedrec.seqrec.task import SeqTask


def test_members_become_trainable_whole_user_rows_and_the_real_users_are_left_alone(
    make_task: Callable[..., SeqTask],
) -> None:
    task = make_task()
    real = task.data
    before = task.trainable_users.copy()
    canaries = make_canaries(real, per_side=3, history_len=4, seed=1)
    with_canaries(task, canaries)
    assert task.data.num_users == real.num_users + 6
    members = canaries.users[canaries.member]
    np.testing.assert_array_equal(task.trainable_users, np.concatenate([before, members]))
    for i, u in enumerate(canaries.users):  # history, then the target: one row holds the audited example
        np.testing.assert_array_equal(task.data.train[u], np.append(canaries.histories[i], canaries.targets[i]))
    for u in range(real.num_users):
        np.testing.assert_array_equal(task.data.train[u], real.train[u])
    np.testing.assert_array_equal(task.data.test[: real.num_users], real.test)
    rows = task.rows(members, np.random.default_rng(0))  # a member's row holds its target
    assert all(
        int(t) in set(rows.targets[i][rows.target_mask[i]].tolist())
        for i, t in enumerate(canaries.targets[canaries.member])
    )


def test_canaries_numbered_for_other_data_are_refused(make_task: Callable[..., SeqTask]) -> None:
    task = make_task()
    canaries = make_canaries(task.data, per_side=2, history_len=3)
    with_canaries(task, canaries)
    with pytest.raises(ValueError, match="numbered after"):
        with_canaries(task, canaries)  # the task has grown: these ids are no longer after its users


def test_target_loss_is_the_softmax_loss_with_the_history_removed(make_task: Callable[..., SeqTask]) -> None:
    task = make_task()
    canaries = make_canaries(task.data, per_side=3, history_len=4, seed=2)
    got = target_losses(task, canaries)
    ids, mask = left_pad(canaries.histories, task.shared.max_len)
    scores = shared_scores(task.shared.eval(), task.text.index(), ids, mask, task.data.sequential).detach()
    for i, (hist, target) in enumerate(zip(canaries.histories, canaries.targets, strict=True)):
        keep = torch.ones(scores.shape[1], dtype=torch.bool)
        keep[torch.from_numpy(hist)] = False
        candidates = torch.nonzero(keep).squeeze(1)
        want = F.cross_entropy(scores[i, candidates][None], (candidates == int(target)).nonzero()[0])
        assert got[i] == pytest.approx(float(want), rel=1e-5)


@pytest.mark.slow
def test_audit_command_on_the_sequence_model(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    args = ["audit", "model=seqrec_tiny", "train.threads=1", "federation.rounds=2", "audit.canaries=8"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args, "audit.history_len=5", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = json.loads((out / "results.json").read_text())["audit"]
    assert audit["platform"] == "video" and audit["canaries"]["training_rows_added"] == 8
    assert audit["canaries"]["users_trained"] == 943 + 8  # every real video user has >= 2 train items
    rows = {r["model"]: r for r in audit["rows"]}
    assert set(rows) == {"initial", "non-private", "private"} and {r["attack"] for r in rows.values()} == {"shared"}
    assert rows["initial"]["epsilon"] == 0.0 and rows["non-private"]["epsilon"] == math.inf
    assert 0 < rows["private"]["epsilon"] <= 8.0
    privacy = audit["models"]["private"]["training"]["privacy"]
    assert privacy["noise_multiplier"] > 0 and audit["models"]["private"]["training"]["steps"] > 0
    for r in rows.values():
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["epsilon_lb"] <= min(r["ceiling"], r["epsilon"])
    # training moved the shared part (the test metrics are the real users' only)
    assert audit["models"]["non-private"]["test"]["users"] == 943
    assert audit["models"]["non-private"]["test"]["NDCG@10"] != audit["models"]["initial"]["test"]["NDCG@10"]
    assert audit["violations"] == [] and "ε_lb" in proc.stdout
    assert len(audit["losses"]["private"]["shared"]["member"]) == 8
