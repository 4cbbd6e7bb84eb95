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
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from fedrec.privacy.accounting import PrivacyLedger, calibrate_noise, epsilon_of
from fedrec.privacy.per_sample import FP32DPOptimizer, PerSampleGradients
from fedrec.privacy.sampling import UserSampler
from fedrec.task import PlatformTask
from fedrec.train import FitResult, sample_negatives, trainable_parameters

# -- the plan: mechanism parameters fixed before training ---------------------------------


@dataclass(frozen=True)
class DPPlan:
    """The DP mechanism of a run, fixed before its first step.

    Attributes
    ----------
    noise_multiplier : float
        Noise std / max_grad_norm (calibrated when ``target_epsilon`` is set).
    max_grad_norm : float
        Per-example (= per-user per step) clip norm.
    sample_rate : float
        Poisson rate ``q`` over users.
    expected_batch_size : float
        ``q * num_users``: the gradient sum is divided by it.
    num_users : int
        Users with at least one training example.
    steps_per_round : int
        Steps of one round (local training call).
    rounds : int
        Rounds of the run (1 for non-federated training).
    delta : float
        Target delta.
    accountant : str
        ``"rdp"`` or ``"prv"``.
    secure_mode : bool
        OS-CSPRNG sampling and Opacus's secure noise.
    target_epsilon : float or None
        The target the noise was calibrated to, if any.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    expected_batch_size: float
    num_users: int
    steps_per_round: int
    rounds: int = 1
    delta: float = 1e-5
    accountant: str = "rdp"
    secure_mode: bool = False
    target_epsilon: float | None = None

    @property
    def total_steps(self) -> int:
        """``rounds * steps_per_round``."""
        return self.rounds * self.steps_per_round

    def epsilon(self, rounds: int | None = None) -> float:
        """Epsilon after ``rounds`` rounds of this plan (default: all)."""
        n = self.rounds if rounds is None else rounds
        entry = (self.noise_multiplier, self.sample_rate, n * self.steps_per_round)
        return epsilon_of([entry], self.delta, self.accountant)


def dp_steps(epochs: float, sample_rate: float, max_steps: int = -1) -> int:
    """Steps of ``epochs`` user-level epochs: ``round(epochs / q)`` (each user sampled ``epochs`` times in
    expectation), capped at ``max_steps`` when that is ``>= 0``, at least 1."""
    steps = max(1, round(epochs / sample_rate))
    return min(steps, max_steps) if max_steps >= 0 else steps


def plan_private(
    num_users: int,
    expected_batch_size: int,
    steps_per_round: int,
    rounds: int = 1,
    max_grad_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    accountant: str = "rdp",
    secure_mode: bool = False,
) -> DPPlan:
    """Fix the mechanism of a run: sampling rate, steps and (calibrated) noise.

    Parameters
    ----------
    num_users : int
        Users with at least one training example on the platform.
    expected_batch_size : int
        Expected users per step; ``q = min(1, expected_batch_size / num_users)``.
    steps_per_round : int
        Steps per round (see :func:`dp_steps`).
    rounds : int, default 1
        Rounds in the whole run (the calibration covers all of them).
    max_grad_norm : float, default 1.0
        Clip norm.
    noise_multiplier : float, default 1.0
        Used when ``target_epsilon`` is None.
    target_epsilon : float, optional
        Epsilon after ``rounds * steps_per_round`` steps; the noise multiplier is
        calibrated with :func:`~fedrec.privacy.accounting.calibrate_noise`.
    delta : float, default 1e-5
        Target delta.
    accountant : {"rdp", "prv"}, default "rdp"
        Accountant for the calibration and the ledger.
    secure_mode : bool, default False
        See :class:`DPPlan`.
    """
    if num_users <= 0 or expected_batch_size <= 0 or steps_per_round <= 0 or rounds <= 0:
        raise ValueError(
            f"need users, batch, steps and rounds > 0, got {num_users}, {expected_batch_size}, "
            f"{steps_per_round}, {rounds}"
        )
    if max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
    q = min(1.0, expected_batch_size / num_users)
    sigma = noise_multiplier
    if target_epsilon is not None:
        sigma = calibrate_noise(target_epsilon, delta, q, rounds * steps_per_round, accountant)
    if sigma < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {sigma}")
    return DPPlan(
        noise_multiplier=float(sigma),
        max_grad_norm=float(max_grad_norm),
        sample_rate=q,
        expected_batch_size=q * num_users,
        num_users=int(num_users),
        steps_per_round=int(steps_per_round),
        rounds=int(rounds),
        delta=float(delta),
        accountant=accountant,
        secure_mode=bool(secure_mode),
        target_epsilon=None if target_epsilon is None else float(target_epsilon),
    )


def count_users(task: PlatformTask) -> int:
    """Users of ``task`` with at least one training example (the sampled population)."""
    return len(np.unique(task.examples.users))


def plan_from_config(cfg: DictConfig, num_users: int, federated: bool = False) -> DPPlan:
    """:func:`plan_private` from a resolved fedrec config.

    Parameters
    ----------
    cfg : DictConfig
        Uses ``privacy.*``, ``train.batch_size`` and, when ``federated``,
        ``federation.rounds`` / ``local_epochs`` / ``local_steps``, else ``train.epochs`` /
        ``train.max_steps`` with one round.
    num_users : int
        See :func:`count_users`.
    federated : bool, default False
        Plan a federated run (the client's view) or a single local run.
    """
    p = cfg.privacy
    if not p.enabled:
        raise ValueError("privacy is off (privacy.enabled=false); nothing to plan")
    batch = int(p.batch_size or cfg.train.batch_size)
    q = min(1.0, batch / num_users)
    if federated:
        rounds, epochs, cap = int(cfg.federation.rounds), float(cfg.federation.local_epochs), cfg.federation.local_steps
    else:
        rounds, epochs, cap = 1, float(cfg.train.epochs), cfg.train.max_steps
    return plan_private(
        num_users=num_users,
        expected_batch_size=batch,
        steps_per_round=dp_steps(epochs, q, int(cap)),
        rounds=rounds,
        max_grad_norm=float(p.max_grad_norm),
        noise_multiplier=float(p.noise_multiplier),
        target_epsilon=None if p.target_epsilon is None else float(p.target_epsilon),
        delta=float(p.delta),
        accountant=str(p.accountant),
        secure_mode=bool(p.secure_mode),
    )


def ledger_from_config(cfg: DictConfig, path: str | os.PathLike[str] | None = None) -> PrivacyLedger:
    """The platform's ledger with ``privacy.delta`` / ``accountant`` / ``budget``, loaded from ``path`` if it exists."""
    p = cfg.privacy
    budget = None if p.budget is None else float(p.budget)
    if path is not None:
        return PrivacyLedger.open(path, delta=float(p.delta), accountant=str(p.accountant), budget=budget)
    return PrivacyLedger(delta=float(p.delta), accountant=str(p.accountant), budget=budget)


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


def noise_generator(plan: DPPlan, seed: int) -> torch.Generator:
    """The noise generator of a run: seeded (reproducible), or from the OS CSPRNG in secure mode."""
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") if plan.secure_mode else seed)
    return g


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
    if ledger is None:
        ledger = PrivacyLedger(delta=plan.delta, accountant=plan.accountant)
    if ledger.delta != plan.delta or ledger.accountant != plan.accountant:
        raise ValueError(
            f"ledger (delta={ledger.delta}, accountant={ledger.accountant}) does not match the plan "
            f"(delta={plan.delta}, accountant={plan.accountant})"
        )
    mech = dict(
        delta=plan.delta,
        accountant=plan.accountant,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        sample_rate=plan.sample_rate,
    )
    steps = plan.steps_per_round
    reason = ledger.check(plan.noise_multiplier, plan.sample_rate, steps)
    if reason is not None:
        return PrivateFitResult(num_examples={task.name: 0}, epsilon=ledger.epsilon(), refused=reason, **mech)  # type: ignore[arg-type]
    ledger.charge(plan.noise_multiplier, plan.sample_rate, steps, round_id)

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
    loss_sum, sampled, empty, clipped = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"dp-train {task.name}", unit="step", disable=not progress)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for step in bar:
                if step > 0 and step % index_refresh_steps == 0:
                    task.refresh_index()
                if plan.secure_mode:
                    gen.manual_seed(int.from_bytes(os.urandom(8), "little"))
                rows = sampler.sample()
                opt.zero_grad(set_to_none=True)
                if len(rows) == 0:
                    empty += 1
                    for p in opt.dense_params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                else:
                    batch = task.batch(rows, sample_negatives(task.data.num_items, num_negatives, rng))
                    losses = per_sample(**batch)
                    losses.sum().backward()
                    for p in opt.dense_params:  # a parameter the forward did not reach: zero per-sample grads
                        if getattr(p, "grad_sample", None) is None:
                            p.grad_sample = torch.zeros((len(rows), *p.shape), dtype=p.dtype)
                    loss_sum += float(losses.detach().sum())
                    sampled += len(rows)
                opt.step()
                if opt.last_norms is not None and len(opt.last_norms):
                    clipped += int((opt.last_norms > plan.max_grad_norm).sum())
                if step % 10 == 0 and sampled:
                    bar.set_postfix(loss=f"{loss_sum / sampled:.3f}", eps=f"{ledger.epsilon():.2f}")
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)
        per_sample.close()  # removes the hooks and Opacus's per-parameter attributes
        task.model.eval()
    return PrivateFitResult(
        steps=steps,
        num_examples={task.name: int(round(steps * plan.expected_batch_size))},
        loss={task.name: loss_sum / sampled if sampled else math.nan},
        seconds=time.perf_counter() - start,
        epsilon=ledger.epsilon(),
        sampled_examples=sampled,
        empty_steps=empty,
        clipped_fraction=clipped / sampled if sampled else math.nan,
        **mech,  # type: ignore[arg-type]
    )


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
