"""ItemKNN (PROTOCOL.md): item-based cosine kNN on the binary train matrix, all neighbours kept."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from fedrec.baselines.matrix import history_matrix, train_matrix
from fedrec.data.types import PlatformData


class ItemKNN:
    """Item-based cosine kNN on the binary train matrix, all neighbours kept.

    ``S = XᵀX / (sqrt(n_i) sqrt(n_j))`` with ``n_i`` the item's train count (items with
    no train interaction get similarity 0), diagonal zeroed. ``S`` stays sparse; a
    batch of users is scored as ``H @ S`` with ``H`` their binary history matrix.

    Parameters
    ----------
    data : PlatformData
        The platform.
    """

    def __init__(self, data: PlatformData) -> None:
        self.data = data
        x = train_matrix(data)
        counts = np.asarray(x.sum(axis=0)).ravel()
        inv = np.zeros_like(counts)
        np.divide(1.0, np.sqrt(counts), out=inv, where=counts > 0)
        d = sp.diags(inv)
        s = (d @ (x.T @ x) @ d).tocsr()
        s.setdiag(0.0)
        s.eliminate_zeros()
        self.similarity: sp.csr_matrix = s

    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), n_items]`` scores: sums of the similarity rows of each history."""
        h = history_matrix(self.data, users, split)
        return torch.from_numpy((h @ self.similarity).toarray()).float()
