"""User-level DP-SGD local training: the differentially private counterpart of ``fit([task])``.

How a step works (and why the accounting is exact)
--------------------------------------------------
* **Sampling** -- :class:`~fedrec.privacy.sampling.UserSampler`: every user with at least
  one training example is in the step's batch independently with probability
  ``q = expected_batch_size / num_users``; a sampled user contributes *one* of its examples,
  chosen at random. So one user is at most one row of any batch.
* **Per-example gradients** -- :class:`~fedrec.privacy.per_sample.PerSampleGradients` on
  the :class:`~fedrec.model.two_tower.TwoTower` model: Opacus's ``GradSampleModule``
  (``hooks`` mode) for the LoRA linears, an exact (ids, output-gradient) representation for
  the hybrid head's ID embeddings. The loss is per example and a row depends only on its
  own user's data plus public data (catalogue negatives from a detached item index), so a
  row's gradient is that user's gradient. The shared encoder may run twice per row (user
  text and, with ``item_tower="shared"``, the positive item); the hooks sum both calls per
  row. Per-sample gradients are computed and clipped in fp32 even under bf16 autocast.
* **Clip and noise** -- Opacus's :class:`~opacus.optimizers.DPOptimizer` around AdamW:
  each row's gradient over *all* trainable parameters (LoRA and the platform-local ID
  embeddings) is clipped to ``max_grad_norm``, the sum gets Gaussian noise of std
  ``noise_multiplier * max_grad_norm`` and is divided by the *expected* batch size.
* **Empty batches** -- Poisson sampling can draw nobody. The forward/backward pass is
  skipped (it would crash), but the step is still taken with a zero sum plus noise, as
  Opacus itself does: every step releases the mechanism's output, so the accountant's
  step count stays exact and whether a batch was empty is never revealed.
* **Accounting** -- each step is the Poisson-subsampled Gaussian mechanism over users
  with rate ``q``; a :class:`~fedrec.privacy.accounting.PrivacyLedger` composes
  ``(noise_multiplier, q, steps)`` across rounds with Opacus's RDP or PRV accountant.
  ``PrivacyEngine.make_private`` is not used: its Poisson loader samples *examples*
  (example-level DP) and with a custom batch sampler it would infer ``q`` from
  ``1 / len(loader)``; here ``q`` is set explicitly from the user sampling.

What leaves the platform must be a function of the noisy updates only: the adapter, and
the public quantities in :meth:`PrivateFitResult.public_metrics`. The training loss and the
actual number of sampled users are computed from raw data without noise: local logs only.

The mechanism's parameters (:class:`DPPlan`) are fixed before training in
:mod:`fedrec.privacy.plan`; its public names are importable from here too.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig

from fedrec.privacy.accounting import PrivacyLedger
from fedrec.privacy.plan import DPPlan, count_users, dp_steps, ledger_from_config, plan_from_config, plan_private
from fedrec.privacy.sampling import UserSampler
from fedrec.steps import Step, StepHooks, StepStats, run_steps
from fedrec.task import PlatformTask
from fedrec.train import FitResult, sample_negatives, trainable_parameters

if TYPE_CHECKING:
    from fedrec.privacy.per_sample import FP32DPOptimizer  # imports opacus: only where DP trains

__all__ = [
    "DPPlan",
    "PrivateFitResult",
    "check_user_level",
    "count_users",
    "dp_steps",
    "ledger_from_config",
    "noise_generator",
    "plan_from_config",
    "plan_private",
    "train_private",
    "train_private_from_config",
]


# -- results -------------------------------------------------------------------------------


@dataclass
class PrivateFitResult(FitResult):
    """A DP training round's report.

    ``num_examples`` is the *expected* number of examples (``steps * q * num_users``):
    public, fine as a FedAvg weight. Everything marked *private* below is computed from
    raw data without noise: for local logs, never for the server.

    Attributes
    ----------
    epsilon : float
        Cumulative epsilon of the platform after this round (from the ledger).
    delta : float
        Delta of ``epsilon``.
    accountant : str
        Accountant of ``epsilon``.
    noise_multiplier, max_grad_norm, sample_rate : float
        The mechanism.
    refused : str or None
        Why the round was not trained (budget), else None.
    sampled_examples : int
        *Private*: examples actually sampled.
    empty_steps : int
        *Private*: steps whose Poisson batch was empty (noise-only steps).
    clipped_fraction : float
        *Private*: fraction of sampled examples whose gradient norm exceeded the clip norm.
    """

    epsilon: float = 0.0
    delta: float = 1e-5
    accountant: str = "rdp"
    noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0
    sample_rate: float = 0.0
    refused: str | None = None
    sampled_examples: int = 0
    empty_steps: int = 0
    clipped_fraction: float = float("nan")

    @property
    def examples_per_second(self) -> float:
        """Examples actually processed per second (throughput; a local measurement)."""
        return self.sampled_examples / self.seconds if self.seconds > 0 else 0.0

    def public_metrics(self) -> dict[str, Any]:
        """What a client may send along with its adapter (data-independent or DP)."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "num-examples": int(sum(self.num_examples.values())),
            "refused": self.refused or "",
        }


