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
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy.stats import beta, mannwhitneyu

from fedrec.data.types import PlatformData
from fedrec.model.lower_cache import lower_states
from fedrec.task import Examples, PlatformTask, recent_ids

log = logging.getLogger("fedrec.audit")

#: Views of the trained model the membership test can attack.
ATTACKS = ("full", "adapter")

#: What each attack's score is computed from (printed beside the results).
ATTACK_PARAMETERS = {
    "full": "LoRA adapter + platform head (item-ID embeddings): the platform's whole trained model; the head stays "
    "on the platform but DP-SGD covers it",
    "adapter": "LoRA adapter only (text score, frozen public backbone): exactly what the platform sends",
}


# -- canaries ------------------------------------------------------------------------------


@dataclass
class Canaries:
    """Synthetic users for one platform, half of them members of the training set.

    Attributes
    ----------
    user_ids : list of str
        Raw ids (``"<prefix>-<k>"``), none equal to a real user's id.
    users : numpy.ndarray
        ``[2m]`` internal user indices, ``num_users + k`` (after the real users).
    histories : list of numpy.ndarray
        Per canary, ``history_len`` distinct catalogue items (oldest first).
    targets : numpy.ndarray
        ``[2m]`` per canary, an item outside its history: the audited example's target.
    member : numpy.ndarray
        ``[2m]`` bool, True for the canaries that are trained on.
    """

    user_ids: list[str]
    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    member: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def members(self) -> np.ndarray:
        """Positions (into this object's arrays) of the member canaries."""
        return np.flatnonzero(self.member)

    @property
    def nonmembers(self) -> np.ndarray:
        """Positions of the non-member canaries."""
        return np.flatnonzero(~self.member)


def make_canaries(
    data: PlatformData, per_side: int, history_len: int, seed: int = 0, prefix: str = "canary"
) -> Canaries:
    """``2 * per_side`` canary users for ``data``'s catalogue, a random half of them members.

    Parameters
    ----------
    data : PlatformData
        The platform (only its catalogue size and user ids are read).
    per_side : int
        Members (and non-members), at least 2 (the audit splits each side in halves).
    history_len : int
        Items in each canary's history, ``1 <= history_len < num_items``.
    seed : int, default 0
        Seed of the histories, targets and the member draw (public randomness).
    prefix : str, default "canary"
        Raw id prefix; underscores are prepended until no real user id starts a collision.

    Returns
    -------
    Canaries

    Raises
    ------
    ValueError
        On ``per_side < 2`` or a history length the catalogue cannot supply.
    """
    if per_side < 2:
        raise ValueError(f"audit needs at least 2 canaries per side, got {per_side}")
    if not 1 <= history_len < data.num_items:
        raise ValueError(
            f"canary history length must be in [1, {data.num_items - 1}] (catalogue of {data.name} has "
            f"{data.num_items} items), got {history_len}"
        )
    rng = np.random.default_rng(seed)
    n = 2 * per_side
    picks = [rng.choice(data.num_items, size=history_len + 1, replace=False).astype(np.int64) for _ in range(n)]
    member = np.zeros(n, dtype=bool)
    member[rng.permutation(n)[:per_side]] = True
    taken = set(data.user_ids)
    while any(f"{prefix}-{k}" in taken for k in range(n)):
        prefix = "_" + prefix
    return Canaries(
        user_ids=[f"{prefix}-{k}" for k in range(n)],
        users=data.num_users + np.arange(n, dtype=np.int64),
        histories=[p[:-1] for p in picks],
        targets=np.array([p[-1] for p in picks], dtype=np.int64),
        member=member,
    )


def canary_examples(canaries: Canaries, per_canary: int) -> Examples:
    """Training examples of the member canaries.

    A canary's sequence is its history followed by its target; like a real user on a
    time-ordered platform, its examples are the last ``per_canary`` positions ``t >= 1``
    (item ``t`` predicted from the items before it). The last one -- the target from the
    whole history -- is always among them: it is the audited example.

    Parameters
    ----------
    canaries : Canaries
        The canaries (only members get examples).
    per_canary : int
        Examples per member canary, ``>= 1``.
    """
    if per_canary < 1:
        raise ValueError(f"examples per canary must be >= 1, got {per_canary}")
    users, targets, hists = [], [], []
    for k in canaries.members:
        seq = np.append(canaries.histories[k], canaries.targets[k])
        for t in range(max(1, len(seq) - per_canary), len(seq)):
            users.append(int(canaries.users[k]))
            targets.append(int(seq[t]))
            hists.append(seq[:t])
    return Examples(np.array(users, dtype=np.int64), np.array(targets, dtype=np.int64), hists)


