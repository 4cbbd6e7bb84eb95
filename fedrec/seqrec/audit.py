"""The empirical privacy audit of the sequence model (``fedrec audit`` with ``model.kind=seqrec``).

The claim audited: *the shared part a platform sends* (the sequence encoder and the text
adaptor, after all of its rounds) *is (epsilon, delta)-DP with respect to adding or removing
one of its users*. The statistics are :mod:`fedrec.privacy.membership`'s, as for the
two-tower audit (:mod:`fedrec.privacy.audit`); what differs is what is trained and attacked:

* **Training**: the audit platform alone, with the federated client's schedule
  (``federation.rounds`` rounds of ``federation.local_epochs``; no server, no other
  platform: the most one platform's rounds reveal of a user, before averaging dilutes it).
  ``non-private`` is :meth:`SeqPlatform.train` each round; ``private`` is
  :func:`~fedrec.seqrec.private.train_shared_private` with the client's plan
  (:func:`fedrec.privacy.plan_from_config`, ``federated=True``): the same steps, sampling,
  clipping and noise as a DP client, charged to a fresh ledger. ``initial`` is the untrained
  start (a control). The three start from the same state.
* **Canaries** (:func:`fedrec.privacy.canaries.make_canaries`): a member is one more training
  user whose history is its random items followed by its random target (one whole-user row,
  as a real user); non-members are never trained on. They are not evaluated with the real
  users (the reported test metrics are the real users' only).
* **Attack** ``shared``: the loss-threshold test on the target's full-catalogue softmax loss
  after the canary's history, through the shared part's text path (history items removed
  from the candidates, as in evaluation): exactly what the platform sends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.privacy.canaries import Canaries, make_canaries
from fedrec.seqrec.task import SeqTask

log = logging.getLogger("fedrec.audit")

#: the attacked view of the sequence model, and what it covers
ATTACK = "shared"
ATTACK_WHAT = "the shared part's text path (sequence encoder + text adaptor, frozen public text): what is sent"


def with_canaries(task: SeqTask, canaries: Canaries) -> None:
    """Add the canaries to ``task`` as users after the real ones; only the members become trainable.

    A canary's training history is its items followed by its target. The canaries' valid and
    test items are their targets, never scored (the audit evaluates the real users only).
    """
    data = task.data
    if not np.array_equal(canaries.users, data.num_users + np.arange(len(canaries))):
        raise ValueError("the canaries must be numbered after the task's users (make_canaries on the same data)")
    train = [np.append(h, t).astype(np.int64) for h, t in zip(canaries.histories, canaries.targets, strict=True)]
    task.data = dataclasses.replace(
        data,
        user_ids=[*data.user_ids, *canaries.user_ids],
        train=[*data.train, *train],
        valid=np.concatenate([data.valid, canaries.targets]),
        test=np.concatenate([data.test, canaries.targets]),
    )
    task.trainable_users = np.concatenate([task.trainable_users, canaries.users[canaries.member]])


@torch.no_grad()
def target_losses(task: SeqTask, canaries: Canaries) -> np.ndarray:
    """Each canary's target softmax loss after its history on the shared text path (history items removed)."""
    scores = task.scores(canaries.histories, "shared").float()
    for row, hist in enumerate(canaries.histories):
        scores[row, torch.from_numpy(hist)] = -math.inf
    target = scores.gather(1, torch.from_numpy(canaries.targets)[:, None]).squeeze(1)
    if not torch.isfinite(target).all():
        raise ValueError("a canary's target score is not finite")
    return (torch.logsumexp(scores, dim=1) - target).numpy().astype(np.float64)


