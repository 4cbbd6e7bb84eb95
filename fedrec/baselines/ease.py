"""EASE (Steck 2019) under PROTOCOL.md, with λ chosen on the valid split.

``B = I - P / diag(P)`` (column ``j`` divided by ``P_jj``) with ``P = (XᵀX + λI)⁻¹`` on the
binary train matrix ``X``; the diagonal of ``B`` is zero by construction (and zeroed
explicitly when ``B`` is formed). A user's score is ``x_user · B`` with ``x_user`` the binary
history of the split (train items; for test also the valid item).

One factorisation serves every λ: with ``V`` an orthonormal basis of ``X``'s row space and
``e`` the non-zero eigenvalues of ``G = XᵀX`` (``G = V diag(e) Vᵀ``),

    P = (I - V diag(e / (e + λ)) Vᵀ) / λ,

exactly (on the complement of the row space ``G`` is zero, so ``P`` is ``I / λ`` there).
``V`` comes from the eigendecomposition of the smaller Gram matrix, ``XᵀX`` or ``XXᵀ``
(then ``V = Xᵀ U diag(e^-1/2)``), so on social (1,883 users, 17,632 items) it is a
1,883 x 1,883 problem, and neither ``P`` nor ``B`` is ever formed to score: per λ,
``x P = (x - ((x V) diag(e / (e + λ))) Vᵀ) / λ`` and ``diag(P) = (1 - Σ_k V_ik² e_k / (e_k + λ)) / λ``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrec.baselines.matrix import history_matrix, train_matrix
from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_ranking_variants
from fedrec.io import save_torch
from fedrec.metrics import NDCG

log = logging.getLogger("fedrec.baselines")

#: PROTOCOL.md's grid of λ (social: :data:`SOCIAL_LAMBDAS`)
EASE_LAMBDAS = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
SOCIAL_LAMBDAS = (300.0, 1000.0)


class EASE:
    """EASE scores for any λ from one eigendecomposition of the train Gram matrix.

    Parameters
    ----------
    data : PlatformData
        The platform; only ``data.train`` enters the model.
    lam : float, default 200.0
        The λ used by :meth:`__call__` (set it with :meth:`set_lambda` or :func:`fit_ease`).

    Attributes
    ----------
    basis : torch.Tensor
        ``[n_items, r]`` float64 orthonormal basis ``V`` of the train matrix's row space.
    eigenvalues : torch.Tensor
        ``[r]`` float64 eigenvalues ``e > 0`` of ``XᵀX`` on that basis.
    """

    def __init__(self, data: PlatformData, lam: float = 200.0) -> None:
        self.data = data
        self.eigenvalues, self.basis = self.factor(data)
        self.lam = self.set_lambda(lam)

    @classmethod
    def from_factors(cls, data: PlatformData, eigenvalues: torch.Tensor, basis: torch.Tensor, lam: float) -> EASE:
        """An EASE of a factorisation computed before (:func:`fit_ease`'s cache)."""
        model = cls.__new__(cls)
        model.data, model.eigenvalues, model.basis = data, eigenvalues, basis
        model.set_lambda(lam)
        return model

    @staticmethod
    def factor(data: PlatformData) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e, V)``: the non-zero eigenvalues of ``XᵀX`` and an orthonormal basis of ``X``'s row space."""
        x = torch.from_numpy(train_matrix(data).toarray())  # float64, binary
        if x.shape[0] < x.shape[1]:  # thin: eigendecompose the user Gram XXᵀ
            e, u = torch.linalg.eigh(x @ x.T)
            keep = e > e.max().clamp_min(1.0) * x.shape[1] * torch.finfo(e.dtype).eps
            e, u = e[keep], u[:, keep]
            v = (x.T @ u) / e.sqrt()
        else:
            e, v = torch.linalg.eigh(x.T @ x)
            e = e.clamp_min(0.0)  # G is positive semi-definite; round-off can dip below 0
        return e, v

    def set_lambda(self, lam: float) -> float:
        """Use ``lam`` from now on; returns it.

        Raises
        ------
        ValueError
            If ``lam`` is not a positive finite number.
        """
        self.lam = check_lambda(lam)
        self._shrink, self._diag_p = self.shrink(self.lam)
        return self.lam

    def shrink(self, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e / (e + λ), diag(P))`` at ``lam``."""
        shrink = self.eigenvalues / (self.eigenvalues + lam)
        return shrink, (1.0 - (self.basis.square() * shrink).sum(dim=1)) / lam

    def scores_from(
        self, h: torch.Tensor, hv: torch.Tensor, lam: float, shrink: torch.Tensor, diag_p: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``x · B`` at ``lam`` of histories ``h`` with ``hv = h @ V`` computed once for every λ."""
        p = (h - (hv * shrink) @ self.basis.T) / lam
        return h - p / diag_p

    def weights(self) -> torch.Tensor:
        """The dense ``[n_items, n_items]`` float64 ``B`` at the current λ (diagonal zeroed); for small catalogues."""
        eye = torch.eye(self.data.num_items, dtype=torch.float64)
        b = self.scores_from(eye, self.basis, self.lam, self._shrink, self._diag_p)  # eye @ V = V
        b.fill_diagonal_(0.0)
        return b

    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), n_items]`` scores ``x_user · B`` (float64) of the users' ``split`` histories."""
        h = torch.from_numpy(history_matrix(self.data, users, split).toarray())
        return self.scores_from(h, h @ self.basis, self.lam, self._shrink, self._diag_p)


