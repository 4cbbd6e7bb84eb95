"""User-level Poisson sampling: each step, every user independently with probability ``q``.

A sampled user contributes exactly one of its training examples (chosen uniformly at
random, independently of everyone else), so adding or removing one user changes at most
one row of a batch: with per-example clipping to ``C`` the sensitivity of the summed
gradient to one *user* is ``C``, and the step is the Poisson-subsampled Gaussian
mechanism over users with rate ``q`` -- what Opacus's accountants account for.
"""

from __future__ import annotations

import os

import numpy as np


def secure_uniform(n: int) -> np.ndarray:
    """``n`` uniforms in ``[0, 1)`` with 53 random bits each, from the OS CSPRNG (``os.urandom``)."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) if n else np.zeros(0, dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class UserSampler:
    """Poisson sampling over users, one random example per sampled user.

    Parameters
    ----------
    example_users : numpy.ndarray
        ``[n_examples]`` the user of each training example (any integer ids).
    sample_rate : float
        Probability ``q`` that a user is in a step's batch, in ``(0, 1]``.
    rng : numpy.random.Generator, optional
        Source of randomness (reproducible). Ignored when ``secure`` is True.
    secure : bool, default False
        Draw every random number from the OS CSPRNG instead of ``rng``.
    """

    def __init__(
        self,
        example_users: np.ndarray,
        sample_rate: float,
        rng: np.random.Generator | None = None,
        secure: bool = False,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        users = np.asarray(example_users)
        self.order = np.argsort(users, kind="stable")
        self.user_ids, self.starts, self.counts = np.unique(users[self.order], return_index=True, return_counts=True)
        self.sample_rate = float(sample_rate)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.secure = secure

    @property
    def num_users(self) -> int:
        """Users with at least one example (the population being sampled)."""
        return len(self.user_ids)

    def _uniform(self, n: int) -> np.ndarray:
        return secure_uniform(n) if self.secure else self.rng.random(n)

    def sample(self) -> np.ndarray:
        """Example rows of one step's batch (possibly empty), one per sampled user, in user order.

        Every user draws its inclusion and its example choice from its own two uniforms
        (drawn for all users, sampled or not), so one user's draws never depend on whether
        others were sampled.
        """
        u = self._uniform(2 * self.num_users).reshape(2, self.num_users)
        chosen = np.flatnonzero(u[0] < self.sample_rate)
        counts = self.counts[chosen]
        offset = np.minimum((u[1, chosen] * counts).astype(np.int64), counts - 1)
        return self.order[self.starts[chosen] + offset].astype(np.int64)