def run_seq_audit(cfg: DictConfig) -> dict[str, Any]:
    """Train the audit platform's shared part without and with DP (canaries inserted) and attack it.

    Parameters
    ----------
    cfg : DictConfig
        Resolved fedrec config with ``model.kind=seqrec`` (``audit``, ``privacy``, ``federation``).

    Returns
    -------
    dict
        As :func:`fedrec.privacy.audit.run_audit`: ``rows`` (one per model), ``models``,
        ``canaries``, ``private_run``, ``attacks``, ``threshold_choice``, ``violations``, ``losses``.
    """
    from fedrec.federated.client import round_seed
    from fedrec.privacy import PrivacyLedger, plan_from_config
    from fedrec.privacy.audit import THRESHOLD_CHOICE, attack_row, private_run_config, validate_audit
    from fedrec.seqrec.local import build_platforms
    from fedrec.seqrec.private import train_shared_private

    validate_audit(cfg)
    a = cfg.audit
    run_cfg, source = private_run_config(cfg)
    plat = build_platforms(run_cfg)[str(a.platform)]
    task = plat.task
    real = task.data
    canaries = make_canaries(real, int(a.canaries), int(a.history_len), int(a.seed))
    with_canaries(task, canaries)
    real_users = list(range(real.num_users))
    initial = plat.shared_state()
    initial_opt = plat.optimizer.state_dict()
    fed, seq = run_cfg.federation, run_cfg.model.seq
    rounds, batch = int(fed.rounds), int(seq.batch_size)
    plan = plan_from_config(run_cfg, len(task.trainable_users), federated=True)
    ledger = PrivacyLedger(delta=plan.delta, accountant=plan.accountant)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    losses_out: dict[str, dict[str, dict[str, list[float]]]] = {}
    violations: list[str] = []
    for model in ("initial", "non-private", "private"):
        plat.load_shared(initial, include_local=True)
        plat.optimizer.load_state_dict(initial_opt)
        torch.manual_seed(round_seed(int(run_cfg.seed), 0, 0))
        start = time.perf_counter()
        training: dict[str, Any] | None = None
        epsilon = 0.0
        if model == "non-private":
            steps = 0
            for r in range(1, rounds + 1):
                steps += plat.train(float(fed.local_epochs), batch, round_seed(int(run_cfg.seed), r, 0)).steps
            training, epsilon = {"steps": steps}, math.inf
        elif model == "private":
            steps = 0
            for r in range(1, rounds + 1):
                res = train_shared_private(task, plan, plat.optimizer, ledger, round_seed(int(run_cfg.seed), r, 0), r)
                if res.refused:
                    raise ValueError(f"the private run was refused: {res.refused}")
                steps += res.steps
            training = {"steps": steps, "privacy": res.public_metrics(), "clipped_fraction": res.clipped_fraction}
            epsilon = float(res.epsilon)
        test = task.evaluate("test", "shared", users=real_users, batch_size=int(run_cfg.train.eval_batch_size))
        row, losses_out.setdefault(model, {})[ATTACK], message = attack_row(
            model, ATTACK, ATTACK_WHAT, epsilon, target_losses(task, canaries), canaries.member, test, run_cfg
        )
        rows.append(row)
        if message is not None:
            violations.append(message)
        models[model] = {"epsilon": epsilon, "training": training, "test": test}
        models[model]["seconds"] = round(time.perf_counter() - start, 2)
        log.info("audit %s: %.1fs", model, models[model]["seconds"])
    return {
        "platform": str(a.platform),
        "rows": rows,
        "models": models,
        "canaries": {
            "per_side": int(a.canaries),
            "history_len": int(a.history_len),
            "examples_per_canary": "a whole-user row (history, then target)",
            "training_rows_added": int(canaries.member.sum()),
            "users_trained": len(task.trainable_users),
            "real_users": real.num_users,
            "seed": int(a.seed),
        },
        "private_run": {"source": source, "privacy": OmegaConf.to_container(run_cfg.privacy, resolve=True)},
        "attacks": {ATTACK: ATTACK_WHAT},
        "threshold_choice": THRESHOLD_CHOICE,
        "violations": violations,
        "losses": losses_out,
    }
