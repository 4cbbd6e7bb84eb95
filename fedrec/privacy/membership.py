"""The membership-inference statistics of the privacy audit: AUC, Clopper-Pearson, epsilon lower bounds.

See :mod:`fedrec.privacy.audit` ("Statistics") for the method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, mannwhitneyu


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
