"""Full-ranking evaluation under PROTOCOL.md.

The target is ranked against the whole catalogue except the items the model may use
as history (the train items; for test also the valid item);
``rank = 1 + #candidates scored strictly higher``. Written here rather than taken
from a metrics library because the protocol fixes this exact tie rule and
exclusion set, which ``torchmetrics``' retrieval metrics do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

from fedrec.data.types import PlatformData
from fedrec.metrics import K, metric_names

ScoreFn = Callable[[Sequence[int], str], torch.Tensor]
#: the key of one score variant (a blend weight, ``"served"``/``"shared"``, ...)
V = TypeVar("V", bound=Hashable)
#: ``fn(user_indices, split) -> {variant: [len(user_indices), n_items] scores}``
VariantScoreFn = Callable[[Sequence[int], str], Mapping[V, torch.Tensor]]


def check_finite(scores: torch.Tensor) -> None:
    """Refuse NaN and +inf scores (``-inf`` marks an excluded item and is allowed).

    With ``rank = 1 + #strictly higher``, a NaN target score outranks everything (every
    comparison with NaN is false): a model that produces NaN would count as perfect.

    Raises
    ------
    ValueError
        Naming the first rows with a NaN or +inf score.
    """
    bad = torch.isnan(scores) | torch.isposinf(scores)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(dim=1)).flatten()
        raise ValueError(
            f"non-finite scores (NaN or +inf) in {len(rows)} of {scores.shape[0]} rows (first: {rows[:5].tolist()}); "
            "a NaN target would rank first, so the metrics are refused"
        )


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: Sequence[np.ndarray]) -> torch.Tensor:
    """Rank of each row's target among the non-excluded columns.

    Parameters
    ----------
    scores : torch.Tensor
        ``[B, n_items]`` scores (higher is better).
    targets : torch.Tensor
        ``[B]`` target item per row.
    exclude : sequence of numpy.ndarray
        Per row, the items that are not candidates (the target itself is never
        excluded).

    Returns
    -------
    torch.Tensor
        ``[B]`` ranks, ``1 + #non-excluded items scored strictly higher than the target``.
    """
    scores = scores.clone() if scores.is_floating_point() else scores.double()
    check_finite(scores)
    rows = torch.arange(scores.shape[0])
    target_scores = scores[rows, targets]
    for r, items in enumerate(exclude):
        if len(items):
            scores[r, torch.as_tensor(items)] = -math.inf
    scores[rows, targets] = -math.inf  # the target does not outrank itself
    return 1 + (scores > target_scores[:, None]).sum(dim=1)


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor, k: int = K) -> dict[str, float]:
    """HR@k, NDCG@k and MRR averaged over users, plus the user count.

    Parameters
    ----------
    ranks : array-like of int
        1-based rank of each user's target.
    k : int, default 10
        Cut-off.
    """
    r = np.asarray(ranks, dtype=np.float64)
    hit = r <= k
    hr, ndcg, mrr, _ = metric_names(k)
    return {
        hr: float(hit.mean()) if len(r) else 0.0,
        ndcg: float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean()) if len(r) else 0.0,
        mrr: float((1.0 / r).mean()) if len(r) else 0.0,
        "users": len(r),
    }


def validation_users(num_users: int, max_users: int, seed: int = 0) -> list[int]:
    """The users scored in a round's validation: all, or a fixed random subset of ``max_users``.

    Parameters
    ----------
    num_users : int
        Users of the platform (or user shard).
    max_users : int
        Subset size (``<= 0`` or ``>= num_users``: every user).
    seed : int, default 0
        The subset depends on it alone, so every round scores the same users.

    Returns
    -------
    list of int
        Ascending user indices.
    """
    if max_users <= 0 or max_users >= num_users:
        return list(range(num_users))
    rng = np.random.default_rng([seed, num_users, max_users])
    return sorted(rng.choice(num_users, size=max_users, replace=False).tolist())


def excluded_items(data: PlatformData, user: int, split: str) -> np.ndarray:
    """Items that are not candidates for ``user`` on ``split``: its history for that split."""
    return data.history(user, split)


class RankingAccumulator:
    """Collects ranks, the softmax loss and the top-k lists over batches of users.

    One pass over the scores gives every figure the protocol reports: HR@k, NDCG@k,
    MRR, the mean full-catalogue softmax loss of the target (candidates = every item
    not excluded, the target always included) and catalogue coverage@k (the share of
    the catalogue that appears in at least one user's top-k, excluded items removed).

    Parameters
    ----------
    num_items : int
        Catalogue size (the denominator of coverage).
    k : int, default 10
        Cut-off of HR, NDCG and coverage.
    """

    def __init__(self, num_items: int, k: int = K) -> None:
        self.num_items, self.k = num_items, k
        self.ranks: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.shown = torch.zeros(num_items, dtype=torch.bool)

    def add(self, scores: torch.Tensor, targets: torch.Tensor, exclude: Sequence[np.ndarray]) -> None:
        """Score one batch: ``scores [B, num_items]``, ``targets [B]``, per-row excluded items."""
        scores = scores if scores.is_floating_point() else scores.double()
        self.ranks.append(target_ranks(scores, targets, exclude))
        rows = torch.arange(scores.shape[0])
        masked = scores.clone()
        for r, items in enumerate(exclude):
            if len(items):
                masked[r, torch.as_tensor(items)] = -math.inf
        masked[rows, targets] = scores[rows, targets]
        self.losses.append(torch.logsumexp(masked, 1) - masked[rows, targets])
        top = masked.topk(min(self.k, self.num_items), dim=1)
        self.shown[top.indices[torch.isfinite(top.values)]] = True

    def result(self) -> dict[str, float]:
        """``HR@k``, ``NDCG@k``, ``MRR``, ``users``, ``loss`` and ``coverage@k``."""
        ranks = torch.cat(self.ranks) if self.ranks else torch.zeros(0)
        out = metrics_from_ranks(ranks.numpy(), self.k)
        out["loss"] = float(torch.cat(self.losses).double().mean()) if self.losses else float("nan")
        out[metric_names(self.k)[3]] = float(self.shown.sum()) / max(1, self.num_items)
        return out


def evaluate_ranking_variants(
    data: PlatformData,
    split: str,
    score_fn: VariantScoreFn[V],
    variants: Sequence[V],
    batch_size: int = 256,
    users: Sequence[int] | None = None,
    loss: bool = False,
) -> dict[V, dict[str, float]]:
    """Full-ranking metrics of several score variants of one model, in one pass over the users.

    Every model's evaluation goes through here (or :func:`evaluate_rankings`, its one-variant
    form): the same candidate set (:func:`excluded_items`), tie rule and refusal of
    non-finite scores (:func:`check_finite`: a NaN target would rank first) for all.

    Parameters
    ----------
    data : PlatformData
        The platform.
    split : {"valid", "test"}
        Which held-out item to rank.
    score_fn : callable
        ``score_fn(user_indices, split) -> {variant: [len(user_indices), n_items] scores}``
        holding at least ``variants`` (e.g. the served model and the shared part alone, or
        one blend weight each); it may use only ``data.history(u, split)`` for each user.
    variants : sequence
        The variants to score.
    batch_size : int, default 256
        Users scored per call.
    users : sequence of int, optional
        Subset of users; defaults to all evaluated users.
    loss : bool, default False
        Report the mean full-catalogue softmax loss of the target (``"loss"``): for scores
        that are logits; a baseline's are not.

    Returns
    -------
    dict
        Per variant: ``HR@10``, ``NDCG@10``, ``MRR``, ``coverage@10``, ``users`` (see
        :class:`RankingAccumulator`) and, with ``loss``, ``loss``.

    Raises
    ------
    ValueError
        On a NaN or +inf score (:func:`check_finite`).
    """
    users = list(range(data.num_users)) if users is None else list(users)
    targets = data.target(split)
    accs = {v: RankingAccumulator(data.num_items) for v in variants}
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        exclude = [excluded_items(data, u, split) for u in chunk]
        scored = score_fn(chunk, split)
        for v, acc in accs.items():
            acc.add(scored[v], torch.as_tensor(targets[chunk]), exclude)
    out = {v: acc.result() for v, acc in accs.items()}
    if not loss:
        for m in out.values():
            del m["loss"]
    return out


def evaluate_rankings(
    data: PlatformData,
    split: str,
    score_fn: ScoreFn,
    batch_size: int = 256,
    users: Sequence[int] | None = None,
    loss: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of a scorer on one platform and split: :func:`evaluate_ranking_variants` of one variant.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(user_indices, split) -> [len(user_indices), n_items]`` scores; it
        may use only ``data.history(u, split)`` for each user.

    Returns
    -------
    dict
        ``HR@10``, ``NDCG@10``, ``MRR``, ``coverage@10``, ``users`` and, with ``loss``, ``loss``.

    Notes
    -----
    ``data``, ``split``, ``batch_size``, ``users`` and ``loss`` are those of
    :func:`evaluate_ranking_variants`.
    """

    def one(chunk: Sequence[int], split: str) -> dict[None, torch.Tensor]:
        return {None: score_fn(chunk, split)}

    return evaluate_ranking_variants(data, split, one, [None], batch_size, users, loss)[None]