def check_lambda(lam: float) -> float:
    """``lam`` as a float, or ValueError if it is not a positive finite number."""
    if not (math.isfinite(float(lam)) and float(lam) > 0):
        raise ValueError(f"EASE λ must be a positive finite number, got {lam!r}")
    return float(lam)


def data_key(data: PlatformData, lambdas: Sequence[float]) -> str:
    """sha256 of what :func:`fit_ease` depends on: the train histories, the valid items and the λ grid."""
    h = hashlib.sha256(f"ease-v1 {data.name} {data.num_items} {list(map(float, lambdas))}".encode())
    for items in data.train:
        h.update(np.asarray(items, dtype=np.int64).tobytes() + b"|")
    h.update(np.asarray(data.valid, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def fit_ease(
    data: PlatformData,
    lambdas: Sequence[float],
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
) -> tuple[EASE, dict[str, Any]]:
    """Factor once, score the valid split at every λ in one pass, keep the best valid NDCG@10.

    Parameters
    ----------
    data : PlatformData
        The platform.
    lambdas : sequence of float
        The grid; on equal valid NDCG@10 the earlier λ wins.
    batch_size : int, default 256
        Users per scoring call.
    cache_dir : path-like, optional
        Keep the fit (factorisation, chosen λ, valid curve) in ``<cache_dir>/ease-v1-<key>.pt``,
        keyed by the train histories, the valid items and the grid (:func:`data_key`), so the
        same platform is fit once however many times a run asks (the served prior, the
        local-only comparison, the baseline). A missing or unreadable file is refit and
        rewritten (logged).

    Returns
    -------
    (EASE, dict)
        The model set to the chosen λ, and ``{"lambda", "valid_NDCG@10": {λ: value},
        "seconds", "cpu_seconds"}`` (the seconds of the fit, also when read from the cache,
        with ``"cached": True`` then).

    Raises
    ------
    ValueError
        On an empty grid or a λ that is not positive.
    """
    if not lambdas:
        raise ValueError("EASE needs at least one λ to choose from (baseline.ease.lambdas)")
    for lam in lambdas:  # before the cache is looked up: a bad grid is an error either way
        check_lambda(lam)
    path = None if cache_dir is None else Path(cache_dir) / f"ease-v1-{data_key(data, lambdas)}.pt"
    cached = _load(path, data) if path is not None else None
    if cached is not None:
        model, info = cached
        return model, {**info, "cached": True}
    wall, cpu = time.perf_counter(), time.process_time()
    model = EASE(data, float(lambdas[0]))
    grid = [float(lam) for lam in dict.fromkeys(float(x) for x in lambdas)]
    shrinks = {lam: model.shrink(lam) for lam in grid}

    def score(users: Sequence[int], split: str) -> dict[float, torch.Tensor]:
        h = torch.from_numpy(history_matrix(data, users, split).toarray())
        hv = h @ model.basis  # once for every λ
        return {lam: model.scores_from(h, hv, lam, *shrinks[lam]) for lam in grid}

    res = evaluate_ranking_variants(data, "valid", score, grid, batch_size=batch_size)
    valid = {f"{lam:g}": res[lam][NDCG] for lam in grid}
    best = max(grid, key=lambda lam: (res[lam][NDCG], -grid.index(lam)))  # ties: the earlier λ
    for lam in grid:
        log.info("EASE %s: λ=%g valid NDCG@10 %.4f", data.name, lam, res[lam][NDCG])
    model.set_lambda(best)
    info = {
        "lambda": best,
        f"valid_{NDCG}": valid,
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    if path is not None:
        save_torch(path, {"basis": model.basis, "eigenvalues": model.eigenvalues, "info": info})
    return model, info


def _load(path: Path, data: PlatformData) -> tuple[EASE, dict[str, Any]] | None:
    """A cached fit, or None (logged) when the file is missing, unreadable or does not fit ``data``."""
    if not path.is_file():
        return None
    try:
        doc = torch.load(path, weights_only=True)
        basis, e, info = doc["basis"], doc["eigenvalues"], dict(doc["info"])
        if basis.shape[0] != data.num_items or basis.shape[1:] != e.shape or not torch.isfinite(basis).all():
            raise ValueError(f"basis {tuple(basis.shape)} does not fit {data.num_items} items")
        model = EASE.from_factors(data, e, basis, float(info["lambda"]))
    except Exception as err:  # a corrupt cache is refit, never trusted
        log.warning("EASE cache %s unreadable (%s): fitting again", path, err)
        return None
    return model, info


__all__ = ["EASE", "EASE_LAMBDAS", "SOCIAL_LAMBDAS", "data_key", "fit_ease"]