def _pad_columns(t: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dimension 1 of ``t`` with zeros to ``length``."""
    if t.shape[1] >= length:
        return t
    pad = torch.zeros((t.shape[0], length - t.shape[1], *t.shape[2:]), dtype=t.dtype)
    return torch.cat([t, pad], dim=1)


def _join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    length = max(a.shape[1], b.shape[1])
    return torch.cat([_pad_columns(a, length), _pad_columns(b, length)])


def insert_canaries(task: PlatformTask, canaries: Canaries, per_canary: int) -> int:
    """Append the member canaries' training examples to ``task`` (in place); returns the rows added.

    The examples, their user-text tokens and their frozen lower-layer states are appended
    to the task's (computed here, not cached on disk); the task's ``data`` -- and so its
    evaluation -- is unchanged. The DP sampler and :func:`~fedrec.privacy.dpsgd.count_users`
    then see ``num_users + m`` users.

    Raises
    ------
    ValueError
        If the task already holds examples of a user id the canaries use (inserted twice,
        or ids colliding with real users).
    """
    if np.isin(canaries.users, task.examples.users).any() or canaries.users.min() < task.data.num_users:
        raise ValueError("canary user indices collide with users already in the task (canaries inserted twice?)")
    ex = canary_examples(canaries, per_canary)
    tok, mask = task.inputs.users(ex.histories, ex.users.tolist())
    hidden = lower_states(task.encoder, tok, mask, progress=False)
    old = task.examples
    task.examples = Examples(
        np.concatenate([old.users, ex.users]),
        np.concatenate([old.targets, ex.targets]),
        [*old.histories, *ex.histories],
    )
    task.user_tok = _join(task.user_tok, tok)
    task.user_mask = _join(task.user_mask, mask)
    task.user_hidden = _join(task.user_hidden, hidden)
    return len(ex)


@dataclass
class CanaryInputs:
    """Model inputs of every canary's audited example (target from the whole history)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    hist_ids: torch.Tensor
    hist_mask: torch.Tensor


def canary_inputs(task: PlatformTask, canaries: Canaries) -> CanaryInputs:
    """Lower-layer states and ID histories of the canaries' audited examples.

    The lower layers are frozen (no adapters), so these are computed once and serve
    every trained model.
    """
    tok, mask = task.inputs.users(canaries.histories, canaries.users.tolist())
    hidden = lower_states(task.encoder, tok, mask, progress=False)
    hist_ids, hist_mask = recent_ids(canaries.histories, task.history_ids)
    return CanaryInputs(hidden, mask, hist_ids, hist_mask)


@torch.no_grad()
def canary_losses(
    task: PlatformTask,
    canaries: Canaries,
    attack: str = "full",
    inputs: CanaryInputs | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Full-catalogue softmax loss of each canary's target given its history, under ``task``'s model.

    The candidates are the whole catalogue minus the canary's history items (as in
    evaluation).

    Parameters
    ----------
    task : PlatformTask
        The (trained) model and catalogue.
    canaries : Canaries
        All canaries (members and non-members).
    attack : {"full", "adapter"}, default "full"
        ``full`` scores with the text and the ID terms; ``adapter`` with the text term
        only (what the LoRA adapter alone determines).
    inputs : CanaryInputs, optional
        Precomputed :func:`canary_inputs` (default: computed here).
    batch_size : int, default 256
        Canaries per forward pass.

    Returns
    -------
    numpy.ndarray
        ``[2m]`` float64 losses, in the canaries' order.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {list(ATTACKS)}, got {attack!r}")
    inputs = inputs if inputs is not None else canary_inputs(task, canaries)
    was_training = task.model.training
    task.model.eval()
    index = task.refresh_index()
    out = []
    for start in range(0, len(canaries), batch_size):
        sl = slice(start, min(len(canaries), start + batch_size))
        u_text, u_id = task.model.user_vectors(
            inputs.hidden[sl], inputs.mask[sl], inputs.hist_ids[sl], inputs.hist_mask[sl]
        )
        scores = task.model.scores(u_text.float(), None if attack == "adapter" else u_id, index.float()).double()
        rows = torch.arange(scores.shape[0])
        target = torch.as_tensor(canaries.targets[sl])
        target_scores = scores[rows, target]
        for r, k in enumerate(range(sl.start, sl.stop)):
            scores[r, torch.as_tensor(canaries.histories[k])] = -math.inf
        out.append((torch.logsumexp(scores, 1) - target_scores).numpy())
    task.model.train(was_training)
    return np.concatenate(out)


# -- statistics ----------------------------------------------------------------------------


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: no scores")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: scores must be finite")
    return a


