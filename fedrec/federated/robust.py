"""Poisoning resistance of the aggregation: a bound on each update's change, a cap on each client's weight.

FedAvg trusts two numbers a client sends: its adapter and its example count. A finite
adapter scaled by 1e30 or a claim of 1e12 examples takes the average over. Two
defences, both off by default and both applied by the server before aggregating
(:meth:`fedrec.federated.server.Coordinator.aggregate_train`):

``federation.update_norm_bound`` (with ``federation.update_norm_action``)
    The L2 norm of an update's change from the global adapter it started from, over
    every tensor it sends, is at most the bound: a larger update is rejected
    (``reject``) or scaled back onto the bound (``clip``: ``global + bound / norm *
    (update - global)``, the direction kept).
``federation.max_weight_share``
    No client's share of the aggregation weights exceeds the cap; the excess is handed
    to the other clients in proportion to their own weights (water-filling), so the
    shares still sum to one.

Nothing here knows about Flower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np

NormAction = Literal["clip", "reject"]
NORM_ACTIONS: tuple[NormAction, ...] = ("clip", "reject")

State = Mapping[str, np.ndarray]


def update_norm(state: State, reference: State) -> float:
    """L2 norm of ``state - reference`` over all of ``state``'s tensors (float64).

    Parameters
    ----------
    state : mapping
        A client's adapter (names a subset of ``reference``'s).
    reference : mapping
        The global adapter the client started from.

    Returns
    -------
    float
        ``sqrt(sum over tensors of ||state[k] - reference[k]||^2)``.
    """
    total = 0.0
    for name, arr in state.items():
        diff = np.asarray(arr, dtype=np.float64) - np.asarray(reference[name], dtype=np.float64)
        total += float(np.square(diff).sum())
    return float(np.sqrt(total))


def bound_update(
    state: State, reference: State, bound: float, action: str
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Apply the update norm bound to one client's adapter.

    Parameters
    ----------
    state : mapping
        The client's adapter (already validated: names, shapes, finite values).
    reference : mapping
        The global adapter the client started from.
    bound : float
        ``federation.update_norm_bound``: the largest allowed L2 norm of the change;
        ``<= 0`` turns the bound off.
    action : {"clip", "reject"}
        What happens to an update over the bound.

    Returns
    -------
    tuple
        ``(state, note)``: the state to aggregate (the input, or its clipped copy; None
        when rejected) and why it was changed or rejected (None when within the bound).

    Raises
    ------
    ValueError
        On an unknown action.
    """
    if action not in NORM_ACTIONS:
        raise ValueError(f"federation.update_norm_action must be one of {list(NORM_ACTIONS)}, got {action!r}")
    kept = {k: np.asarray(v) for k, v in state.items()}
    if bound <= 0:
        return kept, None
    norm = update_norm(state, reference)
    if norm <= bound:
        return kept, None
    why = f"update norm {norm:.4g} exceeds federation.update_norm_bound={bound:g}"
    if cast(NormAction, action) == "reject":
        return None, why
    scale = bound / norm
    clipped = {}
    for name, arr in kept.items():
        ref = np.asarray(reference[name], dtype=np.float64)
        clipped[name] = (ref + scale * (arr.astype(np.float64) - ref)).astype(arr.dtype)
    return clipped, f"{why}: clipped to the bound (scaled by {scale:.4g})"


def capped_shares(weights: Sequence[float], max_share: float) -> np.ndarray:
    """Normalised aggregation weights with no share above ``max_share``.

    Water-filling: every share over the cap is set to the cap and the excess is
    handed to the uncapped clients in proportion to their weights, repeated until no
    share exceeds the cap. When the cap cannot hold (``max_share * len(weights) < 1``:
    too few clients) every client gets ``1 / len(weights)``, the smallest possible
    largest share.

    Parameters
    ----------
    weights : sequence of float
        Positive, finite weights (example counts).
    max_share : float
        ``federation.max_weight_share`` in (0, 1]; 1 leaves the shares as they are.

    Returns
    -------
    numpy.ndarray
        Shares (float64) summing to one, in the order of ``weights``.

    Raises
    ------
    ValueError
        On no weights, a non-positive or non-finite weight, or a cap outside (0, 1].
    """
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"aggregation weights must be finite and > 0, got {list(weights)}")
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"federation.max_weight_share must be in (0, 1], got {max_share}")
    n = len(w)
    if max_share * n < 1.0:
        return np.full(n, 1.0 / n)
    shares = w / w.sum()
    capped = np.zeros(n, dtype=bool)
    while True:
        over = (shares > max_share * (1 + 1e-12)) & ~capped
        if not over.any():
            return shares
        capped |= over
        if capped.all():  # only by rounding: max_share * n == 1
            return np.full(n, 1.0 / n)
        free = 1.0 - max_share * capped.sum()
        shares = np.where(capped, max_share, free * w / w[~capped].sum())


def aggregation_weights(fed: Any, accepted: Sequence[Any], log: Callable[[int, str], Any]) -> list[float]:
    """The accepted updates' aggregation weights (``federation.weighting``: example counts, or 1 each).

    Capped at ``federation.max_weight_share`` of the total (:func:`capped_shares`); a capped
    client is logged through ``log(level, message)``.
    """
    if str(fed.get("weighting", "examples")) == "uniform":
        raw = [1.0] * len(accepted)
    else:
        raw = [float(u.num_examples) for u in accepted]
    cap = float(fed.get("max_weight_share", 1.0))
    if cap >= 1.0:
        return raw
    shares, before = capped_shares(raw, cap), np.asarray(raw) / sum(raw)
    for u, s, b in zip(accepted, shares, before, strict=True):
        if s < b - 1e-12:
            log(
                logging.WARNING,
                f"{u.name} (node {u.node}): aggregation weight share {b:.4g} capped to {s:.4g} "
                f"(federation.max_weight_share={cap:g}, {u.num_examples} examples reported)",
            )
    return [float(s) for s in shares]
