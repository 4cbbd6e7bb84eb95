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

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from fedrec.baselines.matrix import history_matrix, train_matrix
from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_rankings
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
        x = torch.from_numpy(train_matrix(data).toarray())  # float64, binary
        if x.shape[0] < x.shape[1]:  # thin: eigendecompose the user Gram XXᵀ
            e, u = torch.linalg.eigh(x @ x.T)
            keep = e > e.max().clamp_min(1.0) * x.shape[1] * torch.finfo(e.dtype).eps
            e, u = e[keep], u[:, keep]
            v = (x.T @ u) / e.sqrt()
        else:
            e, v = torch.linalg.eigh(x.T @ x)
            e = e.clamp_min(0.0)  # G is positive semi-definite; round-off can dip below 0
        self.eigenvalues, self.basis = e, v
        self.lam = self.set_lambda(lam)

    def set_lambda(self, lam: float) -> float:
        """Use ``lam`` from now on; returns it.

        Raises
        ------
        ValueError
            If ``lam`` is not a positive finite number.
        """
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"EASE λ must be a positive finite number, got {lam!r}")
        self.lam = float(lam)
        shrink = self.eigenvalues / (self.eigenvalues + self.lam)
        self._shrink = shrink
        self._diag_p = (1.0 - (self.basis.square() * shrink).sum(dim=1)) / self.lam
        return self.lam

    def p_times(self, h: torch.Tensor) -> torch.Tensor:
        """``h @ P`` for a ``[B, n_items]`` float64 matrix ``h`` at the current λ."""
        return (h - ((h @ self.basis) * self._shrink) @ self.basis.T) / self.lam

    def weights(self) -> torch.Tensor:
        """The dense ``[n_items, n_items]`` float64 ``B`` at the current λ (diagonal zeroed); for small catalogues."""
        eye = torch.eye(self.data.num_items, dtype=torch.float64)
        b = eye - self.p_times(eye) / self._diag_p
        b.fill_diagonal_(0.0)
        return b

    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), n_items]`` scores ``x_user · B`` (float64) of the users' ``split`` histories."""
        h = torch.from_numpy(history_matrix(self.data, users, split).toarray())
        return h - self.p_times(h) / self._diag_p


def fit_ease(data: PlatformData, lambdas: Sequence[float], batch_size: int = 256) -> tuple[EASE, dict[str, Any]]:
    """Factor once, score the valid split at every λ, keep the best valid NDCG@10.

    Parameters
    ----------
    data : PlatformData
        The platform.
    lambdas : sequence of float
        The grid; on equal valid NDCG@10 the earlier λ wins.
    batch_size : int, default 256
        Users per scoring call.

    Returns
    -------
    (EASE, dict)
        The model set to the chosen λ, and ``{"lambda", "valid_NDCG@10": {λ: value},
        "seconds", "cpu_seconds"}``.

    Raises
    ------
    ValueError
        On an empty grid or a λ that is not positive.
    """
    if not lambdas:
        raise ValueError("EASE needs at least one λ to choose from (baseline.ease.lambdas)")
    wall, cpu = time.perf_counter(), time.process_time()
    model = EASE(data, float(lambdas[0]))
    valid: dict[str, float] = {}
    best: tuple[float, float] | None = None
    for lam in lambdas:
        model.set_lambda(float(lam))
        ndcg = evaluate_rankings(data, "valid", model, batch_size=batch_size)[NDCG]
        valid[f"{float(lam):g}"] = ndcg
        log.info("EASE %s: λ=%g valid NDCG@10 %.4f", data.name, lam, ndcg)
        if best is None or ndcg > best[1]:
            best = (float(lam), ndcg)
    assert best is not None
    model.set_lambda(best[0])
    info = {
        "lambda": best[0],
        f"valid_{NDCG}": valid,
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    return model, info


__all__ = ["EASE", "EASE_LAMBDAS", "SOCIAL_LAMBDAS", "fit_ease"]