def attack_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """AUC of "member if score is high": ``P(member score > non-member score)``, ties counted half.

    The Mann-Whitney statistic of the members, ``U / (n_members * n_nonmembers)``
    (:func:`scipy.stats.mannwhitneyu`).
    """
    m, n = _scores(member_scores, "member scores"), _scores(nonmember_scores, "non-member scores")
    return float(mannwhitneyu(m, n).statistic) / (len(m) * len(n))


def clopper_pearson(k: Any, n: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval ``(lo, hi)`` of a binomial rate with ``k`` successes in ``n``.

    Each end fails with probability at most ``(1 - confidence) / 2`` (the "exact" interval
    of :func:`statsmodels.stats.proportion.proportion_confint` with ``method="beta"``, the
    one Jagielski et al. and Nasr et al. use).

    Parameters
    ----------
    k, n : int or array of int
        Successes and trials (``0 <= k <= n``, ``n >= 1``).
    confidence : float, default 0.95
        Two-sided confidence level in ``(0, 1)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError("Clopper-Pearson needs 0 <= k <= n and n >= 1")
    alpha = 1.0 - confidence
    lo = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return lo, hi


def epsilon_from_rates(fpr: Any, fnr: Any, delta: float = 1e-5) -> np.ndarray:
    """``max(log((1 - delta - fpr) / fnr), log((1 - delta - fnr) / fpr))`` clamped at 0 (elementwise).

    The epsilon an (epsilon, delta)-DP mechanism needs at least for a test with these
    error rates (use upper confidence bounds of the rates for a valid lower bound).
    """
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1.0 - delta - fpr, 0.0) / fnr)
        b = np.log(np.maximum(1.0 - delta - fnr, 0.0) / fpr)
    eps = np.fmax(a, b)
    return np.where(np.isnan(eps), 0.0, np.maximum(eps, 0.0))


@dataclass
class ThresholdBound:
    """The membership test "member if score >= threshold" on one set of canaries.

    Attributes
    ----------
    threshold : float
        The threshold.
    epsilon_lb : float
        Lower bound on epsilon at ``confidence`` from ``fpr_hi`` and ``fnr_hi``.
    fpr, fnr : float
        Empirical false-positive and false-negative rates.
    fpr_hi, fnr_hi : float
        Their Clopper-Pearson upper bounds.
    members, nonmembers : int
        Canaries on each side.
    """

    threshold: float
    epsilon_lb: float
    fpr: float
    fnr: float
    fpr_hi: float
    fnr_hi: float
    members: int
    nonmembers: int


