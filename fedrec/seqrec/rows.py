"""Training rows of the sequence model: one row per user, holding all of that user's targets.

A row is the unit of user-level DP (the user's whole history, clipped once), so it depends on
its own user's data and public randomness only.

* **Sequential platforms** (a time order): the inputs are the history without its newest item,
  the targets the history without its oldest, aligned: the state after item ``t`` predicts item
  ``t + 1``, at every position (the last ``max_len`` of them).
* **Order-free platforms** (social: play counts, a random split): a random ``holdout`` share of
  the history is the row's targets, the rest its input set, drawn afresh every epoch; the one
  state read out of the set predicts every held-out item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch


def left_pad(seqs: Sequence[Sequence[int] | np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` ``[B, L]`` left-padded to the longest sequence (at most ``max_len``, newest kept).

    Padding ids are 0 and masked out; a row with no items is all padding.
    """
    length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-length:]
        if len(s):
            ids[i, length - len(s) :] = torch.from_numpy(s)
            mask[i, length - len(s) :] = True
    return ids, mask


@dataclass
class Rows:
    """A batch of training rows.

    Attributes
    ----------
    ids, mask : torch.Tensor
        ``[B, L]`` input items (left-padded) and their mask.
    targets, target_mask : torch.Tensor
        ``[B, Q, K]`` target items and mask: ``Q = L`` query states with one target each
        (sequential), or ``Q = 1`` state with ``K`` held-out targets (order-free).
    causal : bool
        Sequential rows (read causally) or order-free ones (read as a set).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    causal: bool = True

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_targets(self) -> torch.Tensor:
        """``[B]`` targets per row."""
        return self.target_mask.flatten(1).sum(1)

    def one_target(self, seeds: Sequence[Sequence[int]]) -> Rows:
        """The same rows with one target each (drawn uniformly from the row's own, from ``seeds[i]``).

        One-example rows for comparison with whole-user rows at equal privacy: the inputs
        are unchanged, only the other targets are masked out. A row without targets stays so.
        """
        flat = self.target_mask.flatten(1)
        keep = torch.zeros_like(flat)
        for i, seed in enumerate(seeds):
            real = flat[i].nonzero()[:, 0]
            if len(real):
                keep[i, real[int(np.random.default_rng(list(seed)).integers(len(real)))]] = True
        return replace(self, target_mask=keep.view_as(self.target_mask))

    def by_length(self, groups: int) -> list[tuple[torch.Tensor, Rows]]:
        """The rows in ``groups`` groups of similar history length, each cut to its own longest: ``[(index, rows)]``.

        Rows are left-padded to the batch's longest history, so a batch of mostly short
        histories is mostly padding (ecommerce: 9 items on average, padded to up to 50).
        Cutting a group's padding changes none of its rows' outputs (positions count from
        the right, padding is masked), so a model computed group by group gives every row
        the result it gets in the whole batch, at a fraction of the cost. ``index`` holds the
        group's rows' positions in this batch; every row is in exactly one group.
        """
        lengths = self.mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        out = []
        for index in torch.tensor_split(order, max(1, min(groups, len(self)))):
            if not len(index):
                continue
            keep = max(1, int(lengths[index].max()))
            cut = slice(-keep, None) if self.causal else slice(None)  # sequential targets align with the inputs
            targets, target_mask = self.targets[index, cut], self.target_mask[index, cut]
            if not self.causal:  # order-free: [B, 1, K] targets, cut to the group's most
                k = max(1, int(target_mask.flatten(1).sum(1).max()))
                targets, target_mask = targets[..., :k], target_mask[..., :k]
            sub = Rows(self.ids[index, -keep:], self.mask[index, -keep:], targets, target_mask, self.causal)
            out.append((index, sub))
        return out


def sequential_rows(histories: Sequence[np.ndarray], max_len: int) -> Rows:
    """Next-item rows: inputs ``h[:-1]``, targets ``h[1:]`` (the newest ``max_len`` positions)."""
    ids, mask = left_pad([h[:-1] for h in histories], max_len)
    tgt, tmask = left_pad([h[1:] for h in histories], max_len)
    return Rows(ids, mask, tgt.unsqueeze(-1), tmask.unsqueeze(-1), causal=True)


def holdout_rows(histories: Sequence[np.ndarray], max_len: int, holdout: float, seeds: Sequence[Sequence[int]]) -> Rows:
    """Set-completion rows: a random ``holdout`` share (at least one item) of each history is its targets.

    The inputs are the other items (at most ``max_len``, a random subset when there are more).
    Row ``i`` draws its split from its own generator seeded with ``seeds[i]`` (e.g. run seed,
    epoch, user), so no row's randomness depends on another user's data.
    """
    inputs, targets = [], []
    for h, seed in zip(histories, seeds, strict=True):
        perm = np.random.default_rng(list(seed)).permutation(np.asarray(h, dtype=np.int64))
        k = min(len(perm), max(1, round(holdout * len(perm))))
        targets.append(perm[:k])
        inputs.append(perm[k:][:max_len])
    ids, mask = left_pad(inputs, max_len)
    k = max(len(t) for t in targets)
    tgt = torch.zeros(len(targets), 1, k, dtype=torch.long)
    tmask = torch.zeros(len(targets), 1, k, dtype=torch.bool)
    for i, t in enumerate(targets):
        tgt[i, 0, : len(t)] = torch.from_numpy(t)
        tmask[i, 0, : len(t)] = True
    return Rows(ids, mask, tgt, tmask, causal=False)
