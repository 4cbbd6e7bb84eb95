"""An in-process transport: every platform's client in this process, no Flower, no Ray.

The same :class:`~fedrec.federated.server.Coordinator` and
:class:`~fedrec.federated.client.PlatformClient` as the Flower apps, called directly;
useful as a reference (a Flower run must give the same numbers) and for debugging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fedrec.federated.aggregate import state_nbytes
from fedrec.federated.client import PlatformClient
from fedrec.federated.server import (
    ClientEvaluation,
    ClientUpdate,
    Coordinator,
    initial_adapter,
    prepare_run_config,
    run_rounds,
)


class LocalTransport:
    """Calls one :class:`PlatformClient` per platform directly (all rounds, all platforms)."""

    def __init__(self, cfg: DictConfig, state_root: str | Path, threads: int | None = None) -> None:
        self.clients: dict[str, PlatformClient] = {}
        self.cfg, self.state_root, self.threads = cfg, Path(state_root), threads

    def _client(self, platform: str, run_key: str) -> PlatformClient:
        if platform not in self.clients:
            folder = self.state_root / run_key / platform
            self.clients[platform] = PlatformClient(self.cfg, platform, folder, threads=self.threads)
        return self.clients[platform]

    def train_round(self, server_round: int, co: Coordinator) -> int:
        """Train every platform from the global adapter and aggregate."""
        updates = []
        for p in co.platforms:
            out = self._client(p, co.run_key).train(co.global_state, server_round)
            metrics = {"train_loss": out.loss, "steps": float(out.steps), "train_seconds": out.seconds, **out.metrics}
            if out.refused is not None:
                updates.append(ClientUpdate("local", p, None, 0, metrics, refused=out.refused))
                continue
            updates.append(ClientUpdate("local", p, out.state, out.num_examples, metrics, state_nbytes(out.state)))
        co.aggregate_train(server_round, updates)
        return state_nbytes(co.global_state)

    def evaluate_round(
        self, server_round: int, co: Coordinator, state: dict[str, np.ndarray], split: str
    ) -> tuple[list[ClientEvaluation], int]:
        """Score ``state`` on every platform's ``split``."""
        max_users = int(co.fed.eval_max_users) if split == "valid" else -1
        out = []
        for p in co.platforms:
            m = self._client(p, co.run_key).evaluate(state, split, server_round, max_users)
            out.append(ClientEvaluation("local", p, {**m, "num-examples": m["users"]}))
        return out, state_nbytes(state)


def run_local(cfg: DictConfig, out_dir: str | Path, command: str = "local") -> dict[str, Any]:
    """Run the federation in this process (see the module docstring); returns the results document."""
    run_cfg = prepare_run_config(cfg, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "fedrec_config.yaml").write_text(OmegaConf.to_yaml(run_cfg))
    initial, backbone = initial_adapter(run_cfg)
    co = Coordinator(run_cfg, out_dir, initial, backbone)
    threads = max(1, int(run_cfg.federation.client_cpus))
    return run_rounds(co, LocalTransport(run_cfg, run_cfg.federation.client_state_dir, threads), command)
