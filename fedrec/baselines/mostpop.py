"""MostPop (PROTOCOL.md): items scored by their number of train interactions over all users."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedrec.data.types import PlatformData


class MostPop:
    """Score every item by its number of train interactions over all users.

    Parameters
    ----------
    data : PlatformData
        The platform.
    """

    def __init__(self, data: PlatformData) -> None:
        self.counts = torch.as_tensor(data.train_counts(), dtype=torch.float32)

    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), n_items]`` scores (the same row for every user)."""
        return self.counts.unsqueeze(0).repeat(len(users), 1)