def threshold_table(
    member_scores: Any,
    nonmember_scores: Any,
    thresholds: Any = None,
    delta: float = 1e-5,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Error rates, their upper bounds and ``epsilon_lb`` of "member if score >= t" for each threshold.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like
        Attack scores (higher = more likely a member).
    thresholds : array-like, optional
        Thresholds to evaluate (default: the midpoints between consecutive distinct
        scores -- every distinct split of the canaries, with the margin on both sides;
        the one distinct score itself when all scores are equal).
    delta : float, default 1e-5
        Delta of the guarantee being tested.
    confidence : float, default 0.95
        Confidence of each Clopper-Pearson bound.

    Returns
    -------
    dict of str to numpy.ndarray
        ``threshold, fp, fn, fpr, fnr, fpr_hi, fnr_hi, epsilon_lb``.
    """
    m = np.sort(_scores(member_scores, "member scores"))
    n = np.sort(_scores(nonmember_scores, "non-member scores"))
    if thresholds is None:
        values = np.unique(np.concatenate([m, n]))
        t = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values
    else:
        t = np.asarray(thresholds, dtype=np.float64)
    fp = len(n) - np.searchsorted(n, t, side="left")  # non-members with score >= t
    fn = np.searchsorted(m, t, side="left")  # members with score < t
    _, fpr_hi = clopper_pearson(fp, len(n), confidence)
    _, fnr_hi = clopper_pearson(fn, len(m), confidence)
    return {
        "threshold": t,
        "fp": fp,
        "fn": fn,
        "fpr": fp / len(n),
        "fnr": fn / len(m),
        "fpr_hi": fpr_hi,
        "fnr_hi": fnr_hi,
        "epsilon_lb": epsilon_from_rates(fpr_hi, fnr_hi, delta),
    }


def _bound_at(table: dict[str, np.ndarray], i: int, members: int, nonmembers: int) -> ThresholdBound:
    return ThresholdBound(
        threshold=float(table["threshold"][i]),
        epsilon_lb=float(table["epsilon_lb"][i]),
        fpr=float(table["fpr"][i]),
        fnr=float(table["fnr"][i]),
        fpr_hi=float(table["fpr_hi"][i]),
        fnr_hi=float(table["fnr_hi"][i]),
        members=members,
        nonmembers=nonmembers,
    )


def best_threshold(
    member_scores: Any, nonmember_scores: Any, delta: float = 1e-5, confidence: float = 0.95
) -> ThresholdBound:
    """The threshold with the largest ``epsilon_lb`` on these canaries (ties: largest TPR - FPR, then lowest).

    Candidates are the midpoints between consecutive distinct scores (see
    :func:`threshold_table`), so a threshold never sits on a canary's score.

    Optimistic as a bound on these same canaries (the threshold is chosen after looking at
    them); :func:`split_epsilon_lower_bound` evaluates it on fresh canaries.
    """
    table = threshold_table(member_scores, nonmember_scores, None, delta, confidence)
    youden = 1.0 - table["fnr"] - table["fpr"]
    i = int(np.lexsort((-table["threshold"], youden, table["epsilon_lb"]))[-1])
    return _bound_at(table, i, len(np.ravel(member_scores)), len(np.ravel(nonmember_scores)))


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``range(n)`` into a selection half (``n // 2``) and an evaluation half (the rest)."""
    perm = rng.permutation(n)
    return perm[: n // 2], perm[n // 2 :]


def split_epsilon_lower_bound(
    member_scores: Any,
    nonmember_scores: Any,
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[ThresholdBound, ThresholdBound]:
    """``epsilon_lb`` with the threshold chosen on one half of the canaries and evaluated on the other.

    Each side is split at random (``seed``) into a selection half and an evaluation half;
    :func:`best_threshold` on the selection half fixes the threshold, and the bound is
    computed from the evaluation half only, so it is valid at ``confidence``.

    Returns
    -------
    (ThresholdBound, ThresholdBound)
        The bound on the evaluation half (the result) and the selection half's (how the
        threshold was chosen).

    Raises
    ------
    ValueError
        With fewer than 2 scores on a side.
    """
    m, n = _scores(member_scores, "member scores"), _scores(nonmember_scores, "non-member scores")
    if len(m) < 2 or len(n) < 2:
        raise ValueError(f"need at least 2 members and 2 non-members to split, got {len(m)} and {len(n)}")
    rng = np.random.default_rng(seed)
    (m_sel, m_eval), (n_sel, n_eval) = halves(len(m), rng), halves(len(n), rng)
    chosen = best_threshold(m[m_sel], n[n_sel], delta, confidence)
    table = threshold_table(m[m_eval], n[n_eval], [chosen.threshold], delta, confidence)
    return _bound_at(table, 0, len(m_eval), len(n_eval)), chosen


def epsilon_ceiling(members: int, nonmembers: int, delta: float = 1e-5, confidence: float = 0.95) -> float:
    """The largest ``epsilon_lb`` ``members`` and ``nonmembers`` canaries can show (a perfect attack)."""
    table = threshold_table(np.ones(members), np.zeros(nonmembers), [1.0], delta, confidence)
    return float(table["epsilon_lb"][0])


@dataclass
class MembershipAudit:
    """Result of the membership test on one model.

    Attributes
    ----------
    auc : float
        Attack AUC over all canaries.
    epsilon_lb : float
        Lower bound on epsilon: threshold chosen on the selection half, bound on the
        evaluation half (valid at ``confidence``).
    epsilon_lb_max : float
        Max over thresholds of the bound on all canaries (optimistic: threshold chosen
        on the same canaries).
    ceiling : float
        Largest ``epsilon_lb`` the evaluation half could show (perfect separation).
    evaluation : ThresholdBound
        The test on the evaluation half.
    selection : ThresholdBound
        The test on the selection half (where the threshold was chosen).
    confidence : float
        Confidence of each rate bound.
    delta : float
        Delta of the tested guarantee.
    """

    auc: float
    epsilon_lb: float
    epsilon_lb_max: float
    ceiling: float
    evaluation: ThresholdBound
    selection: ThresholdBound
    confidence: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def membership_audit(
    member_scores: Any, nonmember_scores: Any, delta: float = 1e-5, confidence: float = 0.95, seed: int = 0
) -> MembershipAudit:
    """AUC and epsilon lower bounds of "member if score >= threshold" (higher score = member).

    Parameters
    ----------
    member_scores, nonmember_scores : array-like
        Attack scores, e.g. minus the canaries' target losses.
    delta : float, default 1e-5
        Delta of the guarantee being tested.
    confidence : float, default 0.95
        Two-sided Clopper-Pearson confidence of each rate bound.
    seed : int, default 0
        Seed of the selection / evaluation split.
    """
    evaluation, selection = split_epsilon_lower_bound(member_scores, nonmember_scores, delta, confidence, seed)
    return MembershipAudit(
        auc=attack_auc(member_scores, nonmember_scores),
        epsilon_lb=evaluation.epsilon_lb,
        epsilon_lb_max=best_threshold(member_scores, nonmember_scores, delta, confidence).epsilon_lb,
        ceiling=epsilon_ceiling(evaluation.members, evaluation.nonmembers, delta, confidence),
        evaluation=evaluation,
        selection=selection,
        confidence=confidence,
        delta=delta,
    )


def bound_violation(model: str, attack: str, epsilon_lb: float, epsilon: float, confidence: float) -> str | None:
    """A message when the empirical lower bound exceeds the formal epsilon, else None."""
    if not epsilon_lb > epsilon:
        return None
    return (
        f"PRIVACY AUDIT FAILED: model {model!r}, attack {attack!r}: empirical epsilon lower bound "
        f"{epsilon_lb:.4g} > formal epsilon {epsilon:.4g} (each error-rate bound at confidence {confidence:g}). "
        "Either the DP-SGD implementation or its accounting is broken, or this is the rare statistical false "
        "alarm the confidence level allows: re-run with another audit.seed and more canaries before trusting "
        "the formal epsilon"
    )


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
            losses_out.setdefault(model, {})[attack] = {
                "member": np.round(losses[canaries.member], 5).tolist(),
                "nonmember": np.round(losses[~canaries.member], 5).tolist(),
            }
            member, nonmember = -losses[canaries.member], -losses[~canaries.member]
            result = membership_audit(member, nonmember, float(run_cfg.privacy.delta), float(a.confidence), int(a.seed))
            rows.append(
                {
                    "model": model,
                    "attack": attack,
                    "parameters": ATTACK_PARAMETERS[attack],
                    "epsilon": epsilon,
                    **result.to_dict(),
                    "member_loss": float(np.median(losses[canaries.member])),
                    "nonmember_loss": float(np.median(losses[~canaries.member])),
                    "test_NDCG@10": test["NDCG@10"],
                }
            )
            message = bound_violation(model, attack, result.epsilon_lb, epsilon, float(a.confidence))
            if message is not None:
                log.error(message)
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
        "threshold_choice": (
            "epsilon_lb: threshold chosen on a random half of the canaries, bound evaluated on the other half; "
            "epsilon_lb_max: max over thresholds on all canaries (optimistic)"
        ),
        "violations": violations,
        "losses": losses_out,
    }
