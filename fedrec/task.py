"""One platform's training task: inputs, caches, examples, the item index, evaluation.

A :class:`PlatformTask` is what a federated client holds: its private data, its
platform-local parameters (:class:`~fedrec.model.two_tower.PlatformHead`) and a view
of the shared encoder. It knows nothing of Flower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_rankings
from fedrec.io import save_torch
from fedrec.model.backbone import autocast, batches
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs, pad
from fedrec.model.lower_cache import cache_key, load_cached, lower_states
from fedrec.model.two_tower import PlatformHead, TwoTower


@dataclass
class Examples:
    """Training examples: for each, a user, its history (oldest first) and the target item."""

    users: np.ndarray
    targets: np.ndarray
    histories: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.users)


def build_examples(data: PlatformData, per_user: int, seed: int = 0) -> Examples:
    """Training examples from the train histories.

    Time-ordered platforms: the last ``per_user`` positions ``t >= 1`` of each train
    history, predicting item ``t`` from items ``< t``. Other platforms (no time order):
    ``per_user`` train items per user (chosen with ``seed``) as targets, each predicted
    from all the user's other train items.

    Parameters
    ----------
    data : PlatformData
        The platform.
    per_user : int
        Examples per user (at most).
    seed : int, default 0
        Seed of the target choice on non-sequential platforms.
    """
    rng = np.random.default_rng(seed)
    users, targets, hists = [], [], []
    for u, seq in enumerate(data.train):
        positions: list[int] | range
        if data.sequential:
            positions = range(max(1, len(seq) - per_user), len(seq))
        else:
            positions = sorted(rng.choice(len(seq), size=min(per_user, len(seq)), replace=False).tolist())
        for t in positions:
            users.append(u)
            targets.append(int(seq[t]))
            hists.append(seq[:t] if data.sequential else np.delete(seq, t))
    return Examples(np.array(users, dtype=np.int64), np.array(targets, dtype=np.int64), hists)


class Catalogue:
    """A platform's item side: token tensors, frozen lower-layer states and (frozen item tower) the index.

    It depends on the catalogue and the frozen backbone only, so the tasks of one
    platform's user shards share one (:meth:`PlatformTask.catalogue`). The lower-layer
    states are computed (or loaded from the disk cache) on first use of
    :attr:`item_hidden`: a user of the frozen text alone (the sequence model with the
    adapter off, :class:`fedrec.seqrec.text.ItemText`) that finds its index in the cache
    never needs them.

    Parameters
    ----------
    item_tok, item_mask : torch.Tensor
        ``[N, L]`` token ids and attention mask of every item.
    item_hidden : torch.Tensor or callable
        ``[N, L, h]`` lower-layer states, or a function computing them (called once).
    index : torch.Tensor, optional
        The frozen item tower's index (two-tower model).
    cache_dir : str, optional
        The disk cache (lower-layer states, frozen text indexes).
    key : str, default ""
        Content hash of the items' tokens and the backbone (:func:`~fedrec.model.lower_cache.cache_key`).
    """

    def __init__(
        self,
        item_tok: torch.Tensor,
        item_mask: torch.Tensor,
        item_hidden: torch.Tensor | Callable[[], torch.Tensor],
        index: torch.Tensor | None = None,
        cache_dir: str | None = None,
        key: str = "",
    ) -> None:
        self.item_tok, self.item_mask, self.index = item_tok, item_mask, index
        self.cache_dir, self.key = cache_dir, key
        self._hidden: torch.Tensor | None = item_hidden if isinstance(item_hidden, torch.Tensor) else None
        self._compute = None if isinstance(item_hidden, torch.Tensor) else item_hidden

    @property
    def num_items(self) -> int:
        """Catalogue size."""
        return int(self.item_tok.shape[0])

    @property
    def item_hidden(self) -> torch.Tensor:
        """``[N, L, h]`` frozen lower-layer states (computed or loaded on first use)."""
        if self._hidden is None:
            assert self._compute is not None
            self._hidden, self._compute = self._compute(), None
        return self._hidden

    @classmethod
    def build(
        cls,
        data: PlatformData,
        inputs: TextInputs,
        encoder: LoraEncoder,
        cache_dir: str | None = None,
        backbone_key: str = "",
        progress: bool = True,
    ) -> Catalogue:
        """Tokenise every item of ``data``; its frozen lower layers run (or load, with ``cache_dir``) on first use."""
        item_tok, item_mask = inputs.items(range(data.num_items))
        hidden = functools.partial(
            lower_states,
            encoder,
            item_tok,
            item_mask,
            cache_dir=cache_dir,
            backbone_key=backbone_key,
            desc=f"{data.name} items",
            progress=progress,
        )
        key = cache_key(backbone_key, encoder, item_tok, item_mask) if cache_dir is not None else ""
        return cls(item_tok, item_mask, hidden, cache_dir=cache_dir, key=key)


def recent_ids(histories: Sequence[np.ndarray], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` most recent items of each history as ``(ids, mask)`` ``[B, <=n]``."""
    return pad([h[-n:].tolist() if n > 0 else [] for h in histories])


