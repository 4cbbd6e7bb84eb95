"""Cached outputs of the frozen lower layers, in memory and optionally on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fedrec.io import save_torch
from fedrec.model.backbone import batches
from fedrec.model.encoder import LoraEncoder


def cache_key(backbone_key: str, encoder: LoraEncoder, ids: torch.Tensor, mask: torch.Tensor) -> str:
    """Content hash of everything the lower-layer outputs depend on."""
    h = hashlib.sha256()
    h.update(f"{backbone_key}|split={encoder.split}|bf16={encoder.bf16}".encode())
    h.update(ids.numpy().tobytes())
    h.update(mask.numpy().tobytes())
    return h.hexdigest()[:32]


def load_cached(path: Path, leading: tuple[int, ...]) -> torch.Tensor | None:
    """A cached tensor whose leading dimensions are ``leading``; None if missing, corrupt or mis-shaped."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except Exception:
        return None
    if not isinstance(cached, torch.Tensor) or tuple(cached.shape[: len(leading)]) != leading:
        return None
    return cached


def lower_states(
    encoder: LoraEncoder,
    ids: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    backbone_key: str = "",
    desc: str = "lower layers",
    progress: bool = True,
) -> torch.Tensor:
    """Frozen lower-layer outputs ``[N, L, h]`` (float32) of padded token tensors.

    Texts are run in batches of similar length, each cut to its longest text, so no
    compute goes to padding; the states of padded positions are 0 (every later layer
    and the pooling mask them out).

    Parameters
    ----------
    encoder : LoraEncoder
        Provides :meth:`LoraEncoder.lower`.
    ids, mask : torch.Tensor
        ``[N, L]`` token ids and attention mask.
    batch_size : int, default 256
        Rows per forward pass.
    cache_dir : path-like, optional
        If given, results are stored there under a content hash and reused.
    backbone_key : str, default ""
        Identifies the backbone weights in the content hash.
    desc : str
        Progress bar label.
    progress : bool, default True
        Show a progress bar.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"lower-{cache_key(backbone_key, encoder, ids, mask)}.pt"
        cached = load_cached(path, tuple(ids.shape))
        if cached is not None:
            return cached
    # texts sorted by length and each batch cut to its longest text: no compute on padding
    # (a padded position is masked out of every later layer and of the pooling; it stays 0)
    lengths = mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    out = torch.zeros(ids.shape[0], ids.shape[1], encoder.hidden_size)
    bar = tqdm(total=ids.shape[0], desc=desc, unit="text", disable=not progress, leave=False)
    for sl in batches(ids.shape[0], batch_size):
        rows = order[sl]
        width = max(1, int(lengths[rows].max()))
        out[rows, :width] = encoder.lower(ids[rows, :width], mask[rows, :width])
        bar.update(sl.stop - sl.start)
    bar.close()
    if path is not None:
        save_torch(path, out)
    return out
