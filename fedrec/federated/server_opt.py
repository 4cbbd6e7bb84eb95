"""Server optimisers with state across rounds (``federation.server_optimizer``): FedAvgM and FedAdam.

The round's aggregate (FedAvg of the accepted updates) is turned into a *pseudo-gradient*
against the current global state, and a server-side optimiser takes one step with it
(Reddi et al., "Adaptive Federated Optimization", ICLR 2021). The formulas are Flower's own
(``flwr.serverapp.strategy.FedAvgM`` and ``FedAdam``, flwr 1.41), so a run with
``server_optimizer=fedadam`` moves the global state as Flower's strategy would on the same
aggregates (tested against it):

* ``fedavgm``: ``g = x - avg``; ``m = g`` in the first round, then ``m = momentum m + g``;
  ``x = x - lr m`` (``momentum = 0``: plain SGD on the pseudo-gradient, ``lr = 1``: FedAvg).
* ``fedadam``: ``d = avg - x``; ``m = beta_1 m + (1 - beta_1) d``; ``v = beta_2 v + (1 - beta_2) d²``
  (both from zero); ``x = x + lr_t m / (sqrt(v) + tau)`` with the bias-corrected
  ``lr_t = lr sqrt(1 - beta_2^(t+1)) / (1 - beta_1^(t+1))`` at round ``t``.

Its state (``m``, ``v``) is part of the server's checkpoint, so a resumed run continues it.
Applied to DP updates it is post-processing: it costs no privacy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: ``federation.server_optimizer`` choices
SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam")

State = dict[str, np.ndarray]


class ServerOptimizer:
    """One server-side optimiser step per round on the aggregate of the round's updates.

    Parameters
    ----------
    kind : {"none", "fedavgm", "fedadam"}
        ``none`` returns the aggregate itself (FedAvg).
    lr : float, default 1.0
        Server learning rate (Flower's ``server_learning_rate`` / ``eta``).
    momentum : float, default 0.0
        FedAvgM's server momentum.
    beta_1, beta_2, tau : float, default 0.9, 0.99, 1e-3
        FedAdam's moment decays and its adaptivity (Flower's defaults).

    Raises
    ------
    ValueError
        On an unknown kind or a setting out of range.
    """

    def __init__(
        self,
        kind: str = "none",
        lr: float = 1.0,
        momentum: float = 0.0,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if kind not in SERVER_OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {kind!r}; choose from {list(SERVER_OPTIMIZERS)}")
        if not lr > 0 or not 0 <= momentum < 1 or not 0 <= beta_1 < 1 or not 0 <= beta_2 < 1 or not tau > 0:
            raise ValueError(
                f"server optimizer settings out of range: lr {lr} (> 0), momentum {momentum}, beta_1 {beta_1}, "
                f"beta_2 {beta_2} (each in [0, 1)), tau {tau} (> 0)"
            )
        self.kind, self.lr, self.momentum = kind, lr, momentum
        self.beta_1, self.beta_2, self.tau = beta_1, beta_2, tau
        self.m: State = {}
        self.v: State = {}

    def step(self, server_round: int, current: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray]) -> State:
        """The new global state from the current one and the round's aggregate.

        Raises
        ------
        ValueError
            If the two states do not have the same tensors and shapes.
        """
        if set(current) != set(aggregate) or any(current[k].shape != aggregate[k].shape for k in current):
            raise ValueError("server optimizer: the aggregate does not have the global state's tensors and shapes")
        if self.kind == "none":
            return {k: np.array(v, copy=True) for k, v in aggregate.items()}
        if self.kind == "fedavgm":
            grad = {k: current[k] - aggregate[k] for k in current}
            if self.momentum > 0:
                self.m = grad if not self.m else {k: self.momentum * self.m[k] + grad[k] for k in grad}
                grad = self.m
            return {k: (current[k] - self.lr * grad[k]).astype(current[k].dtype) for k in current}
        delta = {k: aggregate[k] - current[k] for k in current}
        if not self.m:
            self.m = {k: np.zeros_like(v) for k, v in delta.items()}
            self.v = {k: np.zeros_like(v) for k, v in delta.items()}
        self.m = {k: self.beta_1 * self.m[k] + (1 - self.beta_1) * delta[k] for k in delta}
        self.v = {k: self.beta_2 * self.v[k] + (1 - self.beta_2) * delta[k] ** 2 for k in delta}
        t = float(server_round) + 1.0
        lr_t = self.lr * np.sqrt(1 - np.power(self.beta_2, t)) / (1 - np.power(self.beta_1, t))
        return {
            k: (current[k] + lr_t * self.m[k] / (np.sqrt(self.v[k]) + self.tau)).astype(current[k].dtype)
            for k in current
        }

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state, for the checkpoint."""
        return {"kind": self.kind, "m": dict(self.m), "v": dict(self.v)}

    def state_tensors(self) -> dict[str, Any]:
        """:meth:`state_dict` with its arrays as tensors (what the server's checkpoint holds)."""
        import torch

        st = self.state_dict()
        return {**st, **{k: {n: torch.from_numpy(np.asarray(a)) for n, a in st[k].items()} for k in ("m", "v")}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (or :meth:`state_tensors`).

        Raises
        ------
        ValueError
            If it was written by another kind of optimiser.
        """
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's server optimizer is {state.get('kind')!r}, this run's {self.kind!r}")
        self.m = {k: _array(v) for k, v in dict(state.get("m", {})).items()}
        self.v = {k: _array(v) for k, v in dict(state.get("v", {})).items()}


def _array(value: Any) -> np.ndarray:
    """A numpy copy of an array or a tensor."""
    return np.array(value.numpy() if hasattr(value, "numpy") else value, copy=True)


def from_config(fed: Any) -> ServerOptimizer:
    """The run's optimiser from ``federation.server_*``."""
    return ServerOptimizer(
        str(fed.get("server_optimizer", "none")),
        lr=float(fed.get("server_lr", 1.0)),
        momentum=float(fed.get("server_momentum", 0.0)),
        beta_1=float(fed.get("server_beta_1", 0.9)),
        beta_2=float(fed.get("server_beta_2", 0.99)),
        tau=float(fed.get("server_tau", 1e-3)),
    )
