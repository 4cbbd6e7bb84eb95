"""Byzantine-robust aggregation of adapter states: coordinate-wise median, trimmed mean, Krum.

``federation.robust`` replaces the weighted mean of the accepted updates by a statistic
that a minority of arbitrary updates cannot drag far (the bounds of
:mod:`fedrec.federated.robust` still apply first). The three are computed as Flower's
own strategies compute them (``flwr.serverapp.strategy.FedMedian``, ``FedTrimmedAvg``,
``Krum``; the tests compare them on the same inputs), on fedrec's adapter states, so the
library stays free of Flower:

``median``
    The coordinate-wise median of every tensor over the updates.
``trimmed_mean``
    Per coordinate, the ``int(f * n)`` smallest and largest values dropped, the rest
    averaged (``f`` = ``federation.robust_trim_fraction``).
``krum``
    The one update whose summed squared distance to its ``max(1, n - b - 2)`` nearest
    others is smallest (``b`` = ``federation.robust_byzantine``).

All three ignore the example counts (an inflated claim buys nothing). They suit
``fedavg`` and ``ffa`` (tensors averaged one by one), not ``svd`` (refused by
:func:`fedrec.config.checks.validate_robust`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ROBUST = ("none", "median", "trimmed_mean", "krum")

State = Mapping[str, np.ndarray]


def _stack(states: Sequence[State], name: str) -> np.ndarray:
    return np.stack([np.asarray(s[name]) for s in states])


def median(states: Sequence[State]) -> dict[str, np.ndarray]:
    """Coordinate-wise median of every tensor (``np.median`` over the updates), in the first state's dtype."""
    return {name: np.median(_stack(states, name), axis=0).astype(ref.dtype) for name, ref in states[0].items()}


def trimmed_mean(states: Sequence[State], fraction: float) -> dict[str, np.ndarray]:
    """Coordinate-wise mean after dropping ``int(fraction * n)`` values at each end.

    Parameters
    ----------
    states : sequence of mapping
        The accepted updates (identical names and shapes).
    fraction : float
        The share dropped at each end, in [0, 0.5).

    Returns
    -------
    dict
        The trimmed mean of every tensor, in the first state's dtype.

    Raises
    ------
    ValueError
        On a fraction outside [0, 0.5).
    """
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"federation.robust_trim_fraction must be in [0, 0.5), got {fraction}")
    n = len(states)
    low = int(fraction * n)
    high = n - low
    out = {}
    for name, ref in states[0].items():
        part = np.partition(_stack(states, name), (low, high - 1), axis=0)
        out[name] = np.mean(part[low:high], axis=0).astype(ref.dtype)
    return out


def krum_scores(states: Sequence[State], byzantine: int) -> np.ndarray:
    """Each update's Krum score: its summed squared L2 distances to its ``max(1, n - byzantine - 2)`` nearest others."""
    names = list(states[0])
    flat = np.stack([np.concatenate([np.asarray(s[k]).ravel() for k in names]) for s in states])
    sq = np.square(flat).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * flat @ flat.T  # as Flower computes it (in the states' dtype)
    closest = max(1, len(states) - byzantine - 2)
    return np.array([np.sum(row[np.argsort(row)[1 : closest + 1]]) for row in dist])


def krum(states: Sequence[State], byzantine: int) -> tuple[dict[str, np.ndarray], int]:
    """The update with the lowest Krum score (:func:`krum_scores`) and its index.

    Raises
    ------
    ValueError
        On a negative ``byzantine``.
    """
    if byzantine < 0:
        raise ValueError(f"federation.robust_byzantine must be >= 0, got {byzantine}")
    best = int(np.argsort(krum_scores(states, byzantine))[0])
    return {k: np.array(v, copy=True) for k, v in states[best].items()}, best


def robust_aggregate(
    rule: str, states: Sequence[State], trim_fraction: float = 0.2, byzantine: int = 0
) -> tuple[dict[str, np.ndarray], str]:
    """Aggregate ``states`` with the robust ``rule`` (one of :data:`ROBUST` but ``none``).

    Returns
    -------
    tuple
        The aggregate and a note for the log (which rule, over how many updates; Krum's pick).

    Raises
    ------
    ValueError
        On an unknown rule, no states, or a bad parameter.
    """
    if not states:
        raise ValueError("nothing to aggregate: no accepted update")
    n = len(states)
    if rule == "median":
        return median(states), f"coordinate-wise median of {n} updates"
    if rule == "trimmed_mean":
        cut = int(trim_fraction * n)
        return trimmed_mean(states, trim_fraction), f"trimmed mean of {n} updates ({cut} dropped at each end)"
    if rule == "krum":
        state, best = krum(states, byzantine)
        return state, f"krum picked update {best + 1} of {n} (f={byzantine})"
    raise ValueError(f"federation.robust must be one of {list(ROBUST)}, got {rule!r}")
