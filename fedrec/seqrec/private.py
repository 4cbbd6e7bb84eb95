"""User-level DP-SGD of the shared sequence model: one row per sampled user, clipped once.

How a step works
----------------
* **Sampling**: every user with a training row is in the step's batch independently with
  probability ``q`` (:class:`~fedrec.privacy.sampling.UserSampler`); a sampled user is one row
  holding *all* of its training targets (:mod:`fedrec.seqrec.rows`), so one user is one row.
* **Per-row gradients**: Opacus's hooks (:class:`~fedrec.privacy.per_sample.PerSampleGradients`)
  on :class:`PerRowLoss`, which computes exactly the loss of
  :meth:`~fedrec.seqrec.model.SharedSequenceModel.loss` in a batch-first form: the text adaptor
  is applied to each row's own input items, and the tied output side scores the catalogue as
  ``(q W) · textᵀ`` (:class:`TiedOutput`, registered with Opacus), whose per-row gradient is
  that row's. A row reads its own user's items, the public catalogue text and the shared
  model only: nothing fit on other users (no ID embeddings, no prior), so its gradient is
  that user's alone (tested by changing another user's data).
* **Clip, noise, account**: as :func:`fedrec.privacy.dpsgd.train_private`: flat fp32 clipping of
  each row over every shared parameter, Gaussian noise on the sum, the step charged to the
  platform's ledger before training. Noise goes on the shared parameters only: the personal
  model is trained afterwards on the platform's own data and never leaves it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from opacus.grad_sample import GradSampleModule
from torch import nn

from fedrec.privacy.accounting import PrivacyLedger
from fedrec.privacy.dpsgd import DPCounts, DPPlan, PrivateFitResult, noise_generator, open_round
from fedrec.privacy.per_sample import FP32DPOptimizer, FP32GradSampleModule, PerSampleGradients
from fedrec.privacy.sampling import UserSampler
from fedrec.seqrec.model import SharedSequenceModel, query_loss
from fedrec.seqrec.rows import Rows
from fedrec.steps import Step, run_steps


class TiedOutput(nn.Module):
    """The output side of a tied text adaptor: ``q -> q @ W`` (``W`` the adaptor's ``[d, text_dim]`` weight).

    Scores are ``(q @ W) · textᵀ``: the adaptor's bias adds ``q · b`` to every item alike,
    which no softmax sees, so it is left out. The weight is the adaptor's own parameter,
    held here too so that Opacus hooks this use of it (its per-row gradients of both uses
    are summed).
    """

    def __init__(self, adaptor: nn.Linear) -> None:
        super().__init__()
        self.weight = adaptor.weight

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """``[B, Q, d] -> [B, Q, text_dim]``."""
        return queries @ self.weight


def tied_output_grad_sample(
    layer: TiedOutput, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-row gradients of :class:`TiedOutput`'s weight (fp32): ``sum_q q_qᵀ g_q`` per row."""
    return {layer.weight: torch.einsum("n...d,n...k->ndk", activations[0].float(), backprops.float())}


# extension by registration: Opacus looks samplers up by module class
FP32GradSampleModule.GRAD_SAMPLERS[TiedOutput] = tied_output_grad_sample
GradSampleModule.GRAD_SAMPLERS[TiedOutput] = tied_output_grad_sample


class PerRowLoss(nn.Module):
    """The shared model's per-row loss in a batch-first form (what Opacus needs), equal to its ``loss``."""

    def __init__(self, shared: SharedSequenceModel) -> None:
        super().__init__()
        self.shared = shared
        self.output = TiedOutput(shared.adaptor)

    def forward(self, text: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``[B]`` per-row losses."""
        inputs = self.shared.adaptor(text[rows.ids])  # [B, L, d]: each row's own items
        states = self.shared.encoder(inputs, rows.mask, causal=rows.causal)
        if rows.causal:
            queries = states
        else:
            m = rows.mask.unsqueeze(-1).to(states.dtype)
            queries = ((states * m).sum(1) / m.sum(1).clamp_min(1.0)).unsqueeze(1)
        # only the positions with a target are scored (query_loss), as in SharedSequenceModel.loss
        return query_loss(self.output(queries), text, rows)


def train_shared_private(
    task: Any,
    plan: DPPlan,
    optimizer: torch.optim.Optimizer,
    ledger: PrivacyLedger | None = None,
    seed: int = 0,
    round_id: int | None = None,
    one_target: bool = False,
) -> PrivateFitResult:
    """One round of user-level DP-SGD on a :class:`~fedrec.seqrec.task.SeqTask`'s shared part.

    Parameters
    ----------
    task : SeqTask
        The platform; its shared part is trained in place (frozen text: the adapter is not
        trained under DP).
    plan : DPPlan
        The mechanism; ``plan.steps_per_round`` steps at rate ``plan.sample_rate``.
    optimizer : torch.optim.Optimizer
        Over the shared part's parameters (wrapped in Opacus's DP optimizer for the round;
        its state carries over between rounds: a function of earlier noisy steps).
    ledger : PrivacyLedger, optional
        Charged with the round before the first step; default a fresh in-memory one.
    seed : int, default 0
        Sampling, row splits and noise (secure mode: sampling and noise from the OS CSPRNG).
    round_id : int, optional
        Tag of the round in the ledger.
    one_target : bool, default False
        A sampled user contributes one of its targets instead of all (``privacy.rows=one``:
        one-example rows, for comparison; the same sampling, clipping and noise).
    """
    if task.text.adapter:
        raise ValueError("DP training of the shared part keeps the text adapter frozen (model.train_adapter=false)")
    ledger, mech, refused = open_round(plan, ledger, task.name, round_id)
    if refused is not None:
        return refused
    steps = plan.steps_per_round

    sample_rng, row_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    sampler = UserSampler(task.trainable_users, plan.sample_rate, rng=sample_rng, secure=plan.secure_mode)
    users = task.trainable_users
    text = task.text.index()
    model = PerRowLoss(task.shared)
    task.shared.train()
    per_sample = PerSampleGradients(model)
    opt = FP32DPOptimizer(
        optimizer,
        embeddings=per_sample.embeddings,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.expected_batch_size,  # type: ignore[arg-type]  # only divided by
        loss_reduction="mean",
        generator=noise_generator(plan, seed),
        secure_mode=plan.secure_mode,
    )
    counts = DPCounts(plan.max_grad_norm)

    def forward(_: int) -> Step:
        picked = users[sampler.sample()]
        if not len(picked):
            return Step(None)
        rows = task.rows(picked, row_rng)
        if one_target:  # one-example rows (privacy.rows=one), for comparison
            batch_seed = int(row_rng.integers(2**31))
            rows = rows.one_target([(batch_seed, int(u)) for u in picked])
        return Step(per_sample(text, rows))

    try:
        stats = run_steps(range(steps), forward, opt, counts.hooks(opt), reduction="sum")
    finally:
        opt.zero_grad(set_to_none=True)
        per_sample.close()
        task.shared.eval()
    return counts.result(stats, task.name, plan, ledger, **mech)
