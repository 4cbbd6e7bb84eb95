"""A node's own privacy limits: set in its node config, out of the server's reach.

A platform's operator starts its SuperNode with, for example::

    flower-supernode ... --node-config "platform='video' max-epsilon=8.0 min-noise-multiplier=0.5"

The run's configuration comes from the server and may ask for anything (no budget, no
noise, no DP at all); :class:`NodeCaps` is read from the node config only, so the
server cannot loosen it. A node with a cap trains only under DP, never with a noise
multiplier below ``min-noise-multiplier``, and never past ``max-epsilon`` summed over
every ledger of the platform on the node (all the training data it has charged, not
only the current data: see :mod:`fedrec.privacy.ledgers`), measured at the node's own
``privacy-delta``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedrec.privacy.accounting import Entry, epsilon_of

#: node-config keys of the caps (Flower's node config is kebab-case)
MAX_EPSILON = "max-epsilon"
MIN_NOISE = "min-noise-multiplier"
CAP_DELTA = "privacy-delta"
NODE_KEYS = (MAX_EPSILON, MIN_NOISE, CAP_DELTA)


def _number(node_config: Mapping[str, Any], key: str) -> float | None:
    value = node_config.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"node config {key}={value!r} is not a number") from None
    if math.isnan(out):
        raise ValueError(f"node config {key}={value!r} is not a number")
    return out


@dataclass(frozen=True)
class NodeCaps:
    """The privacy limits a node enforces whatever the run asks.

    Attributes
    ----------
    max_epsilon : float or None
        The platform's epsilon on this node, summed over all its ledgers (basic
        composition, at delta = their number x :attr:`delta`), may not pass this.
    min_noise_multiplier : float or None
        A round with a smaller noise multiplier is refused.
    delta : float
        The delta :attr:`max_epsilon` is measured at (default 1e-5, PROTOCOL.md).
    """

    max_epsilon: float | None = None
    min_noise_multiplier: float | None = None
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ValueError(f"node config {MAX_EPSILON} must be > 0, got {self.max_epsilon}")
        if self.min_noise_multiplier is not None and not self.min_noise_multiplier >= 0:
            raise ValueError(f"node config {MIN_NOISE} must be >= 0, got {self.min_noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"node config {CAP_DELTA} must be in (0, 1), got {self.delta}")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodeCaps | None:
        """The caps in a node config, or None when it sets neither cap.

        Raises
        ------
        ValueError
            If a cap is not a number or out of range, or ``privacy-delta`` is given
            without a cap (a delta alone limits nothing; likely a typo).
        """
        max_eps, min_noise = _number(node_config, MAX_EPSILON), _number(node_config, MIN_NOISE)
        delta = _number(node_config, CAP_DELTA)
        if max_eps is None and min_noise is None:
            if delta is not None:
                raise ValueError(f"node config {CAP_DELTA} is set but neither {MAX_EPSILON} nor {MIN_NOISE} is")
            return None
        return cls(max_eps, min_noise, 1e-5 if delta is None else delta)

    def spent(self, history: Sequence[Entry], elsewhere: Sequence[Sequence[Entry]], accountant: str) -> float:
        """The platform's epsilon on this node at :attr:`delta`: ``history`` plus every other ledger's."""
        return sum(epsilon_of(h, self.delta, accountant) for h in (history, *elsewhere))

    def check(
        self,
        history: Sequence[Entry],
        round_entry: Entry,
        elsewhere: Sequence[Sequence[Entry]],
        accountant: str,
    ) -> str | None:
        """Why the node refuses a round, or None if the caps allow it.

        Parameters
        ----------
        history : sequence of (noise_multiplier, sample_rate, steps)
            What the current data's ledger charged so far.
        round_entry : (noise_multiplier, sample_rate, steps)
            The round about to be charged.
        elsewhere : sequence of histories
            The platform's other ledgers on this node (other training data).
        accountant : str
            Accountant of the check (any of fedrec's is an upper bound).
        """
        sigma = round_entry[0]
        if self.min_noise_multiplier is not None and sigma < self.min_noise_multiplier:
            return (
                f"node cap: the run asks for noise multiplier {sigma:.4g}, below this node's "
                f"{MIN_NOISE}={self.min_noise_multiplier:g}; the round was not trained"
            )
        if self.max_epsilon is None:
            return None
        after = self.spent([*history, round_entry], elsewhere, accountant)
        if after <= self.max_epsilon:
            return None
        n = 1 + len(elsewhere)
        return (
            f"node cap: this round ({round_entry[2]} steps, noise multiplier {sigma:.4g}, sampling rate "
            f"{round_entry[1]:.4g}) would take the platform's epsilon on this node to {after:.4g} > "
            f"{MAX_EPSILON}={self.max_epsilon:g} (delta={self.delta:g} per ledger, {n} ledger(s), "
            f"{accountant} accountant); the round was not trained"
        )
