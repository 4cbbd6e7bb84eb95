"""Two-tower scorer over the shared encoder, with optional platform-local ID embeddings.

``score(u, i) = scale * cos(t(user text), t(item text)) + <h(history), e(i)>`` where ``t``
is the encoder's mean-pooled output (``"dot"`` drops the normalisation) and, in hybrid
mode only, ``e`` are per-platform item-ID embeddings and ``h`` the mean of the recent
history items' (separate) ID embeddings: a collaborative term *added* to the content
score. The ID term is not multiplied by ``scale`` (measured: scaling it by 20 drove the
ecommerce training loss above the uniform-guess level).

The loss is, per example, a softmax over the positive and negatives drawn from the
public catalogue. The negatives' text vectors come from the item index (computed from
public item text with the current model, refreshed every few steps, no gradient); their
ID vectors are looked up live per row. So a row's loss depends only on its own user's
data and public data: per-example gradients are well defined and there is no in-batch
coupling (what user-level DP needs).

The positive's text vector takes its *value* from the same index and the item tower's
gradient through a straight-through term (``v_index + v - v.detach()``). Scoring the
positive fresh and the negatives stale lets the model learn "fresh beats stale" instead
of the task (measured: train loss fell to 1.9 while validation NDCG@10 dropped from
0.026 to 0.015 on video).
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
        Scale of the text score (inverse temperature).
    item_tower : {"frozen", "shared"}, default "frozen"
        ``frozen``: items are encoded by the backbone without adapters (an exact,
        static index; the adapters serve the user tower). ``shared``: items go
        through the same adapters, trained through the positive (straight-through).
    """

    def __init__(
        self,
        encoder: LoraEncoder,
        head: PlatformHead | None = None,
        score: str = "cosine",
        scale: float = 20.0,
        item_tower: str = "frozen",
    ) -> None:
        super().__init__()
        if item_tower not in ("frozen", "shared"):
            raise ValueError(f"item_tower must be 'frozen' or 'shared', got {item_tower!r}")
        self.encoder = encoder
        self.head = head
        self.normalize = score == "cosine"
        self.scale = scale
        self.item_tower = item_tower

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.encoder.upper(hidden, mask)
        return F.normalize(t, dim=-1) if self.normalize else t

    def item_text(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` item text vectors from cached lower states (normalised for cosine)."""
        if self.item_tower == "frozen":
            with self.encoder.peft.disable_adapter():
                return self._pool(hidden, mask)
        return self._pool(hidden, mask)

    def user_vectors(
        self, hidden: torch.Tensor, mask: torch.Tensor, hist_ids: torch.Tensor, hist_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scale * text vector [B, d], history ID vector [B, d_id] or None)`` of users."""
        return self.scale * self._pool(hidden, mask), (
            None if self.head is None else self.head.user_part(hist_ids, hist_mask)
        )

    def scores(self, user_text: torch.Tensor, user_id: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
        """``[B, n_items]`` scores of users against the whole catalogue (``index``: item text vectors)."""
        out = user_text @ index.T
        if self.head is not None and user_id is not None:
            out = out + user_id @ self.head.item_id.weight.T
        return out

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
        neg_ids: torch.Tensor,
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
            ``[B, d]`` item-index text vectors of the positives (the forward value).
        neg_vectors : torch.Tensor
            ``[K, d]`` item-index text vectors of the negatives (no gradient).
        neg_ids : torch.Tensor
            ``[B, K]`` negative item ids per row (the same K for every row).
        neg_valid : torch.Tensor
            ``[B, K]`` bool: False where a negative is the row's positive or in its history.

        Returns
        -------
        torch.Tensor
            ``[B]`` per-example losses.
        """
        u_text, u_id = self.user_vectors(user_hidden, user_mask, hist_ids, hist_mask)
        pos_text = pos_index.detach()
        if self.item_tower == "shared":
            fresh = self.item_text(pos_hidden, pos_mask)
            pos_text = pos_text + fresh - fresh.detach()
        pos = (u_text * pos_text).sum(-1, keepdim=True)
        neg = u_text @ neg_vectors.detach().T
        if self.head is not None and u_id is not None:
            pos = pos + (u_id * self.head.item_id(pos_ids)).sum(-1, keepdim=True)
            neg = neg + torch.einsum("bd,bkd->bk", u_id, self.head.item_id(neg_ids))
        logits = torch.cat([pos, neg.masked_fill(~neg_valid, -math.inf)], dim=1)
        return torch.logsumexp(logits, dim=1) - logits[:, 0]
