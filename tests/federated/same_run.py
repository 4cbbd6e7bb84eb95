"""What the resume tests share: the round a checkpoint holds (read while it may be written) and the check
that a resumed run ended where an uninterrupted run of the same config ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedrec.federated.checkpoint import load_checkpoint


def checkpoint_round(path: Path) -> int:
    """The last round checkpointed at ``path`` (0: none yet, or the file is being written: read again)."""
    try:
        ck = load_checkpoint(path)
    except (OSError, ValueError, RuntimeError, EOFError):  # mid-write: the reader retries
        return 0
    return 0 if ck is None else int(ck["round"])


def assert_same_run(
    ref: dict[str, Any], ref_dir: Path, doc: dict[str, Any], out: Path, platforms: tuple[str, ...]
) -> None:
    """``doc`` (run folder ``out``) ended where ``ref`` (``ref_dir``) ended: losses, best round, adapters, test."""
    for ha, hb in zip(ref["federation"]["history"], doc["federation"]["history"], strict=True):
        assert hb["cross_platform_loss"] == pytest.approx(ha["cross_platform_loss"], rel=1e-6)
    assert doc["federation"]["best_round"] == ref["federation"]["best_round"]
    for name in ("global_adapter.pt", "best_adapter.pt"):
        fa = torch.load(ref_dir / name, weights_only=True)
        fb = torch.load(out / name, weights_only=True)
        assert fa.keys() == fb.keys()
        for k in fa:
            torch.testing.assert_close(fb[k], fa[k], rtol=1e-5, atol=1e-7)
    for p in platforms:
        assert doc["platforms"][p]["test"]["NDCG@10"] == pytest.approx(ref["platforms"][p]["test"]["NDCG@10"], abs=1e-6)
