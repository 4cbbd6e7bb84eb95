"""Adapter states between torch (the model) and NumPy (what Flower's records carry)."""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Torch tensors to contiguous NumPy arrays (same names)."""
    return {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}


def to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """NumPy arrays to torch tensors (copies; same names)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
