"""The server's checkpoint: what a resumed run must share with the run that wrote it, and the file.

The checkpoint is written durably (:func:`fedrec.io.save_torch_durable`: checksummed,
atomically, the folder fsynced, the previous good copy kept as ``checkpoint.pt.prev``), so a
crash while writing or a corrupt newest copy costs at most the last round: reading falls back
to the last good copy with a logged message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedrec.federated.shards import shards_per_platform
from fedrec.io import load_torch_durable, save_torch_durable

CHECKPOINT = "checkpoint.pt"


def describe(cfg: DictConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    out = {
        "seed": c["seed"],
        "platforms": sorted(c["platforms"]),
        "model": c["model"],
        "aggregation": c["federation"]["aggregation"],
        "local_epochs": c["federation"]["local_epochs"],
        "local_steps": c["federation"]["local_steps"],
    }
    if c["federation"].get("weighting", "examples") != "examples":  # absent by default: older checkpoints match
        out["weighting"] = c["federation"]["weighting"]
    opt = c["federation"].get("server_optimizer", "none")
    if opt != "none":  # absent by default: older checkpoints match
        out["server_optimizer"] = {k: v for k, v in c["federation"].items() if k.startswith("server_")}
    if shards_per_platform(cfg) > 1:  # absent when 1: checkpoints written before sharding existed still match
        out["shards_per_platform"] = shards_per_platform(cfg)
    return out


def save_checkpoint(path: str | Path, content: dict[str, Any]) -> Path:
    """Durably write a checkpoint (the previous good copy kept beside it)."""
    return save_torch_durable(path, content)


def load_checkpoint(path: str | Path, on_fallback: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """The newest good checkpoint at ``path`` (None if there is none).

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    on_fallback : callable, optional
        Called with a message when the newest copy is unreadable and the last good one is used.

    Raises
    ------
    fedrec.io.CorruptStateError
        If copies exist but none is readable.
    """
    return load_torch_durable(path, on_fallback)
