"""A platform-local prior blended into the served score (EASE), its weight chosen on valid.

The served score of a user is ``(1 - w) z(model) + w z(prior)``, each z-scored over the
catalogue per user, so neither scale dominates; ``w`` is picked on the platform's own
validation split from a grid (``w = 0``: the model alone; ``1``: the prior alone). The prior
is fit on the platform's training data and never leaves it: the shared (DP) part is trained
before and without it, so it cannot void the shared part's guarantee (docs/PRIVACY.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedrec.data.types import PlatformData

#: ``prior(users, split) -> [len(users), n_items]`` scores of the users' ``split`` histories
PriorFn = Callable[[Sequence[int], str], torch.Tensor]


def zscore(scores: torch.Tensor) -> torch.Tensor:
    """Scores standardised per row (float32); a constant row becomes zeros."""
    s = scores.float()
    mean, std = s.mean(dim=1, keepdim=True), s.std(dim=1, keepdim=True)
    return (s - mean) / std.clamp_min(1e-12)


def blend(model: torch.Tensor, prior: torch.Tensor, weight: float) -> torch.Tensor:
    """``(1 - weight) z(model) + weight z(prior)``."""
    if weight == 0.0:
        return model.float()
    if weight == 1.0:
        return prior.float()
    return (1.0 - weight) * zscore(model) + weight * zscore(prior)


@dataclass
class Prior:
    """A fitted prior and its blend weight.

    Attributes
    ----------
    name : str
        ``"ease"``.
    scores : PriorFn
        The prior's scorer.
    weight : float
        The chosen blend weight.
    info : dict
        How it was chosen (``lambda``, the valid NDCG@10 of every weight, seconds).
    """

    name: str
    scores: PriorFn
    weight: float = 0.0
    info: dict = field(default_factory=dict)


def fit_ease_prior(
    data: PlatformData, lambdas: Sequence[float], batch_size: int = 256, cache_dir: str | Path | None = None
) -> Prior:
    """EASE on the platform's training data, λ chosen on its valid split (:func:`fedrec.baselines.ease.fit_ease`).

    ``cache_dir`` keeps the fit on the platform's own disk (it is derived from its data).
    """
    from fedrec.baselines.ease import fit_ease

    model, info = fit_ease(data, list(lambdas), batch_size=batch_size, cache_dir=cache_dir)
    return Prior("ease", model, 0.0, {"lambda": info["lambda"], "ease_seconds": info.get("seconds")})
