"""SASRec, ID only (PROTOCOL.md), trained with early stopping on the valid split.

A causal transformer (:class:`~fedrec.model.sequence.SequenceEncoder`: 2 layers, 2 heads,
dim 64, dropout 0.3 by default) over item-ID embeddings, scoring every catalogue item by a
dot product with the same (tied) embeddings. Each user's newest ``max_len`` train items are
one row: the state after item ``t`` predicts item ``t + 1`` at every position, with a
full-catalogue cross-entropy (no sampled negatives). Adam, a batch of users per step. The
valid split is scored every ``eval_every`` epochs (the history is the train items); the
weights of the best valid NDCG@10 are kept, training stops after ``patience`` evaluations
without improvement or at ``max_epochs``, and the kept model scores the splits (test reads
train + valid).

The metric trap: a padding position attends only to itself and outputs zeros (see
:mod:`fedrec.model.sequence`), a non-finite training loss stops training with an error,
and :func:`fedrec.evaluate.check_finite` refuses non-finite scores.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.config import SASRecConfig
from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_rankings
from fedrec.metrics import NDCG
from fedrec.model.sequence import SequenceEncoder
from fedrec.seqrec.rows import left_pad, sequential_rows
from fedrec.steps import Step, run_steps

log = logging.getLogger("fedrec.baselines")


class SASRecModel(nn.Module):
    """Item-ID embeddings + causal transformer; scores = user state · item embeddings.

    Parameters
    ----------
    num_items : int
        Catalogue size.
    settings : SASRecConfig
        Width, depth, heads, dropout and ``max_len``.
    """

    def __init__(self, num_items: int, settings: SASRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(num_items, settings.dim)
        nn.init.normal_(self.items.weight, std=0.02)
        self.encoder = SequenceEncoder(
            settings.dim, settings.max_len, settings.layers, settings.heads, settings.dropout, ffn_mult=1
        )

    def states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, d]`` user states of left-padded ``ids`` (zero at padding)."""
        return self.encoder(self.items(ids), mask, causal=True)

    def loss(self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean full-catalogue cross-entropy over the real positions (``targets [B, T]``, next items)."""
        return self.position_losses(ids, mask, targets).mean()

    def position_losses(self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[T]`` full-catalogue cross-entropy at each real position, in row-major order."""
        states = self.states(ids, mask)[mask]
        return F.cross_entropy(states @ self.items.weight.T, targets[mask], reduction="none")

    def scores(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, n_items]`` scores from the state after each row's newest item."""
        return self.states(ids, mask)[:, -1] @ self.items.weight.T


class SASRec:
    """A trained SASRec as a score function ``(users, split) -> [len(users), n_items]``.

    Parameters
    ----------
    data : PlatformData
        The platform.
    model : SASRecModel
        The network (switched to eval mode when scoring).
    max_len : int
        Newest history items read.
    """

    def __init__(self, data: PlatformData, model: SASRecModel, max_len: int) -> None:
        self.data, self.model, self.max_len = data, model, max_len

    @torch.no_grad()
    def __call__(self, users: Sequence[int], split: str) -> torch.Tensor:
        """Scores of the users' ``split`` histories (a user with no history gets the empty-history state)."""
        self.model.eval()
        ids, mask = left_pad([self.data.history(u, split) for u in users], self.max_len)
        return self.model.scores(ids, mask)


def _train_rows(data: PlatformData, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, mask, targets)`` ``[U, max_len]`` of every user with >= 2 train items (left-padded)."""
    hist = [h for h in data.train if len(h) >= 2]
    if not hist:
        raise ValueError(f"{data.name}: SASRec needs users with at least 2 train items, there are none")
    rows = sequential_rows(hist, max_len)
    return rows.ids, rows.mask, rows.targets[..., 0]


def _trim(ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of a batch.

    Exact: a real position attends only to real items, and the encoder gives a shorter
    batch the right end of its position window, so every real position keeps its position.
    """
    real = torch.nonzero(mask.any(dim=0))
    start = int(real[0]) if len(real) else mask.shape[1] - 1
    return ids[:, start:], mask[:, start:], targets[:, start:]


def _step(
    model: SASRecModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    batch: torch.Tensor,
    *,
    name: str,
    epoch: int,
) -> Step:
    """One step's forward: the per-position losses of the batch's rows (their mean is SASRec's loss)."""
    b_ids, b_mask, b_targets = _trim(ids[batch], mask[batch], targets[batch])
    losses = model.position_losses(b_ids, b_mask, b_targets)
    if not torch.isfinite(losses).all():
        raise ValueError(f"{name}: SASRec training loss is not finite at epoch {epoch}")
    return Step(losses, len(losses))


def fit_sasrec(
    data: PlatformData,
    settings: SASRecConfig | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[SASRec, dict[str, Any]]:
    """Train SASRec with early stopping on valid NDCG@10 and return the best epoch's model.

    Parameters
    ----------
    data : PlatformData
        The platform.
    settings : SASRecConfig, optional
        Architecture and budget (``baseline.sasrec``); default: its defaults.
    seed : int, default 0
        Seeds the initial weights, the shuffling and dropout.
    batch_size : int, default 256
        Users per scoring call during validation.

    Returns
    -------
    (SASRec, dict)
        The score function of the best model, and ``{"best_epoch", "best_valid_NDCG@10",
        "epochs", "stopped", "still_improving", "curve": [[epoch, valid NDCG@10], ...],
        "seconds", "cpu_seconds"}``; ``stopped`` is ``"patience"`` or ``"max_epochs"``, and
        ``still_improving`` is True when the cap ended training while the last evaluation
        was the best so far.

    Raises
    ------
    ValueError
        If a training loss is not finite (the NaN trap), or no user has 2 train items.
    """
    s = settings or SASRecConfig()
    threads = torch.get_num_threads()
    if s.threads > 0:
        torch.set_num_threads(int(s.threads))
    wall, cpu = time.perf_counter(), time.process_time()
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))  # initial weights and dropout
    model = SASRecModel(data.num_items, s)
    opt = torch.optim.Adam(model.parameters(), lr=float(s.lr))
    ids, mask, targets = _train_rows(data, int(s.max_len))
    scorer = SASRec(data, model, int(s.max_len))
    best_state, best, best_epoch, bad, curve = copy.deepcopy(model.state_dict()), -math.inf, 0, 0, []
    stopped, epoch = "max_epochs", 0
    try:
        for epoch in range(1, int(s.max_epochs) + 1):
            model.train()
            batches = torch.randperm(len(ids), generator=gen).split(int(s.batch_size))
            stats = run_steps(batches, partial(_step, model, ids, mask, targets, name=data.name, epoch=epoch), opt)
            if epoch % int(s.eval_every) and epoch != int(s.max_epochs):
                continue
            ndcg = evaluate_rankings(data, "valid", scorer, batch_size=batch_size)[NDCG]
            curve.append([epoch, round(ndcg, 6)])
            log.info("SASRec %s epoch %d: train loss %.4f, valid NDCG@10 %.4f", data.name, epoch, stats.loss, ndcg)
            if ndcg > best:
                best, best_epoch, bad = ndcg, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= int(s.patience):
                    stopped = "patience"
                    break
    finally:
        torch.set_num_threads(threads)
    model.load_state_dict(best_state)
    model.eval()
    info = {
        "best_epoch": best_epoch,
        f"best_valid_{NDCG}": best,
        "epochs": epoch,
        "stopped": stopped,
        "still_improving": stopped == "max_epochs" and best_epoch == epoch,
        "curve": curve,
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    log.info(
        "SASRec %s: best epoch %d (valid NDCG@10 %.4f), %d epochs, stopped by %s, %.0f CPU s",
        data.name,
        best_epoch,
        best,
        epoch,
        stopped,
        info["cpu_seconds"],
    )
    return scorer, info


__all__ = ["SASRec", "SASRecModel", "fit_sasrec"]
