"""A round's training through Flower's SecAgg+ workflow (``federation.secure_aggregation=secaggplus``).

Flower's :class:`~flwr.server.workflow.SecAggPlusWorkflow` is a legacy-context workflow:
it asks a legacy strategy's ``configure_fit`` for the FitIns per node, runs the four
stages (setup, share keys, collect masked vectors, unmask) as TRAIN messages, and hands
``aggregate_fit`` one FitRes per client whose parameters are all the same unmasked,
example-weighted mean; the individual adapters never reach the server. :class:`_OneRound`
is that strategy for one round's sampled nodes; :func:`secagg_train_round` gives the mean
to :func:`fedrec.federated.secure_sum.aggregate_sum` with what each client sent in
the clear (example count, metrics, platform). The client side is :mod:`clients.secagg`.
"""

from __future__ import annotations

import json
import time
from logging import INFO, WARNING
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.supercore import log

from clients.secagg import NAMES
from fedrec.federated.messages import ClientUpdate
from fedrec.federated.secure_sum import aggregate_sum
from fedrec.federated.server import Coordinator

INT64 = 8  # bytes per value of a masked vector (Flower sends int64 arrays)


class _OneRound(LegacyFedAvg):
    """The legacy strategy the workflow needs: this round's nodes and FitIns; keeps the unmasked results."""

    def __init__(self, proxies: list[ClientProxy], fitins: FitIns) -> None:
        super().__init__()
        self.proxies, self.fitins = proxies, fitins
        self.results: list[tuple[ClientProxy, FitRes]] = []
        self.failures: list[Any] = []

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(p, self.fitins) for p in self.proxies]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[Parameters | None, dict]:
        self.results, self.failures = list(results), list(failures)
        return (results[0][1].parameters if results else None), {}


def workflow(fed: Any, timeout: float) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ workflow with the ``federation.secagg_*`` parameters (> 1: a count, else a proportion)."""

    def count_or_share(x: float) -> int | float:
        return int(x) if float(x) > 1 else float(x)

    return SecAggPlusWorkflow(
        num_shares=count_or_share(fed.secagg_num_shares),
        reconstruction_threshold=count_or_share(fed.secagg_reconstruction_threshold),
        max_weight=float(fed.secagg_max_weight),
        clipping_range=float(fed.secagg_clipping_range),
        quantization_range=int(fed.secagg_quantization_range),
        timeout=timeout,
    )


def _contributor(proxy: ClientProxy, res: FitRes, masked_bytes: int) -> ClientUpdate:
    """What the server learnt in the clear of one client: its platform (claimed), examples, metrics."""
    metrics = dict(res.metrics)
    platform = str(metrics.pop("platform", ""))
    client = str(metrics.pop("client", platform))
    metrics.pop("accountant", None)
    nums = {k.replace("-", "_"): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    name = "" if client == platform else client
    return ClientUpdate(str(proxy.node_id), platform, None, res.num_examples, nums, masked_bytes, client=name)


def secagg_train_round(grid: Grid, co: Coordinator, nodes: list[int], server_round: int, timeout: float) -> set[int]:
    """Train ``nodes`` from the global adapter under SecAgg+ and aggregate the unmasked mean.

    Each of the four stages waits up to ``timeout`` for its replies. A node that fails a
    stage (a training error, a refused DP budget, a value outside the quantization range)
    drops out; the protocol goes on if every remaining node keeps ``threshold`` neighbours.

    Returns
    -------
    set
        The sampled nodes that contributed nothing.
    """
    names = list(co.global_state)
    params = ndarrays_to_parameters([co.global_state[n] for n in names])
    config = {**co.message_config(), "server-round": server_round, NAMES: json.dumps(names)}
    strategy = _OneRound([GridClientProxy(n, grid, 0) for n in nodes], FitIns(params, config))
    context = LegacyContext(Context(0, 0, {}, RecordDict(), {}), strategy=strategy)
    context.state.config_records["config"] = ConfigRecord({"current_round": server_round})
    context.state.array_records["parameters"] = compat.parameters_to_arrayrecord(params, keep_input=True)
    started = time.perf_counter()
    workflow(co.fed, timeout)(grid, context)
    log(INFO, "round %d: SecAgg+ took %.2fs", server_round, time.perf_counter() - started)
    masked = INT64 * (1 + sum(int(np.asarray(v).size) for v in co.global_state.values()))
    contributors = [_contributor(p, r, masked) for p, r in strategy.results]
    missing = set(nodes) - {int(u.node) for u in contributors}
    reasons = [str(f) for f in strategy.failures]
    if missing:
        log(WARNING, "round %d: no SecAgg+ contribution from node(s) %s: %s", server_round, sorted(missing), reasons)
    merged = None
    if strategy.results:
        merged = dict(zip(names, parameters_to_ndarrays(strategy.results[0][1].parameters), strict=True))
    dropped = [{"node": str(n)} for n in sorted(missing)]
    aggregate_sum(co, server_round, merged, contributors, dropped)
    return missing
