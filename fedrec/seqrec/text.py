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

import torch
import torch.nn.functional as F

from fedrec.model.backbone import batches
from fedrec.model.encoder import LoraEncoder
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
        return int(self.catalogue.item_hidden.shape[0])

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
        """Recompute the index with the current adapter; returns it."""
        if self._index is not None and not self.adapter:
            return self._index  # the frozen text never changes
        was = self.encoder.training
        self.encoder.eval()
        self._index = torch.cat([self._encode(sl) for sl in batches(self.num_items, self.batch_size)])
        self.encoder.train(was)
        return self._index

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
