"""Binary user x item matrices of a platform's histories (shared by ItemKNN and EASE)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from fedrec.data.types import PlatformData


def train_matrix(data: PlatformData) -> sp.csr_matrix:
    """Binary user x item matrix of the train interactions (float64, CSR).

    Parameters
    ----------
    data : PlatformData
        The platform; only ``data.train`` is used (valid and test items never enter).
    """
    rows = np.repeat(np.arange(data.num_users), [len(t) for t in data.train])
    cols = np.concatenate(data.train) if data.num_users else np.zeros(0, dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(cols), dtype=np.float64), (rows, cols)), shape=(data.num_users, data.num_items))
    x.sum_duplicates()
    x.data[:] = 1.0  # binary even if a history repeated an item
    return x


def history_matrix(data: PlatformData, users: Sequence[int], split: str) -> sp.csr_matrix:
    """Binary ``[len(users), n_items]`` matrix of the users' histories for ``split``.

    Parameters
    ----------
    data : PlatformData
        The platform.
    users : sequence of int
        Internal user indices.
    split : {"valid", "test"}
        Which history (see :meth:`PlatformData.history`).
    """
    hist = [data.history(u, split) for u in users]
    rows = np.repeat(np.arange(len(users)), [len(h) for h in hist])
    cols = np.concatenate(hist) if hist else np.zeros(0, dtype=np.int64)
    h = sp.csr_matrix((np.ones(len(cols), dtype=np.float64), (rows, cols)), shape=(len(users), data.num_items))
    h.sum_duplicates()
    h.data[:] = 1.0
    return h
