"""Empirical privacy audit: canary users, a loss-threshold membership test, an epsilon lower bound.

The claim audited is the one a platform relies on: what its client trains (the LoRA
adapter it sends, and its platform-local item-ID embeddings) is (epsilon, delta)-DP with
respect to any one of its users. The audit adds ``2m`` synthetic *canary* users to one
platform, each a random history of real catalogue items (public randomness); a random
half (the members) is trained on, the other half never is. After training, each canary
is scored by its mean training loss under the model (full-catalogue softmax, the same
examples for members and non-members): a lower loss says "member". The attack's AUC
and the epsilon it implies are reported for the non-private and the private model.

The lower bound (Jagielski et al., 2020; Nasr et al., 2021): for a threshold with false
positive rate FPR and false negative rate FNR, any (epsilon, delta)-DP mechanism has
``FPR + exp(epsilon) * FNR >= 1 - delta`` (and symmetrically), so
``epsilon >= log((1 - delta - FPR) / FNR)``. The threshold is chosen on one half of the
canaries and the bound evaluated on the other half with one-sided Clopper-Pearson upper
bounds on FPR and FNR (each at ``(1 - confidence) / 2``), so the reported figure is a
valid lower bound at the stated confidence, not an optimistic point estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.stats import beta, mannwhitneyu

from fedrec.data.types import PlatformData
from fedrec.task import Examples, PlatformTask


@dataclass
class CanarySet:
    """Canary users appended to a platform.

    Attributes
    ----------
    data : PlatformData
        The platform with all ``2m`` canaries appended after its real users.
    real_users : int
        Users of the original platform (canaries are ``real_users ..``).
    members : numpy.ndarray
        User indices of the canaries that are trained on.
    non_members : numpy.ndarray
        User indices of the canaries that never are.
    """

    data: PlatformData
    real_users: int
    members: np.ndarray
    non_members: np.ndarray


def add_canaries(data: PlatformData, per_side: int, history_len: int = 10, seed: int = 0) -> CanarySet:
    """Append ``2 * per_side`` canary users with random histories of catalogue items.

    Each canary's train history is ``history_len + 1`` distinct random items (its
    valid and test items are two more); members and non-members are built the same way
    and assigned at random, so the attack cannot tell them apart by construction.

    Raises
    ------
    ValueError
        If the catalogue is too small for the histories.
    """
    need = history_len + 3
    if data.num_items < need or per_side < 1:
        raise ValueError(f"need per_side >= 1 and a catalogue of >= {need} items, got {per_side}, {data.num_items}")
    rng = np.random.default_rng(seed)
    n = 2 * per_side
    seqs = [rng.choice(data.num_items, size=need, replace=False) for _ in range(n)]
    taken = set(data.user_ids)
    names = [f"canary-{seed}-{i}" for i in range(n)]
    if taken & set(names):
        raise ValueError("canary ids collide with real user ids")
    aug = replace(
        data,
        user_ids=[*data.user_ids, *names],
        train=[*data.train, *(s[:-2].astype(np.int64) for s in seqs)],
        valid=np.concatenate([data.valid, [int(s[-2]) for s in seqs]]).astype(data.valid.dtype),
        test=np.concatenate([data.test, [int(s[-1]) for s in seqs]]).astype(data.test.dtype),
        friends=None,
    )
    order = rng.permutation(n) + data.num_users
    return CanarySet(aug, data.num_users, np.sort(order[:per_side]), np.sort(order[per_side:]))


@dataclass
class _Rows:
    examples: Examples
    tok: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor


def _rows(task: PlatformTask) -> _Rows:
    return _Rows(task.examples, task.user_tok, task.user_mask, task.user_hidden)


def _set_rows(task: PlatformTask, rows: _Rows, keep: np.ndarray) -> None:
    idx = np.flatnonzero(keep)
    ex = rows.examples
    task.examples = Examples(ex.users[idx], ex.targets[idx], [ex.histories[i] for i in idx])
    t = torch.as_tensor(idx)
    task.user_tok, task.user_mask, task.user_hidden = rows.tok[t], rows.mask[t], rows.hidden[t]


class CanaryTask:
    """Switches a task built on :attr:`CanarySet.data` between training and scoring views.

    Parameters
    ----------
    task : PlatformTask
        Built on the canary-augmented data (all canaries' examples included).
    canaries : CanarySet
        Which users are members.
    """

    def __init__(self, task: PlatformTask, canaries: CanarySet) -> None:
        self.task, self.canaries = task, canaries
        self.full = _rows(task)
        users = self.full.examples.users
        self.train_mask = ~np.isin(users, canaries.non_members)  # real users and members

    def training_view(self) -> PlatformTask:
        """The task with the non-member canaries' examples removed (never trained on)."""
        _set_rows(self.task, self.full, self.train_mask)
        return self.task

    @torch.no_grad()
    def scores(self, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """``(member scores, non-member scores)``: minus each canary's mean loss over its examples."""
        _set_rows(self.task, self.full, np.ones(len(self.full.examples), dtype=bool))
        task = self.task
        task.model.eval()
        task.refresh_index()
        users = task.examples.users
        rows = np.flatnonzero(users >= self.canaries.real_users)
        losses = np.empty(len(rows))
        everything = np.arange(task.data.num_items)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            losses[start : start + len(chunk)] = task.model(**task.batch(chunk, everything)).float().numpy()
        per_user = {u: float(losses[users[rows] == u].mean()) for u in np.unique(users[rows])}
        member = np.array([-per_user[u] for u in self.canaries.members])
        non = np.array([-per_user[u] for u in self.canaries.non_members])
        return member, non


def attack_auc(member: np.ndarray, non_member: np.ndarray) -> float:
    """AUC of the score as a membership classifier (higher score = member): U / (n1 n2)."""
    u = mannwhitneyu(member, non_member, alternative="two-sided").statistic
    return float(u / (len(member) * len(non_member)))


def _upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound of a rate with ``k`` of ``n`` at level ``alpha``."""
    return 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))


def epsilon_bound(fpr_hi: float, fnr_hi: float, delta: float) -> float:
    """``max(0, log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))`` for upper bounds of the rates."""
    best = 0.0
    for a, b in ((fpr_hi, fnr_hi), (fnr_hi, fpr_hi)):
        if 1 - delta - a > 0 and b > 0:
            best = max(best, math.log((1 - delta - a) / b))
    return best


def empirical_epsilon(
    member: np.ndarray, non_member: np.ndarray, delta: float = 1e-5, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Epsilon lower bound of a threshold attack, threshold chosen on a held-out half.

    Parameters
    ----------
    member, non_member : numpy.ndarray
        Attack scores (higher = member).
    delta : float, default 1e-5
        The delta of the guarantee under audit.
    confidence : float, default 0.95
        Confidence of the bound (split over the FPR and FNR bounds).
    seed : int, default 0
        Seed of the split into threshold-selection and evaluation halves.

    Returns
    -------
    dict
        ``epsilon_lb``, ``threshold``, ``fpr``, ``fnr`` (evaluation half, point values)
        and ``n_eval`` (canaries per side in the evaluation half).
    """
    rng = np.random.default_rng(seed)
    m, n = rng.permutation(member), rng.permutation(non_member)
    m_sel, m_eval = m[: len(m) // 2], m[len(m) // 2 :]
    n_sel, n_eval = n[: len(n) // 2], n[len(n) // 2 :]
    alpha = (1 - confidence) / 2

    def bound(t: float, mem: np.ndarray, non: np.ndarray) -> tuple[float, float, float]:
        fp, fn = int((non >= t).sum()), int((mem < t).sum())
        eps = epsilon_bound(_upper(fp, len(non), alpha), _upper(fn, len(mem), alpha), delta)
        return eps, fp / len(non), fn / len(mem)

    candidates = np.unique(np.concatenate([m_sel, n_sel]))
    best_t = max(candidates, key=lambda t: bound(float(t), m_sel, n_sel)[0]) if len(candidates) else 0.0
    eps, fpr, fnr = bound(float(best_t), m_eval, n_eval)
    return {"epsilon_lb": eps, "threshold": float(best_t), "fpr": fpr, "fnr": fnr, "n_eval": float(len(m_eval))}


def audit_report(
    member: np.ndarray, non_member: np.ndarray, delta: float, confidence: float, seed: int = 0
) -> dict[str, Any]:
    """AUC and the epsilon lower bound of one model's canary scores."""
    return {
        "auc": attack_auc(member, non_member),
        **empirical_epsilon(member, non_member, delta, confidence, seed),
        "member_loss": float(-member.mean()),
        "non_member_loss": float(-non_member.mean()),
    }
