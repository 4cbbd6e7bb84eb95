"""Empirical privacy audit: canary users, a membership-inference test and an epsilon lower bound.

The claim audited: *the adapter (and the trained platform head) a platform produces is
(epsilon, delta)-DP with respect to adding or removing any one of its users.* A formal
epsilon is an upper bound on what any attack can achieve; an audit runs one attack and
turns its success into a statistically valid *lower* bound ``epsilon_lb``. The lower
bound can only be loose (one attack, few canaries); if it ever exceeds the formal epsilon
of a private model, the implementation or the accounting is broken.

Canaries
--------
:func:`make_canaries` draws ``2 m`` synthetic users for one platform from public
randomness (a seed): each has a history of ``history_len`` distinct catalogue items drawn
uniformly and a *target* item drawn uniformly from the rest -- a random pairing no real
user pattern explains, so only training on the canary itself can make the model predict
it. A random half are *members*: :func:`insert_canaries` appends their training examples
(the target predicted from the history, plus earlier positions when a canary has more
than one example) to the task's examples, as extra users with internal ids after the real
users. The other half (*non-members*) are built identically and never trained on. The
platform's :class:`~fedrec.data.types.PlatformData` is left untouched, so the canaries
never enter the valid/test evaluation of the real users, and their raw ids
(``canary-<k>``) are checked not to collide with a real user's id.

Attack
------
A loss-threshold membership test (Yeom et al. 2018) on each canary's *target example*:
the full-catalogue softmax loss of the target given the canary's history (history items
removed from the candidates, as in evaluation); a canary is called a member when
``-loss >= t``. Two views of the trained model are attacked (``attacks``):

* ``full`` -- LoRA adapter + platform head (item-ID embeddings): the platform's whole
  trained model. The head never leaves the platform, but DP-SGD clips and noises the
  gradient over both jointly, so the claim covers it and this is the strongest view.
* ``adapter`` -- the LoRA adapter only (the text score ``scale * cos(user text, item
  text)``; the frozen public backbone encodes the items): exactly what the platform sends
  to the server. By post-processing, its epsilon is at most the full model's.

Statistics
----------
* AUC of the attack over all canaries (Mann-Whitney ``U / (n_members * n_nonmembers)``).
* ``epsilon_lb`` (Jagielski et al. 2020; Nasr et al. 2021): at a threshold, the two-sided
  Clopper-Pearson interval at ``confidence`` bounds the false-positive and false-negative
  rates from above (``FPR_hi``, ``FNR_hi``); any (epsilon, delta)-DP mechanism has
  ``FPR + e^eps FNR >= 1 - delta`` and symmetrically, so
  ``eps >= max(log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi))``,
  clamped at 0. **Threshold choice**: the threshold is chosen on a random half of the
  canaries (the one maximising the bound there) and the bound is evaluated on the other
  half only, so the reported ``epsilon_lb`` holds at ``confidence`` (each rate bound fails
  with probability at most ``(1 - confidence) / 2``). The maximum over all thresholds on
  all canaries is reported beside it as ``epsilon_lb_max``: optimistic, a threshold
  picked after looking at the answers.
* ``ceiling``: the largest ``epsilon_lb`` the evaluation half could show at all (perfect
  separation). A formal epsilon above it cannot be refuted with this many canaries.

The canaries and the attack's losses live in :mod:`fedrec.privacy.canaries`, the statistics
in :mod:`fedrec.privacy.membership`; this module checks the ``audit`` group and runs the
audit (:func:`run_audit`). Their public names are importable from here.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fedrec.metrics import NDCG
from fedrec.privacy.canaries import (
    ATTACK_PARAMETERS,
    ATTACKS,
    Canaries,
    CanaryInputs,
    canary_examples,
    canary_inputs,
    canary_losses,
    insert_canaries,
    make_canaries,
)
from fedrec.privacy.membership import (
    MembershipAudit,
    ThresholdBound,
    attack_auc,
    best_threshold,
    bound_violation,
    clopper_pearson,
    epsilon_ceiling,
    epsilon_from_rates,
    halves,
    membership_audit,
    split_epsilon_lower_bound,
    threshold_table,
)

__all__ = [
    "ATTACKS",
    "ATTACK_PARAMETERS",
    "THRESHOLD_CHOICE",
    "Canaries",
    "CanaryInputs",
    "MembershipAudit",
    "ThresholdBound",
    "attack_auc",
    "best_threshold",
    "bound_violation",
    "canary_examples",
    "canary_inputs",
    "canary_losses",
    "clopper_pearson",
    "epsilon_ceiling",
    "epsilon_from_rates",
    "halves",
    "insert_canaries",
    "make_canaries",
    "membership_audit",
    "private_run_config",
    "run_audit",
    "split_epsilon_lower_bound",
    "threshold_table",
    "validate_audit",
]

log = logging.getLogger("fedrec.audit")

# -- the audit run -------------------------------------------------------------------------


def validate_audit(cfg: DictConfig) -> None:
    """Check the ``audit`` group.

    Raises
    ------
    ValueError
        Naming the key and the bad value.
    """
    a = cfg.audit
    if a.platform not in cfg.platforms:
        raise ValueError(
            f"audit.platform={a.platform!r} is not a selected platform {list(cfg.platforms)}; "
            f"select it with platform={a.platform} or change audit.platform"
        )
    if a.canaries < 2:
        raise ValueError(f"audit.canaries must be >= 2 per side (each side is split in halves), got {a.canaries}")
    if a.history_len < 1:
        raise ValueError(f"audit.history_len must be >= 1, got {a.history_len}")
    if a.examples_per_canary < 0:
        raise ValueError(
            f"audit.examples_per_canary must be >= 0 (0 = train.examples_per_user), got {a.examples_per_canary}"
        )
    if a.epochs <= 0:
        raise ValueError(f"audit.epochs must be > 0, got {a.epochs}")
    if not 0.0 < a.confidence < 1.0:
        raise ValueError(f"audit.confidence must be in (0, 1), got {a.confidence}")
    bad = [x for x in a.attacks if x not in ATTACKS]
    if bad or not a.attacks:
        raise ValueError(f"audit.attacks must be a non-empty subset of {list(ATTACKS)}, got {list(a.attacks)}")
    if a.target_epsilon is not None and a.target_epsilon <= 0:
        raise ValueError(f"audit.target_epsilon must be > 0 (or null), got {a.target_epsilon}")


def private_run_config(cfg: DictConfig) -> tuple[DictConfig, str]:
    """The config of the audit's runs (audit platform only, ``train.epochs = audit.epochs``) and its privacy source.

    The private run uses the ``privacy`` group when it is enabled (``privacy=dp`` or
    ``privacy=target_eps``); otherwise (the default ``privacy=off``) the group's values
    with ``enabled=true``, ``target_epsilon=audit.target_epsilon`` and no budget.

    Returns
    -------
    (DictConfig, str)
        The config and a sentence naming where the private run's settings come from.
    """
    from fedrec.config import validate_privacy
    from fedrec.federated.client import client_config

    run = client_config(cfg, cfg.audit.platform)
    run.train.epochs = float(cfg.audit.epochs)
    if run.privacy.enabled:
        source = "the privacy group"
    else:
        run.privacy.enabled = True
        run.privacy.target_epsilon = cfg.audit.target_epsilon
        run.privacy.budget = None
        source = (
            f"audit.target_epsilon={cfg.audit.target_epsilon}"
            if cfg.audit.target_epsilon is not None
            else f"privacy.noise_multiplier={run.privacy.noise_multiplier}"
        )
    validate_privacy(run)
    return run, source


def _training_report(result: Any) -> dict[str, Any]:
    out = {
        "steps": result.steps,
        "examples": int(sum(result.num_examples.values())),
        "loss": float(next(iter(result.loss.values()), math.nan)),
        "seconds": round(result.seconds, 2),
    }
    if hasattr(result, "public_metrics"):
        out["privacy"] = result.public_metrics()
        out["clipped_fraction"] = result.clipped_fraction
    return out


#: how the reported bounds choose their threshold (both audits)
THRESHOLD_CHOICE = (
    "epsilon_lb: threshold chosen on a random half of the canaries, bound evaluated on the other half; "
    "epsilon_lb_max: max over thresholds on all canaries (optimistic)"
)


def attack_row(
    model: str,
    attack: str,
    parameters: str,
    epsilon: float,
    losses: np.ndarray,
    member: np.ndarray,
    test: dict[str, float],
    run_cfg: DictConfig,
) -> tuple[dict[str, Any], dict[str, list[float]], str | None]:
    """One attacked model's row from its canaries' target losses: ``(row, the losses kept, violation or None)``.

    The attack calls a canary a member when ``-loss`` is at least the threshold
    (:func:`~fedrec.privacy.membership.membership_audit`); a violation (``epsilon_lb`` above the
    formal epsilon) is logged as an error.
    """
    a = run_cfg.audit
    delta, confidence = float(run_cfg.privacy.delta), float(a.confidence)
    result = membership_audit(-losses[member], -losses[~member], delta, confidence, int(a.seed))
    row = {
        "model": model,
        "attack": attack,
        "parameters": parameters,
        "epsilon": epsilon,
        **result.to_dict(),
        "member_loss": float(np.median(losses[member])),
        "nonmember_loss": float(np.median(losses[~member])),
        f"test_{NDCG}": test[NDCG],
    }
    kept = {"member": np.round(losses[member], 5).tolist(), "nonmember": np.round(losses[~member], 5).tolist()}
    message = bound_violation(model, attack, result.epsilon_lb, epsilon, confidence)
    if message is not None:
        log.error(message)
    return row, kept, message


def run_audit(cfg: DictConfig) -> dict[str, Any]:
    """Train the audit platform without and with DP (canaries inserted) and attack each model.

    Three models are attacked: ``initial`` (the untrained starting point: a control, its
    AUC should be ~0.5 and its epsilon is 0), ``non-private`` (:func:`fedrec.train.fit`)
    and ``private`` (:func:`~fedrec.privacy.dpsgd.train_private_from_config`), all from the
    same initial adapter and head, with ``audit.epochs`` epochs. Each row carries the formal
    epsilon, the attack's AUC and epsilon bounds per attacked view, and the real users'
    test metrics.

    Parameters
    ----------
    cfg : DictConfig
        Resolved fedrec config (``audit``, ``privacy``, ``train``, ``model``, ``data``).

    Returns
    -------
    dict
        ``rows`` (one per model and attack), ``models`` (training and test metrics),
        ``canaries``, ``private_run`` (where its privacy settings come from),
        ``violations`` (messages; empty when every ``epsilon_lb <= epsilon``) and
        ``losses`` (every canary's target loss per model and attack, to re-run the statistics).
    """
    from fedrec.build import build_encoder, build_task, load_datasets
    from fedrec.privacy.dpsgd import count_users, train_private_from_config
    from fedrec.train import fit, fit_options

    validate_audit(cfg)
    a = cfg.audit
    run_cfg, source = private_run_config(cfg)
    data = load_datasets(run_cfg)[a.platform]
    encoder, tokenizer = build_encoder(run_cfg.model, run_cfg.seed)
    task = build_task(run_cfg, data, encoder, tokenizer)
    initial_adapter, initial_local = encoder.adapter_state(), task.local_state()
    canaries = make_canaries(data, int(a.canaries), int(a.history_len), int(a.seed))
    per_canary = int(a.examples_per_canary or run_cfg.train.examples_per_user)
    added = insert_canaries(task, canaries, per_canary)
    inputs = canary_inputs(task, canaries)
    attacks = list(dict.fromkeys(a.attacks))
    if task.model.head is None:
        attacks = ["adapter"]  # without a head both views are the adapter
    t = run_cfg.train
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    losses_out: dict[str, dict[str, dict[str, list[float]]]] = {}
    violations: list[str] = []
    for model in ("initial", "non-private", "private"):
        encoder.load_adapter_state(initial_adapter)
        task.load_local_state(initial_local)
        start = time.perf_counter()
        training: dict[str, Any] | None = None
        epsilon = 0.0
        if model == "non-private":
            res = fit(
                [task],
                epochs=float(a.epochs),
                max_steps=int(t.max_steps),
                seed=int(run_cfg.seed),
                progress=bool(t.progress),
                **fit_options(t),
            )
            training, epsilon = _training_report(res), math.inf
        elif model == "private":
            priv = train_private_from_config(task, run_cfg)
            if priv.refused:
                raise ValueError(f"the private run was refused: {priv.refused}")
            training, epsilon = _training_report(priv), float(priv.epsilon)
        test = task.evaluate("test", batch_size=int(t.eval_batch_size))
        models[model] = {"epsilon": epsilon, "training": training, "test": test}
        for attack in attacks:
            losses = canary_losses(task, canaries, attack, inputs)
            row, losses_out.setdefault(model, {})[attack], message = attack_row(
                model, attack, ATTACK_PARAMETERS[attack], epsilon, losses, canaries.member, test, run_cfg
            )
            rows.append(row)
            if message is not None:
                violations.append(message)
        models[model]["seconds"] = round(time.perf_counter() - start, 2)
        log.info("audit %s: %.1fs", model, models[model]["seconds"])
    return {
        "platform": a.platform,
        "rows": rows,
        "models": models,
        "canaries": {
            "per_side": int(a.canaries),
            "history_len": int(a.history_len),
            "examples_per_canary": per_canary,
            "training_rows_added": added,
            "users_trained": count_users(task),
            "real_users": data.num_users,
            "seed": int(a.seed),
        },
        "private_run": {"source": source, "privacy": OmegaConf.to_container(run_cfg.privacy, resolve=True)},
        "attacks": {x: ATTACK_PARAMETERS[x] for x in attacks},
        "threshold_choice": THRESHOLD_CHOICE,
        "violations": violations,
        "losses": losses_out,
    }
