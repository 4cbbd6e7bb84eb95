"""Two-tower scorer over the shared encoder, with optional platform-local ID embeddings.

User vector ``u = [t(user text) ; mean of the ID vectors of the recent history]`` and
item vector ``v = [t(item text) ; ID vector of the item]`` (the ID parts only in hybrid
mode), where ``t`` is the encoder's pooled output, L2-normalised for the cosine
score. ``score = scale * <u, v>``, i.e. the (scaled) text cosine plus, in hybrid mode,
a collaborative ID term: the ID vectors are *added* to the score, not mixed into the
text vector.

The loss is, per example, a softmax over the positive and negatives drawn from the
public catalogue. Negatives are scored with the item index (vectors computed from
public item text and the current model, refreshed every few steps, no gradient), so a
row's loss depends only on its own user's data and public data: per-example gradients
are well defined and there is no in-batch coupling (needed for user-level DP).

The positive is scored with the *same* index vector in the forward pass and gets the
item tower's gradient through a straight-through term (``v_index + v - v.detach()``).
Scoring the positive with a fresh vector and the negatives with stale ones lets the
model learn "fresh beats stale" instead of the task (measured: train loss fell to 1.9
while validation NDCG@10 dropped from 0.026 to 0.015 on video).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.model.encoder import LoraEncoder


class PlatformHead(nn.Module):
    """Platform-local parameters: item-ID embeddings (never federated).

    Parameters
    ----------
    num_items : int
        Catalogue size of the platform.
    dim : int, default 64
        Embedding dimension.
    init_std : float, default 0.01
        Normal init std.
    """

    def __init__(self, num_items: int, dim: int = 64, init_std: float = 0.01) -> None:
        super().__init__()
        self.item_id = nn.Embedding(num_items, dim)
        self.history_id = nn.Embedding(num_items, dim)
        nn.init.normal_(self.item_id.weight, std=init_std)
        nn.init.normal_(self.history_id.weight, std=init_std)

    def user_part(self, hist_ids: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the history items' ID vectors, ``[B, dim]``."""
        m = hist_mask.unsqueeze(-1).float()
        return (self.history_id(hist_ids) * m).sum(1) / m.sum(1).clamp_min(1.0)


class TwoTower(nn.Module):
    """Shared encoder + (optional) platform head: user and item vectors and the loss.

    Parameters
    ----------
    encoder : LoraEncoder
        The shared encoder (its LoRA tensors are the federated part).
    head : PlatformHead, optional
        Platform-local ID embeddings (hybrid mode).
    score : {"cosine", "dot"}, default "cosine"
        Normalise the text vectors or not.
    scale : float, default 20.0
        Logit scale.
    """

    def __init__(
        self, encoder: LoraEncoder, head: PlatformHead | None = None, score: str = "cosine", scale: float = 20.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.normalize = score == "cosine"
        self.scale = scale

    def _text(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.encoder.upper(hidden, mask)
        return F.normalize(t, dim=-1) if self.normalize else t

    def user_vectors(
        self, hidden: torch.Tensor, mask: torch.Tensor, hist_ids: torch.Tensor, hist_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[B, D]`` user vectors from cached lower states of the user text and the history ids."""
        t = self._text(hidden, mask)
        if self.head is None:
            return t
        return torch.cat([t, self.head.user_part(hist_ids, hist_mask)], dim=-1)

    def item_vectors(self, hidden: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` item vectors from cached lower states of the item texts and their ids."""
        t = self._text(hidden, mask)
        if self.head is None:
            return t
        return torch.cat([t, self.head.item_id(item_ids)], dim=-1)

    def forward(
        self,
        user_hidden: torch.Tensor,
        user_mask: torch.Tensor,
        hist_ids: torch.Tensor,
        hist_mask: torch.Tensor,
        pos_hidden: torch.Tensor,
        pos_mask: torch.Tensor,
        pos_ids: torch.Tensor,
        pos_index: torch.Tensor,
        neg_vectors: torch.Tensor,
        neg_valid: torch.Tensor,
    ) -> torch.Tensor:
        """Per-example softmax loss over the positive and the catalogue negatives.

        Parameters
        ----------
        user_hidden, user_mask : torch.Tensor
            ``[B, Lu, h]`` cached lower states of the user texts and ``[B, Lu]`` mask.
        hist_ids, hist_mask : torch.Tensor
            ``[B, H]`` recent history item ids and mask (hybrid mode).
        pos_hidden, pos_mask, pos_ids : torch.Tensor
            The positive items' cached lower states, mask and ids.
        pos_index : torch.Tensor
            ``[B, D]`` item-index vectors of the positives (the forward value).
        neg_vectors : torch.Tensor
            ``[K, D]`` item-index vectors of the negatives (no gradient).
        neg_valid : torch.Tensor
            ``[B, K]`` bool: False where a negative is the row's positive or in its history.

        Returns
        -------
        torch.Tensor
            ``[B]`` per-example losses.
        """
        u = self.user_vectors(user_hidden, user_mask, hist_ids, hist_mask)
        fresh = self.item_vectors(pos_hidden, pos_mask, pos_ids)
        p = pos_index.detach() + (fresh - fresh.detach())
        pos = (u * p).sum(-1, keepdim=True)
        neg = (u @ neg_vectors.detach().T).masked_fill(~neg_valid, -math.inf)
        logits = self.scale * torch.cat([pos, neg], dim=1)
        return torch.logsumexp(logits, dim=1) - logits[:, 0]
