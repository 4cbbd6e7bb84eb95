"""Flower ServerApp: FedAvg over the LoRA adapters, a thin transport over :mod:`fedrec.federated.server`.

Each round: sample the clients (FedAvg's sampling), send them the global adapter and
the run's config, aggregate the accepted updates with the configured mode
(``federation.aggregation``: fedavg, ffa or svd; rejected updates are logged and
excluded), send the new adapter out for validation, record the cross-platform loss,
keep the best round and checkpoint atomically. After the last round the best round's
adapter is scored on every client's test split and ``results.json`` is written. With
``federation.secure_aggregation=secaggplus`` training goes through Flower's SecAgg+
(:mod:`server.secagg`): the server receives only the example-weighted mean.

Run config (``[tool.flwr.app.config]``, or ``flwr run --run-config``):

``config-path``
    A resolved fedrec YAML (``fedrec simulate`` writes one). Empty: compose ``conf/``
    with ``overrides``.
``overrides``
    Hydra overrides, space-separated (e.g. ``"model=tiny federation.rounds=2"``).
``out-dir``
    Where results, adapters and the checkpoint go (empty: ``outputs/deploy/<time>``).
"""

from __future__ import annotations

import random
import shlex
import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from omegaconf import DictConfig, OmegaConf

from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.quorum import wait_for_quorum
from fedrec.federated.replies import is_withheld
from fedrec.federated.rounds import initial_adapter, run_rounds
from fedrec.federated.server import Coordinator
from fedrec.metrics import METRICS
from server.secagg import secagg_train_round

app = ServerApp()


def to_record(state: dict[str, Any]) -> ArrayRecord:
    """An adapter state as an ArrayRecord (NumPy serialisation)."""
    return ArrayRecord({k: Array(v) for k, v in state.items()})


def _identity(msg: Message) -> tuple[str, str]:
    """``(platform, client name)`` the reply claims (``client`` "" for an unsplit platform; both "": no claim).

    Only a claim: :class:`fedrec.federated.identity.NodeRegistry` decides what the reply
    counts for from its sender, ``msg.metadata.src_node_id``.
    """
    info = msg.content.config_records.get("info") if msg.has_content() else None
    if info is not None and "platform" in info:
        platform = str(info["platform"])
        client = str(info.get("client", platform))
        return platform, "" if client == platform else client
    return "", ""


