"""The frozen-text baseline of PROTOCOL.md.

all-MiniLM-L6-v2 as shipped (fp32), item text truncated to 32 tokens, mean pooling,
L2-normalised; user vector = mean of the vectors of the last 20 history items; score =
dot product. Item vectors are cached on disk, keyed by backbone, texts and truncation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrec.data.types import PlatformData
from fedrec.io import atomic_write

FROZEN_TEXT_MAX_TOKENS = 32
FROZEN_TEXT_LAST_N = 20


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 hex digest of a list of texts (JSON-encoded, so boundaries are unambiguous)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def item_vectors_cache_path(
    cache_dir: str | Path | None, backbone: str | tuple[Any, Any], texts: Sequence[str], max_tokens: int
) -> Path | None:
    """Cache file of the item vectors of ``texts``, or None when they are not cacheable.

    Parameters
    ----------
    cache_dir : str or pathlib.Path or None
        Cache folder; None means no cache.
    backbone : str or (model, tokenizer)
        Backbone name or folder. A loaded pair and the random ``"tiny"`` backbone are
        not cacheable (their weights are not identified by a path).
    texts : sequence of str
        Item texts.
    max_tokens : int
        Truncation length.

    Returns
    -------
    pathlib.Path or None
        ``<cache_dir>/item_vectors_<key>.npy`` with the key a sha256 of (resolved
        backbone path, sha256 of the texts, ``max_tokens``).
    """
    from fedrec.model.backbone import TINY_BACKBONE, resolve_backbone

    if cache_dir is None or not isinstance(backbone, str) or backbone == TINY_BACKBONE:
        return None
    backbone_key = str(resolve_backbone(backbone).resolve())
    key = hashlib.sha256(f"{backbone_key}\n{texts_sha256(texts)}\n{max_tokens}".encode()).hexdigest()
    return Path(cache_dir) / f"item_vectors_{key[:32]}.npy"


def encode_items(
    texts: Sequence[str],
    backbone: str | tuple[Any, Any] = "minilm",
    max_tokens: int = FROZEN_TEXT_MAX_TOKENS,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    loaded: tuple[Any, Any] | None = None,
) -> torch.Tensor:
    """Frozen-backbone item vectors (fp32, mean-pooled, L2-normalised), optionally cached on disk.

    Parameters
    ----------
    texts : sequence of str
        Item texts.
    backbone : str or (model, tokenizer), default "minilm"
        Backbone name or local folder (see :func:`fedrec.model.backbone.resolve_backbone`),
        or an already loaded ``(model, tokenizer)`` pair.
    max_tokens : int, default 32
        Truncation length in tokens, special tokens included.
    cache_dir : str or pathlib.Path, optional
        Folder of the on-disk cache, keyed by (backbone path, sha256 of the texts,
        ``max_tokens``) and written atomically (temporary file + rename). Default None:
        no cache. See :func:`item_vectors_cache_path` for what is never cached.
    batch_size : int, default 256
        Texts per forward pass.
    loaded : (model, tokenizer), optional
        The already loaded ``backbone`` (named by the ``backbone`` string), to avoid
        loading it again; default None loads it on a cache miss.

    Returns
    -------
    torch.Tensor
        ``[len(texts), hidden]`` float32 vectors.
    """
    from fedrec.model.backbone import encode_texts, load_backbone

    path = item_vectors_cache_path(cache_dir, backbone, texts, max_tokens)
    if path is not None and path.is_file():
        cached = torch.from_numpy(np.load(path))
        if cached.shape[0] == len(texts):
            return cached
    if loaded is None:
        loaded = load_backbone(backbone) if isinstance(backbone, str) else backbone
    model, tokenizer = loaded
    vectors = encode_texts(model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size, bf16=False)
    if path is not None:
        array = vectors.numpy().astype(np.float32)
        atomic_write(path, lambda fh: np.save(fh, array), mode=0o644)  # a cache is meant to be shared
    return vectors


class FrozenText:
    """Frozen sentence-encoder baseline: mean of the last 20 history item vectors, dot product.

    Parameters
    ----------
    data : PlatformData
        The platform.
    item_vectors : torch.Tensor, optional
        Precomputed ``[n_items, d]`` item vectors; default None encodes ``data.item_texts``
        with :func:`encode_items`.
    backbone : str or (model, tokenizer), default "minilm"
        Used only when ``item_vectors`` is None.
    max_tokens : int, default 32
        Truncation length, used only when ``item_vectors`` is None.
    last_n : int, default 20
        Number of most recent history items averaged into the user vector.
    cache_dir : str or pathlib.Path, optional
        On-disk cache of the item vectors (see :func:`encode_items`); default None.
    """

    def __init__(
        self,
        data: PlatformData,
        item_vectors: torch.Tensor | None = None,
        backbone: str | tuple[Any, Any] = "minilm",
        max_tokens: int = FROZEN_TEXT_MAX_TOKENS,
        last_n: int = FROZEN_TEXT_LAST_N,
        cache_dir: str | Path | None = None,
    ) -> None:
        if item_vectors is None:
            item_vectors = encode_items(data.item_texts, backbone, max_tokens, cache_dir)
        if item_vectors.shape[0] != data.num_items:
            raise ValueError(f"{data.name}: {item_vectors.shape[0]} item vectors for {data.num_items} items")
        self.data = data
        self.item_vectors = item_vectors.float()
        self.last_n = last_n

    def user_vectors(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), d]`` means of the last ``last_n`` history item vectors (zero if no history)."""
        out = torch.zeros(len(users), self.item_vectors.shape[1])
        for r, u in enumerate(users):
            recent = self.data.history(u, split)[-self.last_n :]
            if len(recent):
                out[r] = self.item_vectors[torch.as_tensor(recent)].mean(dim=0)
        return out

    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """``[len(users), n_items]`` dot products of user and item vectors."""
        return self.user_vectors(users, split) @ self.item_vectors.T