class PlatformTask:
    """Everything one platform needs to train and evaluate the shared encoder.

    Parameters
    ----------
    data : PlatformData
        The platform's data (private to it).
    inputs : TextInputs
        Tokenised catalogue and user-text builder.
    encoder : LoraEncoder
        The shared encoder.
    head : PlatformHead, optional
        Platform-local ID embeddings (hybrid mode).
    score : str, default "cosine"
        Scoring function (see :class:`TwoTower`).
    scale : float, default 20.0
        Logit scale.
    item_tower : {"frozen", "shared"}, default "frozen"
        See :class:`~fedrec.model.two_tower.TwoTower`.
    examples_per_user : int, default 4
        See :func:`build_examples`.
    history_ids : int, default 50
        Recent items pooled into the user ID vector.
    cache_dir : str, optional
        Disk cache of the lower-layer outputs.
    backbone_key : str, default ""
        Identifies the backbone in the cache key.
    seed : int, default 0
        Seed of the example choice.
    progress : bool, default True
        Progress bars while building caches.
    catalogue : Catalogue, optional
        The item side of another task of the same platform and encoder (a task of
        another user shard): shared instead of built. With the frozen item tower its
        index is shared too.
    """

    def __init__(
        self,
        data: PlatformData,
        inputs: TextInputs,
        encoder: LoraEncoder,
        head: PlatformHead | None = None,
        score: str = "cosine",
        scale: float = 20.0,
        item_tower: str = "frozen",
        examples_per_user: int = 4,
        history_ids: int = 50,
        cache_dir: str | None = None,
        backbone_key: str = "",
        seed: int = 0,
        progress: bool = True,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.data, self.inputs, self.history_ids = data, inputs, history_ids
        self.model = TwoTower(encoder, head, score=score, scale=scale, item_tower=item_tower)
        if catalogue is None:
            catalogue = Catalogue.build(data, inputs, encoder, cache_dir, backbone_key, progress)
        elif catalogue.item_tok.shape[0] != data.num_items:
            raise ValueError(
                f"{data.name}: the shared catalogue has {catalogue.item_tok.shape[0]} items, not {data.num_items}"
            )
        self.catalogue = catalogue
        self.item_tok, self.item_mask, self.item_hidden = catalogue.item_tok, catalogue.item_mask, catalogue.item_hidden
        self._index: torch.Tensor | None = None
        self.examples = build_examples(data, examples_per_user, seed)
        self.user_tok, self.user_mask = inputs.users(self.examples.histories, self.examples.users.tolist())
        self.user_hidden = lower_states(
            encoder,
            self.user_tok,
            self.user_mask,
            cache_dir=cache_dir,
            backbone_key=backbone_key,
            desc=f"{data.name} users",
            progress=progress,
        )
        self.cache_dir, self.backbone_key, self.progress = cache_dir, backbone_key, progress
        self._eval_states: dict[tuple[str, tuple[int, ...] | None], tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}

    @property
    def name(self) -> str:
        """Platform name."""
        return self.data.name

    @property
    def encoder(self) -> LoraEncoder:
        """The shared encoder."""
        return self.model.encoder

    def local_state(self) -> dict[str, torch.Tensor]:
        """Platform-local parameters (never leave the platform)."""
        head = self.model.head
        return {} if head is None else {k: v.detach().clone() for k, v in head.state_dict().items()}

    def load_local_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`local_state`."""
        if self.model.head is not None and state:
            self.model.head.load_state_dict(state)

    # -- item index -----------------------------------------------------------------------
    @property
    def index(self) -> torch.Tensor | None:
        """The item text vectors ``[n_items, d]`` (None until :meth:`refresh_index`).

        With the frozen item tower it is static and kept in the shared :class:`Catalogue`;
        with the shared tower it depends on the adapters and is this task's own.
        """
        return self.catalogue.index if self.model.item_tower == "frozen" else self._index

    @index.setter
    def index(self, value: torch.Tensor | None) -> None:
        if self.model.item_tower == "frozen":
            self.catalogue.index = value
        else:
            self._index = value

    @torch.no_grad()
    def refresh_index(self, batch_size: int = 512) -> torch.Tensor:
        """Re-encode every catalogue item's text with the current model; returns ``[n_items, d]``."""
        frozen = self.model.item_tower == "frozen"
        if self.index is not None and frozen:
            return self.index  # items do not use the adapters: the index never goes stale
        path = None
        if frozen and self.cache_dir is not None:  # it depends on the backbone and the catalogue alone
            key = cache_key(
                f"{self.backbone_key}|index|normalize={self.model.normalize}",
                self.encoder,
                self.item_tok,
                self.item_mask,
            )
            path = Path(self.cache_dir) / f"index-{key}.pt"
            cached = load_cached(path, (self.data.num_items,))
            if cached is not None:
                self.index = cached
                return cached
        was_training = self.model.training
        self.model.eval()
        parts = []
        for sl in batches(self.data.num_items, batch_size):
            parts.append(self.model.item_text(self.item_hidden[sl], self.item_mask[sl]))
        self.model.train(was_training)
        self.index = torch.cat(parts)
        if path is not None:
            save_torch(path, self.index)
        return self.index

    # -- training batches ----------------------------------------------------------------
    def batch(self, rows: np.ndarray, negatives: np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors of the examples ``rows`` with the shared catalogue ``negatives``."""
        assert self.index is not None, "refresh_index() first"
        ex = self.examples
        targets = torch.as_tensor(ex.targets[rows])
        hist_ids, hist_mask = recent_ids([ex.histories[r] for r in rows], self.history_ids)
        seen = torch.zeros(len(rows), self.data.num_items, dtype=torch.bool)
        for i, r in enumerate(rows):
            seen[i, torch.as_tensor(ex.histories[r])] = True
        seen[torch.arange(len(rows)), targets] = True
        neg = torch.as_tensor(negatives)
        return {
            "user_hidden": self.user_hidden[rows],
            "user_mask": self.user_mask[rows],
            "hist_ids": hist_ids,
            "hist_mask": hist_mask,
            "pos_hidden": self.item_hidden[targets],
            "pos_mask": self.item_mask[targets],
            "pos_ids": targets,
            "pos_index": self.index[targets],
            "neg_vectors": self.index[neg],
            "neg_ids": neg.expand(len(rows), -1),
            "neg_valid": ~seen[:, neg],
        }

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def user_vectors(
        self, histories: Sequence[np.ndarray], users: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """User vectors (text, ID) computed from raw histories (full forward, no cache)."""
        tok, mask = self.inputs.users(histories, users)
        hidden = self.encoder.lower(tok, mask)
        hist_ids, hist_mask = recent_ids(histories, self.history_ids)
        return self.model.user_vectors(hidden, mask, hist_ids, hist_mask)

    def eval_states(
        self, split: str, users: Sequence[int] | None = None
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(row of each user, mask, lower-layer states)`` of the users' texts on ``split``, computed once.

        The frozen lower layers of the evaluation user texts (history up to the split)
        are cached like the training ones (in memory, and on disk with a cache dir), so
        a round's evaluation runs only the adapted upper layers.

        Parameters
        ----------
        split : {"valid", "test"}
            The split whose histories make the texts.
        users : sequence of int, optional
            Only these users (a validation subset); default: every user. The states of
            every user are reused when already computed.

        Returns
        -------
        tuple
            ``rows`` (``[num_users]``, the row of each user in the states, -1 for a user
            not covered), ``mask`` and ``hidden`` (``[n, L]`` and ``[n, L, h]``).
        """
        key = (split, None if users is None else tuple(int(u) for u in users))
        if key not in self._eval_states and (split, None) in self._eval_states:
            return self._eval_states[(split, None)]
        if key not in self._eval_states:
            covered = list(range(self.data.num_users)) if users is None else sorted(set(key[1] or ()))
            tok, mask = self.inputs.users([self.data.history(u, split) for u in covered], covered)
            hidden = lower_states(
                self.encoder,
                tok,
                mask,
                cache_dir=self.cache_dir,
                backbone_key=self.backbone_key,
                desc=f"{self.data.name} {split} users",
                progress=self.progress,
            )
            rows = np.full(self.data.num_users, -1, dtype=np.int64)
            rows[covered] = np.arange(len(covered))
            self._eval_states[key] = (rows, mask, hidden)
        return self._eval_states[key]

    @torch.no_grad()
    def score_users(self, users: Sequence[int], split: str, among: Sequence[int] | None = None) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for ``split`` (refreshes the index if needed).

        ``among``: the set of users whose lower-layer states to compute (and keep) if
        not done yet, a superset of ``users`` (default: every user).
        """
        if self.index is None:
            self.refresh_index()
        assert self.index is not None
        rows_of, mask, hidden = self.eval_states(split, among)
        rows = torch.as_tensor(rows_of[np.asarray(list(users), dtype=np.int64)], dtype=torch.long)
        if bool((rows < 0).any()):
            raise ValueError(f"{self.name}: users outside the evaluated subset were scored")
        hist_ids, hist_mask = recent_ids([self.data.history(x, split) for x in users], self.history_ids)
        u_text, u_id = self.model.user_vectors(hidden[rows], mask[rows], hist_ids, hist_mask)
        return self.model.scores(u_text, u_id, self.index)

    @torch.no_grad()
    def evaluate(
        self, split: str, batch_size: int = 256, users: Sequence[int] | None = None, refresh: bool = True
    ) -> dict[str, float]:
        """Full-ranking metrics and the mean softmax loss on ``split``.

        The loss is the full-catalogue softmax cross-entropy of the target with the
        user's history items removed from the candidates (the ranking's candidate set).

        Parameters
        ----------
        split : {"valid", "test"}
            Split to score.
        batch_size : int, default 256
            Users per batch.
        users : sequence of int, optional
            Subset of users (default: all evaluated users).
        refresh : bool, default True
            Re-encode the item index first.
        """
        self.model.eval()
        if refresh or self.index is None:
            self.refresh_index()
        among = None if users is None else list(users)

        def score(chunk: Sequence[int], split: str) -> torch.Tensor:
            return self.score_users(chunk, split, among)

        with autocast(False):
            return evaluate_rankings(self.data, split, score, batch_size, users, loss=True)
