"""The DP mechanism of a run, fixed before its first step: noise, clip norm, sampling rate, steps.

:func:`plan_private` calibrates the noise to a target epsilon (or takes a given noise
multiplier) for the Poisson user sampling :mod:`fedrec.privacy.dpsgd` trains with;
:func:`plan_from_config` and :func:`ledger_from_config` read the ``privacy`` group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig

from fedrec.privacy.accounting import PrivacyLedger, calibrate_noise, epsilon_of
from fedrec.task import PlatformTask


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
    """Steps of ``epochs`` user-level epochs: ``round(epochs / q)``, at least 1.

    Each user is sampled ``epochs`` times in expectation; capped at ``max_steps`` when that is ``>= 0``.
    """
    steps = max(1, round(epochs / sample_rate))
    return min(steps, max_steps) if max_steps >= 0 else steps


def plan_private(
    num_users: int,
    expected_batch_size: float,
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
        Uses ``privacy.*`` (``sample_rate``, else ``batch_size``, else ``train.batch_size``
        sets the users per step), and, when ``federated``,
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
    rate = float(p.get("sample_rate", 0.0))
    batch = rate * num_users if rate > 0 else int(p.batch_size or cfg.train.batch_size)
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