def reply_to_update(msg: Message) -> ClientUpdate:
    """Decode a training reply; whatever makes it unusable becomes the update's ``problem``."""
    node = str(msg.metadata.src_node_id)
    platform, client = _identity(msg)
    if msg.has_error():
        return ClientUpdate(node, platform, None, 0, problem=f"client error: {msg.error.reason}", client=client)
    content = msg.content
    info = content.config_records.get("info")
    if info is not None and "refused" in info:  # the client declined to train (its privacy budget)
        metrics = dict(next(iter(content.metric_records.values()))) if content.metric_records else {}
        nums = {k.replace("-", "_"): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        return ClientUpdate(node, platform, None, 0, nums, refused=str(info["refused"]), client=client)
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        problem = "expected exactly one ArrayRecord and one MetricRecord"
        return ClientUpdate(node, platform, None, 0, problem=problem, client=client)
    record = next(iter(content.array_records.values()))
    metrics = dict(next(iter(content.metric_records.values())))
    try:
        state = {k: v.numpy() for k, v in record.items()}
    except Exception as exc:
        return ClientUpdate(node, platform, None, 0, problem=f"arrays could not be decoded: {exc}", client=client)
    n = metrics.pop("num-examples", None)
    other = {k.replace("-", "_"): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return ClientUpdate(node, platform, state, n, other, nbytes=record.count_bytes(), client=client)


class FedrecStrategy(FedAvg):
    """FedAvg's sampling and messaging with fedrec's validation and LoRA aggregation.

    Parameters
    ----------
    coordinator : Coordinator
        Validates and aggregates the updates, keeps the global adapter.
    **kwargs
        FedAvg's arguments (fractions, minimum nodes).
    """

    def __init__(self, coordinator: Coordinator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coordinator = coordinator
        self.evaluations: list[ClientEvaluation] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each reply on its own (a bad one never blocks the others), then aggregate."""
        updates = [reply_to_update(m) for m in replies]
        new = self.coordinator.aggregate_train(server_round, updates)
        if new is None:
            return None, None
        train = self.coordinator.pending["train"]
        total = sum(t["num_examples"] for t in train.values())
        loss = sum(t["num_examples"] * t.get("train_loss", 0.0) for t in train.values()) / total
        return to_record(new), MetricRecord({"num-examples": total, "train-loss": loss})

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Collect each client's metrics (kept in :attr:`evaluations`); return their user-weighted mean."""
        self.evaluations = []
        for msg in replies:
            if msg.has_error():
                log(WARNING, "evaluation failed on node %s: %s", msg.metadata.src_node_id, msg.error.reason)
                continue
            m = dict(next(iter(msg.content.metric_records.values())))
            platform, client = _identity(msg)
            self.evaluations.append(ClientEvaluation(str(msg.metadata.src_node_id), platform, m, client))
        # a reply with missing or non-finite metrics or no users is ignored (logged) before anything averages it
        self.evaluations = self.coordinator.screen_evaluations(f"round {server_round}", self.evaluations)
        scored = [e for e in self.evaluations if not is_withheld(e.metrics)]  # DP clients withhold theirs
        if not scored:
            return None
        users = sum(float(e.metrics["users"]) for e in scored)
        keys = ("loss", *METRICS)
        return MetricRecord(
            {k: sum(float(e.metrics[k]) * float(e.metrics["users"]) for e in scored) / users for k in keys}
        )


def _flwr_log(level: int, message: str) -> None:
    log(level, "%s", message)


class FlowerTransport:
    """Reaches the clients through the grid; :class:`FedrecStrategy` validates and aggregates the replies.

    Which nodes get a message: before training, the connected nodes the identity
    registry admits, waited for until ``federation.wait_timeout`` and at least
    ``federation.min_clients`` of them (:func:`fedrec.federated.quorum.wait_for_quorum`),
    sampled with ``federation.fraction_train``; evaluation goes, without waiting, to the
    admitted connected nodes but those that left this round's training unanswered (a
    dead node costs ``round_timeout`` once per round, and is back once it reconnects).
    Every message expires after ``round_timeout`` (its TTL), so a node that comes back
    does not run a round the server has given up on.
    """

    def __init__(self, grid: Grid, strategy: FedrecStrategy, timeout: float) -> None:
        self.grid, self.strategy, self.timeout = grid, strategy, timeout
        self.silent: set[int] = set()  # nodes that did not answer this round's training

    def _connected(self, co: Coordinator) -> list[int]:
        return [n for n in self.grid.get_node_ids() if co.identity.admits(str(n))]

    def _send(self, kind: str, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord) -> list[Message]:
        record = RecordDict({"arrays": arrays, "config": config})
        # a message lives as long as the server waits for it: a node back later never runs a stale round
        messages = [Message(content=record, message_type=kind, dst_node_id=n, ttl=self.timeout) for n in nodes]
        replies, sent = [], set(nodes)
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            if reply.metadata.src_node_id in sent:
                replies.append(reply)
            else:  # the SuperLink's own error reply for a message that expired or a node that went offline
                dst = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
                why = reply.error.reason if reply.has_error() else "a reply from another node"
                log(WARNING, "%s: no reply from node %s: %s", kind, dst.get(reply.metadata.reply_to_message_id), why)
        self.silent = sent - {m.metadata.src_node_id for m in replies}
        return replies

    def train_round(self, server_round: int, co: Coordinator) -> int:
        """Wait for a quorum, send the global adapter for training; the strategy validates and aggregates."""
        fed = co.fed
        nodes = wait_for_quorum(
            lambda: self._connected(co),
            len(co.clients),
            co.min_clients,
            float(fed.wait_timeout),
            f"round {server_round}",
            _flwr_log,
        )
        size = min(len(nodes), max(int(len(nodes) * float(fed.fraction_train)), co.min_clients))
        nodes = sorted(random.sample(nodes, size))
        arrays = to_record(co.global_state)
        if str(fed.get("secure_aggregation", "none")) == "secaggplus":  # the server sees only the mean
            self.silent = secagg_train_round(self.grid, co, nodes, server_round, self.timeout)
            return arrays.count_bytes()
        config = ConfigRecord({**co.message_config(), "server-round": server_round})
        replies = self._send(MessageType.TRAIN, nodes, arrays, config)
        if self.silent:  # timed out (federation.round_timeout), or the SuperLink found the node offline
            log(WARNING, "round %d: no training reply from node(s) %s", server_round, sorted(self.silent))
        self.strategy.aggregate_train(server_round, replies)
        return arrays.count_bytes()

    def evaluate_round(
        self, server_round: int, co: Coordinator, state: dict[str, Any], split: str
    ) -> tuple[list[ClientEvaluation], int]:
        """Send ``state`` for scoring on ``split`` to the connected nodes (no wait; not to this round's silent ones)."""
        arrays = to_record(state)
        config = ConfigRecord({**co.message_config(split, server_round), "server-round": server_round})
        nodes = sorted(n for n in self._connected(co) if n not in self.silent)
        self.strategy.aggregate_evaluate(server_round, self._send(MessageType.EVALUATE, nodes, arrays, config))
        return list(self.strategy.evaluations), arrays.count_bytes()


def run_federation(grid: Grid, cfg: DictConfig, out_dir: str | Path, command: str) -> dict[str, Any]:
    """Run (or resume) the federated rounds over the grid's nodes; returns the results document."""
    fed = cfg.federation
    initial, backbone_bytes = initial_adapter(cfg)
    co = Coordinator(cfg, out_dir, initial, backbone_bytes, log=_flwr_log)
    n = co.min_clients
    strategy = FedrecStrategy(
        co,
        fraction_train=float(fed.fraction_train),
        fraction_evaluate=1.0,
        min_train_nodes=n,
        min_evaluate_nodes=n,
        min_available_nodes=n,
    )
    log(
        INFO,
        "fedrec: %s aggregation, %d rounds, adapter %.1f KiB (backbone %.1f MiB), run directory %s",
        co.mode,
        fed.rounds,
        sum(v.nbytes for v in initial.values()) / 1024,
        backbone_bytes / 1024**2,
        out_dir,
    )
    return run_rounds(co, FlowerTransport(grid, strategy, float(fed.round_timeout)), command)


def load_config(path: str) -> DictConfig:
    """A resolved fedrec config from a YAML file."""
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def compose_config(overrides: str) -> DictConfig:
    """Compose ``conf/`` (the app's own, else fedrec's) with Hydra overrides, validated."""
    from fedrec.config import compose_config as compose
    from fedrec.config import conf_dir

    here = Path(__file__).resolve().parent.parent / "conf"
    folder = here if (here / "config.yaml").is_file() else conf_dir()
    return compose(shlex.split(overrides), command="deploy", config_dir=folder)


def make_server_app(config_path: str, out_dir: str, command: str = "simulate") -> ServerApp:
    """A ServerApp bound to a resolved config file and run directory (used by ``fedrec simulate``)."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, load_config(config_path), out_dir, command)

    return server_app


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployment entry point: the config comes from the run config (see the module docstring)."""
    rc = context.run_config
    path = str(rc.get("config-path", ""))
    cfg = load_config(path) if path else compose_config(str(rc.get("overrides", "")))
    out = str(rc.get("out-dir", "")) or str(Path("outputs") / "deploy" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    run_federation(grid, cfg, Path(out).resolve(), "deploy")
