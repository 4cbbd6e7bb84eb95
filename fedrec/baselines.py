"""The three baselines of PROTOCOL.md as score functions for :func:`fedrec.evaluate.evaluate_ranking`.

- :class:`MostPop`: items scored by their number of train interactions (all users).
- :class:`ItemKNN`: binary user x item train matrix ``X``; ``S = XᵀX / (sqrt(n_i) sqrt(n_j))``
  with ``n_i`` the item's train count, diagonal zeroed, all neighbours kept; a user's
  score is the sum of ``S``'s rows of the user's history items.
- :class:`FrozenText`: all-MiniLM-L6-v2 as shipped (fp32), item text truncated to 32
  tokens, mean pooling, L2-normalised; user vector = mean of the vectors of the last
  20 history items; score = dot product.

Every scorer is called as ``score_fn(user_indices, split) -> [len(user_indices), n_items]``
and uses only ``data.history(u, split)`` (train items; for test also the valid item).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_ranking
from fedrec.io import atomic_write

BASELINES = ("mostpop", "itemknn", "frozen_text")
FROZEN_TEXT_MAX_TOKENS = 32
FROZEN_TEXT_LAST_N = 20


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


def run_baselines(
    datasets: Mapping[str, PlatformData],
    models: Iterable[str] = BASELINES,
    splits: Iterable[str] = ("valid", "test"),
    backbone: str | tuple[Any, Any] = "minilm",
    item_vectors: Mapping[str, torch.Tensor] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Evaluate the protocol baselines on several platforms.

    Parameters
    ----------
    datasets : mapping of str to PlatformData
        Platforms by name.
    models : iterable of str, default ("mostpop", "itemknn", "frozen_text")
        Baselines to run, from ``BASELINES``.
    splits : iterable of str, default ("valid", "test")
        Splits to evaluate.
    backbone : str or (model, tokenizer), default "minilm"
        Frozen-text backbone; loaded once, and only if some platform needs encoding.
    item_vectors : mapping of str to torch.Tensor, optional
        Precomputed frozen-text item vectors per platform name; default None (encode).
    cache_dir : str or pathlib.Path, optional
        On-disk cache of the encoded item vectors; default None (no cache).
    batch_size : int, default 256
        Users scored per call of a score function.
    progress : bool, default True
        Show a tqdm progress bar over (platform, model).

    Returns
    -------
    dict
        ``{platform: {model: {split: metrics}}}`` with ``metrics`` as returned by
        :func:`fedrec.evaluate.metrics_from_ranks` (``HR@10``, ``NDCG@10``, ``MRR``, ``users``).
    """
    models = list(models)
    splits = list(splits)
    unknown = [m for m in models if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    item_vectors = dict(item_vectors or {})
    loaded = None if isinstance(backbone, str) else backbone  # load the backbone once, only if needed
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    bar = tqdm([(p, m) for p in datasets for m in models], disable=not progress, desc="baselines")
    for platform, model in bar:
        bar.set_postfix_str(f"{platform}/{model}")
        data = datasets[platform]
        score_fn: MostPop | ItemKNN | FrozenText
        if model == "mostpop":
            score_fn = MostPop(data)
        elif model == "itemknn":
            score_fn = ItemKNN(data)
        else:
            vectors = item_vectors.get(platform)
            if vectors is None:
                path = item_vectors_cache_path(cache_dir, backbone, data.item_texts, FROZEN_TEXT_MAX_TOKENS)
                if loaded is None and not (path is not None and path.is_file()):
                    from fedrec.model.backbone import load_backbone

                    loaded = load_backbone(backbone) if isinstance(backbone, str) else backbone
                vectors = encode_items(data.item_texts, backbone, cache_dir=cache_dir, loaded=loaded)
            score_fn = FrozenText(data, item_vectors=vectors)
        results.setdefault(platform, {})[model] = {
            split: evaluate_ranking(data, split, score_fn, batch_size=batch_size) for split in splits
        }
    return results


__all__ = [
    "BASELINES",
    "FrozenText",
    "ItemKNN",
    "MostPop",
    "encode_items",
    "item_vectors_cache_path",
    "history_matrix",
    "run_baselines",
    "texts_sha256",
    "train_matrix",
]
