"""Maximal marginal relevance: re-rank a top list for diversity (Carbonell & Goldstein, 1998)."""

from __future__ import annotations

import numpy as np


def mmr(relevance: np.ndarray, similarity: np.ndarray, k: int, mmr_lambda: float = 1.0) -> list[int]:
    """Pick ``k`` candidates greedily by ``lambda * relevance - (1 - lambda) * max similarity to the picked``.

    Parameters
    ----------
    relevance : numpy.ndarray
        ``[n]`` relevance of each candidate (any scale: min-max normalised to [0, 1] here,
        so that it is comparable with a cosine similarity).
    similarity : numpy.ndarray
        ``[n, n]`` candidate-candidate similarity (cosine of item text vectors).
    k : int
        Number of candidates to return (at most ``n``).
    mmr_lambda : float, default 1.0
        1 = pure relevance (the plain top-k); lower values trade relevance for diversity.

    Returns
    -------
    list of int
        Indices into the candidates, in pick order.

    Raises
    ------
    ValueError
        If ``mmr_lambda`` is outside [0, 1] or the shapes disagree.
    """
    if not 0.0 <= mmr_lambda <= 1.0:
        raise ValueError(f"mmr_lambda must be in [0, 1], got {mmr_lambda}")
    rel = np.asarray(relevance, dtype=np.float64)
    n = rel.shape[0]
    if similarity.shape != (n, n):
        raise ValueError(f"similarity has shape {similarity.shape}, expected {(n, n)}")
    k = min(k, n)
    if mmr_lambda == 1.0 or n == 0:
        return [int(i) for i in np.argsort(-rel, kind="stable")[:k]]
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(free, mmr_lambda * rel - (1.0 - mmr_lambda) * penalty, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        free[best] = False
        max_sim = np.maximum(max_sim, similarity[best])
    return picked
