"""Federated training over LoRA adapters, without Flower.

:mod:`~fedrec.federated.aggregate` merges adapter states and validates incoming
updates, :mod:`~fedrec.federated.client` is one platform's client (task built once,
local state on its disk), :mod:`~fedrec.federated.server` the server's memory (global
adapter, cross-platform loss, best round, checkpoints). The Flower apps in
``server/`` and ``clients/`` are thin transports over these.
"""

from fedrec.federated.aggregate import AGGREGATIONS, aggregate, check_update, fedavg, ffa, svd_merge

__all__ = ["AGGREGATIONS", "aggregate", "check_update", "fedavg", "ffa", "svd_merge"]