# -- training ------------------------------------------------------------------------------


def check_user_level(task: PlatformTask) -> None:
    """Refuse inputs that mix users (the friend segment), which user-level DP cannot cover.

    Raises
    ------
    ValueError
        If the task's user texts carry friends' items.
    """
    if getattr(task.inputs, "friend_tokens", 0) > 0:
        raise ValueError(
            f"platform {task.name}: friend_signal is on, so each user's input holds other users' data and one "
            "user's data reaches other users' gradients; user-level DP cannot be guaranteed. Turn "
            f"platforms.{task.name}.friend_signal off or train without privacy"
        )


def open_round(
    plan: DPPlan, ledger: PrivacyLedger | None, name: str, round_id: int | None
) -> tuple[PrivacyLedger, dict[str, Any], PrivateFitResult | None]:
    """Charge a DP round to ``ledger`` before its first step, or refuse it: ``(ledger, mechanism, refusal)``.

    ``ledger`` None is a fresh in-memory one. ``mechanism`` holds the fields every
    :class:`PrivateFitResult` of the round carries; ``refusal`` is the result to return
    untrained when the round would exceed the ledger's budget (nothing is charged then).

    Raises
    ------
    ValueError
        If the ledger's delta or accountant differ from the plan's.
    """
    if ledger is None:
        ledger = PrivacyLedger(delta=plan.delta, accountant=plan.accountant)
    if ledger.delta != plan.delta or ledger.accountant != plan.accountant:
        raise ValueError(
            f"ledger (delta={ledger.delta}, accountant={ledger.accountant}) does not match the plan "
            f"(delta={plan.delta}, accountant={plan.accountant})"
        )
    mech: dict[str, Any] = dict(
        delta=plan.delta,
        accountant=plan.accountant,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        sample_rate=plan.sample_rate,
    )
    reason = ledger.check(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    if reason is not None:
        return ledger, mech, PrivateFitResult(num_examples={name: 0}, epsilon=ledger.epsilon(), refused=reason, **mech)
    ledger.charge(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round, round_id)
    return ledger, mech, None


def noise_generator(plan: DPPlan, seed: int) -> torch.Generator:
    """The noise generator of a run: seeded (reproducible), or from the OS CSPRNG in secure mode."""
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") if plan.secure_mode else seed)
    return g


@dataclass
class DPCounts:
    """A DP-SGD round's step hooks and counts for :func:`fedrec.steps.run_steps` (two-tower and sequence model).

    Between backward and the optimiser step, every dense parameter the rows did not reach
    gets zero per-row gradients (all of them on an empty step: the step still releases
    noise, so the step count stays exact); after it, the rows whose gradient norm exceeded
    the clipping bound are counted.

    Parameters
    ----------
    max_grad_norm : float
        The clipping bound.
    """

    max_grad_norm: float
    empty: int = 0
    clipped: int = 0

    def hooks(self, opt: FP32DPOptimizer, **kw: Any) -> StepHooks[int]:
        """:class:`~fedrec.steps.StepHooks` with this round's ``after_backward`` and ``after`` (``kw``: the rest)."""

        def after_backward(result: Step) -> None:
            if result.losses is None:
                self.empty += 1
                for p in opt.dense_params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                return
            for p in opt.dense_params:  # a parameter the forward did not reach: zero per-sample grads
                if getattr(p, "grad_sample", None) is None:
                    p.grad_sample = torch.zeros((len(result.losses), *p.shape), dtype=p.dtype)

        def after(step: int, item: int, result: Step) -> None:
            if opt.last_norms is not None and len(opt.last_norms):
                self.clipped += int((opt.last_norms > self.max_grad_norm).sum())

        return StepHooks(after_backward=after_backward, after=after, **kw)

    def result(self, stats: StepStats, name: str, plan: DPPlan, ledger: PrivacyLedger, **mech: Any) -> PrivateFitResult:
        """The round's :class:`PrivateFitResult` from the loop's ``stats``."""
        return PrivateFitResult(
            steps=stats.steps,
            num_examples={name: round(stats.steps * plan.expected_batch_size)},
            loss={name: stats.loss if stats.rows else math.nan},
            seconds=stats.seconds,
            epsilon=ledger.epsilon(),
            sampled_examples=stats.rows,
            empty_steps=self.empty,
            clipped_fraction=self.clipped / stats.rows if stats.rows else math.nan,
            **mech,
        )


def train_private(
    task: PlatformTask,
    plan: DPPlan,
    ledger: PrivacyLedger | None = None,
    lr: float = 1e-3,
    head_lr: float = 1e-2,
    weight_decay: float = 0.0,
    num_negatives: int = 1024,
    index_refresh_steps: int = 50,
    seed: int = 0,
    progress: bool = True,
    round_id: int | None = None,
) -> PrivateFitResult:
    """Train one round of user-level DP-SGD on ``task`` (the DP counterpart of ``fit([task])``).

    Parameters
    ----------
    task : PlatformTask
        The platform (its encoder adapters and head are trained in place).
    plan : DPPlan
        The mechanism (:func:`plan_private` / :func:`plan_from_config`); runs
        ``plan.steps_per_round`` steps.
    ledger : PrivacyLedger, optional
        The platform's ledger; charged with this round *before* the first step (and
        saved, if it has a path). Default: a fresh in-memory ledger (one-off runs).
    lr : float, default 1e-3
        AdamW learning rate of the adapters.
    head_lr : float, default 1e-2
        AdamW learning rate of the platform-local head.
    weight_decay : float, default 0.0
        AdamW weight decay.
    num_negatives : int, default 1024
        Catalogue negatives per step (public randomness; -1 = whole catalogue).
    index_refresh_steps : int, default 50
        Re-encode the item index every N steps (post-processing of the DP model).
    seed : int, default 0
        Seed of sampling, negatives and noise (ignored for sampling and noise in
        secure mode).
    progress : bool, default True
        Progress bar.
    round_id : int, optional
        Tag of the round in the ledger.

    Returns
    -------
    PrivateFitResult
        With ``refused`` set (and nothing trained) if the round would exceed the
        ledger's budget.

    Raises
    ------
    ValueError
        If the task mixes users' data (:func:`check_user_level`), or the ledger's delta
        or accountant differ from the plan's.
    """
    check_user_level(task)
    ledger, mech, refused = open_round(plan, ledger, task.name, round_id)
    if refused is not None:
        return refused
    steps = plan.steps_per_round

    # separate streams: the (public) negatives never depend on how many users were sampled
    sample_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    sampler = UserSampler(task.examples.users, plan.sample_rate, rng=sample_rng, secure=plan.secure_mode)
    adapters, local = trainable_parameters([task])
    groups: list[dict[str, Any]] = [{"params": adapters, "lr": lr}]
    if local:
        groups.append({"params": local, "lr": head_lr})
    gen = noise_generator(plan, seed)
    task.model.train()
    task.refresh_index()
    from fedrec.privacy.per_sample import FP32DPOptimizer, PerSampleGradients  # imports opacus: here, not at import

    per_sample = PerSampleGradients(task.model)
    opt = FP32DPOptimizer(
        torch.optim.AdamW(groups, weight_decay=weight_decay),
        embeddings=per_sample.embeddings,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.expected_batch_size,  # type: ignore[arg-type]  # only divided by
        loss_reduction="mean",
        generator=gen,
        secure_mode=plan.secure_mode,
    )
    counts = DPCounts(plan.max_grad_norm)

    def before(step: int, _: int) -> None:
        if step > 0 and step % index_refresh_steps == 0:
            task.refresh_index()
        if plan.secure_mode:
            gen.manual_seed(int.from_bytes(os.urandom(8), "little"))

    def forward(_: int) -> Step:
        rows = sampler.sample()
        if len(rows) == 0:
            return Step(None)
        return Step(per_sample(**task.batch(rows, sample_negatives(task.data.num_items, num_negatives, rng))))

    def postfix(step: int, stats: StepStats, result: Step) -> dict[str, str] | None:
        return {"loss": f"{stats.loss:.3f}", "eps": f"{ledger.epsilon():.2f}"} if stats.rows else None

    hooks = counts.hooks(opt, desc=f"dp-train {task.name}", progress=progress, before=before, postfix=postfix)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            stats = run_steps(range(steps), forward, opt, hooks, reduction="sum")
    finally:
        opt.zero_grad(set_to_none=True)
        per_sample.close()  # removes the hooks and Opacus's per-parameter attributes
        task.model.eval()
    return counts.result(stats, task.name, plan, ledger, **mech)


def train_private_from_config(
    task: PlatformTask,
    cfg: DictConfig,
    ledger: PrivacyLedger | None = None,
    federated: bool = False,
    seed: int | None = None,
    round_id: int | None = None,
) -> PrivateFitResult:
    """:func:`train_private` with the plan and trainer settings of a resolved fedrec config.

    Parameters
    ----------
    task : PlatformTask
        The platform.
    cfg : DictConfig
        Resolved config (``privacy``, ``train`` and, when ``federated``, ``federation``).
    ledger : PrivacyLedger, optional
        The platform's ledger (default: :func:`ledger_from_config` in memory).
    federated : bool, default False
        Plan over ``federation.rounds`` rounds of local training.
    seed : int, optional
        Default ``cfg.seed``.
    round_id : int, optional
        Ledger tag.
    """
    plan = plan_from_config(cfg, count_users(task), federated=federated)
    t = cfg.train
    return train_private(
        task,
        plan,
        ledger if ledger is not None else ledger_from_config(cfg),
        lr=float(t.lr),
        head_lr=float(t.head_lr),
        weight_decay=float(t.weight_decay),
        num_negatives=int(t.num_negatives),
        index_refresh_steps=int(t.index_refresh_steps),
        seed=int(cfg.seed if seed is None else seed),
        progress=bool(t.progress),
        round_id=round_id,
    )
