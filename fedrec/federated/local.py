"""An in-process transport: every platform's client in this process, no Flower, no Ray.

The same :class:`~fedrec.federated.server.Coordinator` and
:class:`~fedrec.federated.client.PlatformClient` as the Flower apps, called directly, with
the replies the ClientApp would send (:mod:`fedrec.federated.replies`); useful as a
reference (a Flower run must give the same numbers) and for debugging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fedrec.federated.aggregate import state_nbytes
from fedrec.federated.client import PlatformClient, PlatformParts
from fedrec.federated.identity import local_node
from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.replies import merge_local_reports, train_metrics
from fedrec.federated.rounds import initial_adapter, prepare_run_config, run_rounds
from fedrec.federated.server import Coordinator
from fedrec.federated.shards import client_names, partition_client
from fedrec.io import safe_name


class LocalTransport:
    """Calls every client (one per platform, or per user shard) directly: all rounds, all clients.

    The clients of one platform share its :class:`~fedrec.federated.client.PlatformParts`.
    """

    def __init__(self, cfg: DictConfig, state_root: str | Path, threads: int | None = None) -> None:
        self.clients: dict[str, PlatformClient] = {}
        self.parts: dict[str, PlatformParts] = {}
        self.cfg, self.state_root, self.threads = cfg, Path(state_root), threads

    def _client(self, name: str, run_key: str) -> PlatformClient:
        if name not in self.clients:
            platform, shard = partition_client(self.cfg, client_names(self.cfg).index(name))
            folder = self.state_root / safe_name(run_key, "the run key") / name
            client = PlatformClient(
                self.cfg,
                platform,
                folder,
                threads=self.threads,
                shard=shard,
                parts=self.parts.get(platform),
                ledger_dir=self.state_root / "privacy",
            )
            self.clients[name] = client
            self.parts[platform] = client.parts
        return self.clients[name]

    def train_round(self, server_round: int, co: Coordinator) -> int:
        """Train every client from the global adapter and aggregate."""
        updates = []
        for name in co.clients:
            c = self._client(name, co.run_key)
            out = c.train(co.global_state, server_round)
            sent = train_metrics(out.num_examples, out.loss, out.steps, out.seconds, 0.0, out.metrics, c.private)
            metrics = {k.replace("-", "_"): float(v) for k, v in sent.items() if k != "num-examples"}
            if out.refused is not None:
                updates.append(
                    ClientUpdate(local_node(name), c.platform, None, 0, metrics, refused=out.refused, client=name)
                )
                continue
            nbytes = state_nbytes(out.state)
            updates.append(
                ClientUpdate(local_node(name), c.platform, out.state, out.num_examples, metrics, nbytes, client=name)
            )
        co.aggregate_train(server_round, updates)
        return state_nbytes(co.global_state)

    def evaluate_round(
        self, server_round: int, co: Coordinator, state: dict[str, np.ndarray], split: str
    ) -> tuple[list[ClientEvaluation], int]:
        """Score ``state`` on every client's ``split``."""
        max_users = int(co.fed.eval_max_users) if split == "valid" else -1
        out = []
        for name in co.clients:
            c = self._client(name, co.run_key)
            m = c.evaluation_reply(state, split, server_round, max_users)
            out.append(ClientEvaluation(local_node(name), c.platform, dict(m), name))
        return out, state_nbytes(state)


def run_local(cfg: DictConfig, out_dir: str | Path, command: str = "local") -> dict[str, Any]:
    """Run the federation in this process (see the module docstring); returns the results document.

    The operator runs every platform here, so a DP run's withheld test metrics are read
    back from the platforms' local reports (:func:`fedrec.federated.replies.merge_local_reports`).
    """
    run_cfg = prepare_run_config(cfg, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "fedrec_config.yaml").write_text(OmegaConf.to_yaml(run_cfg))
    initial, backbone = initial_adapter(run_cfg)
    co = Coordinator(run_cfg, out_dir, initial, backbone)
    threads = max(1, int(run_cfg.federation.client_cpus))
    state_root = run_cfg.federation.client_state_dir
    doc = run_rounds(co, LocalTransport(run_cfg, state_root, threads), command)
    return merge_local_reports(doc, state_root)
