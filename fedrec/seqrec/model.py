"""The sequence recommender: a shared text part and a platform's personal part.

:class:`SharedSequenceModel` (the part a platform sends) reads a history as the text vectors of
its items: a linear text adaptor maps each item's text vector (from the shared encoder) into the
model width, a causal transformer (:class:`~fedrec.model.sequence.SequenceEncoder`; order-free
for platforms without a time order) turns the history into user states, and a state scores
every catalogue item by a dot product with the adapted text vector of the item (the adaptor is
tied between input and output, as SASRec ties its item embeddings). Its loss depends on a
user's own items and the public catalogue text only.

:class:`PersonalModel` (never leaves the platform) is a copy of the shared part plus item-ID
embeddings added to its inputs and outputs, fine-tuned on the platform's own data: the model
the platform serves. Its parameters are fit on all of the platform's users, so nothing the
platform sends may depend on them (docs/PRIVACY.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.model.sequence import SequenceEncoder
from fedrec.seqrec.rows import Rows


class SharedSequenceModel(nn.Module):
    """Text adaptor + sequence encoder over item text vectors.

    Parameters
    ----------
    text_dim : int
        Width of the item text vectors (384 for all-MiniLM-L6-v2).
    dim : int, default 64
        Model width.
    max_len : int, default 50
        Longest history read (``model.max_history``).
    layers, heads : int, default 2
        Transformer blocks and attention heads.
    dropout : float, default 0.3
        Dropout of the encoder.
    length_groups : int, default 1
        Training losses are computed in this many groups of rows of similar history length,
        each without the padding of longer ones (:meth:`Rows.by_length`): the same per-row
        losses, computed faster when lengths vary.

    Every method takes ``causal``: True for a platform with a time order (causal attention,
    the newest state predicts), False for an order-free one (a set, read out by a masked
    mean). Both use the same weights, so such platforms share one model.
    """

    def __init__(
        self,
        text_dim: int,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.3,
        length_groups: int = 1,
    ) -> None:
        super().__init__()
        self.length_groups = length_groups
        self.adaptor = nn.Linear(text_dim, dim)
        self.encoder = SequenceEncoder(dim, max_len, layers, heads, dropout)

    @property
    def max_len(self) -> int:
        """Longest history read."""
        return self.encoder.max_len

    def item_table(self, text: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``[N, d]`` of the text vectors ``[N, text_dim]`` (``ids`` unused here)."""
        return self.adaptor(text)

    def queries(self, table: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """The states that score items: ``[B, L, d]`` (sequential) or ``[B, 1, d]`` (masked mean of a set)."""
        states = self.encoder(table[ids], mask, causal=causal)
        if causal:
            return states
        m = mask.unsqueeze(-1).to(states.dtype)
        return ((states * m).sum(1) / m.sum(1).clamp_min(1.0)).unsqueeze(1)

    def user_vectors(self, table: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """``[B, d]`` the state after the whole (left-padded) history."""
        return self.queries(table, ids, mask, causal)[:, -1]

    def loss(self, text: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``[B]`` per-row losses: full-catalogue softmax cross-entropy averaged over each row's targets."""
        table = self.item_table(text)
        return grouped_loss(self, table, table, rows, self.length_groups)


def query_loss(queries: torch.Tensor, table: torch.Tensor, rows: Rows) -> torch.Tensor:
    """:func:`row_loss` of ``queries [B, Q, d] @ table.T``, scoring only the positions that have a target.

    Sequential rows are left-padded to the batch's longest history, so most of their
    positions can be padding (ecommerce: 9 items on average, padded to 50): the catalogue is
    scored at the real positions only, and each row's loss is the mean over its own.
    Equal to ``row_loss(queries @ table.T, rows)``; a row's loss still depends on its own
    queries only.
    """
    if not rows.causal or rows.targets.shape[-1] != 1:
        return row_loss(queries @ table.T, rows)
    real = rows.target_mask[..., 0]  # [B, L]
    picked = queries[real]  # [T, d]
    logits = (picked @ table.T).float()  # [T, N]
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, rows.targets[..., 0][real].unsqueeze(-1)).squeeze(-1)
    owner = real.nonzero()[:, 0]
    total = torch.zeros(len(rows), dtype=nll.dtype).index_add(0, owner, nll)
    return total / rows.num_targets.clamp_min(1)


def grouped_loss(
    model: SharedSequenceModel, table_in: torch.Tensor, table_out: torch.Tensor, rows: Rows, groups: int
) -> torch.Tensor:
    """``[B]`` :func:`query_loss` of ``model``'s queries, computed in ``groups`` length groups (:meth:`Rows.by_length`).

    Each row's loss is the one the whole batch gives it (the groups only drop padding).
    """
    if groups <= 1:
        return query_loss(model.queries(table_in, rows.ids, rows.mask, rows.causal), table_out, rows)
    parts = rows.by_length(groups)
    losses = [query_loss(model.queries(table_in, sub.ids, sub.mask, sub.causal), table_out, sub) for _, sub in parts]
    order = torch.cat([index for index, _ in parts])
    return torch.cat(losses)[torch.argsort(order)]


def row_loss(logits: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Mean softmax cross-entropy of each row's targets; ``logits`` is ``[B, Q, N]``.

    A row's loss depends on its own logits only, so per-row gradients are that user's.
    """
    logz = torch.logsumexp(logits.float(), dim=-1, keepdim=True)  # [B, Q, 1]
    picked = torch.gather(logits.float(), -1, rows.targets)  # [B, Q, K]
    nll = (logz - picked) * rows.target_mask
    return nll.flatten(1).sum(1) / rows.num_targets.clamp_min(1)


class PersonalModel(nn.Module):
    """A platform's served model: a copy of the shared part plus its own item-ID embeddings.

    Parameters
    ----------
    shared : SharedSequenceModel
        The shared part to start from (copied, not modified).
    num_items : int
        The platform's catalogue size.
    init_std : float, default 0.02
        Init std of the ID embeddings.
    """

    def __init__(self, shared: SharedSequenceModel, num_items: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.shared = copy.deepcopy(shared)
        dim = shared.adaptor.out_features
        self.id_in = nn.Embedding(num_items, dim)
        self.id_out = nn.Embedding(num_items, dim)
        nn.init.normal_(self.id_in.weight, std=init_std)
        nn.init.normal_(self.id_out.weight, std=init_std)

    def tables(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input table, output table)`` ``[N, d]``: adapted text plus the ID embeddings."""
        base = self.shared.item_table(text)
        return base + self.id_in.weight, base + self.id_out.weight

    def scores(self, text: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """``[B, N]`` scores of every item after each (left-padded) history."""
        table_in, table_out = self.tables(text)
        return self.shared.user_vectors(table_in, ids, mask, causal) @ table_out.T

    def loss(self, text: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``[B]`` per-row losses (as :meth:`SharedSequenceModel.loss`, with the ID embeddings)."""
        table_in, table_out = self.tables(text)
        return grouped_loss(self.shared, table_in, table_out, rows, self.shared.length_groups)


def shared_scores(
    model: SharedSequenceModel, text: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, causal: bool
) -> torch.Tensor:
    """``[B, N]`` scores of the shared part alone (the text path)."""
    table = model.item_table(text)
    return model.user_vectors(table, ids, mask, causal) @ table.T


def normalize_text(text: torch.Tensor) -> torch.Tensor:
    """L2-normalised text vectors (float32)."""
    return F.normalize(text.float(), dim=-1)
