"""The catalogue's text vectors from the shared encoder (frozen BERT, optionally with LoRA).

The item index holds one L2-normalised text vector per catalogue item: the frozen lower layers
(cached once per text, :class:`fedrec.task.Catalogue`) and the top layers, with the LoRA adapter
when it is trained, mean-pooled. The index has no gradient; it is recomputed after the adapter
changes (:meth:`ItemText.refresh`). With the adapter trained, :meth:`ItemText.with_fresh` gives
a chosen set of items vectors whose *value* is the index's and whose gradient reaches the adapter
(straight-through), so a step trains the adapter through those items at the cost of running the
top layers on them only.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fedrec.io import save_torch
from fedrec.model.backbone import batches
from fedrec.model.encoder import LoraEncoder
from fedrec.model.lower_cache import load_cached
from fedrec.task import Catalogue


class ItemText:
    """Text vectors of one platform's catalogue.

    Parameters
    ----------
    catalogue : Catalogue
        Tokens and frozen lower-layer states of every item.
    encoder : LoraEncoder
        The shared encoder.
    adapter : bool, default False
        Run the top layers with the LoRA adapter (trained) or without it (frozen text).
    batch_size : int, default 512
        Items per forward pass when the index is rebuilt.
    """

    def __init__(self, catalogue: Catalogue, encoder: LoraEncoder, adapter: bool = False, batch_size: int = 512):
        self.catalogue, self.encoder, self.adapter, self.batch_size = catalogue, encoder, adapter, batch_size
        self._index: torch.Tensor | None = None

    @property
    def num_items(self) -> int:
        """Catalogue size."""
        return self.catalogue.num_items

    @property
    def dim(self) -> int:
        """Width of a text vector."""
        return int(self.encoder.hidden_size)

    def _encode(self, items: torch.Tensor | slice) -> torch.Tensor:
        hidden, mask = self.catalogue.item_hidden[items], self.catalogue.item_mask[items]
        if self.adapter:
            return F.normalize(self.encoder.upper(hidden, mask), dim=-1)
        with self.encoder.peft.disable_adapter():
            return F.normalize(self.encoder.upper(hidden, mask), dim=-1)

    def index(self) -> torch.Tensor:
        """``[N, h]`` the text vector of every item (computed on first use, no gradient)."""
        if self._index is None:
            self.refresh()
        assert self._index is not None
        return self._index

    @torch.no_grad()
    def refresh(self) -> torch.Tensor:
        """Recompute the index with the current adapter; returns it.

        The frozen text (adapter off) never changes: it is computed once and, with the
        catalogue's disk cache, stored beside the lower-layer states, so the other
        processes of a run (clients, local-only models, evaluation) load ``[N, h]`` instead
        of the ``[N, L, h]`` lower-layer states and the top layers' compute.
        """
        if self._index is not None and not self.adapter:
            return self._index
        path = self._frozen_path()
        if path is not None:
            self._index = load_cached(path, (self.num_items, self.dim))
            if self._index is not None:
                return self._index
        was = self.encoder.training
        self.encoder.eval()
        # items sorted by length, so that each batch (cut to its longest text) carries little padding
        order = torch.argsort(self.catalogue.item_mask.sum(1), descending=True, stable=True)
        index = torch.empty(self.num_items, self.dim)
        for sl in batches(self.num_items, self.batch_size):
            index[order[sl]] = self._encode(order[sl])
        self._index = index
        self.encoder.train(was)
        if path is not None:
            save_torch(path, self._index)
        return self._index

    def _frozen_path(self) -> Path | None:
        """Disk-cache file of the frozen text index (None: the adapter is trained, or no disk cache)."""
        if self.adapter or self.catalogue.cache_dir is None or not self.catalogue.key:
            return None
        return Path(self.catalogue.cache_dir) / f"frozen-text-v1-{self.catalogue.key}.pt"

    def with_fresh(self, items: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The index with the rows ``items`` carrying the adapter's gradient (values unchanged).

        Parameters
        ----------
        items : torch.Tensor
            ``[n]`` distinct item ids.
        weights : torch.Tensor, optional
            ``[n]`` scale of each item's gradient (the inverse of its sampling probability,
            so the sampled items' gradient is an unbiased estimate of the whole catalogue's).
        """
        index = self.index()
        if not self.adapter or len(items) == 0:
            return index
        fresh = self._encode(items)
        delta = fresh - fresh.detach()
        if weights is not None:
            delta = delta * weights.to(delta.dtype).unsqueeze(-1)
        return index.index_put((items,), index[items] + delta)
