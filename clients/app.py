"""Flower ClientApp: one client per platform (or user shard), a thin transport over :mod:`fedrec.federated.client`.

Which platform a client serves comes from its node config: ``platform='video'`` in
deployment (``flower-supernode --node-config "platform='video' data-root='...'"``, and
``shard=3`` when ``federation.shards_per_platform`` splits the platforms), or the
partition id in simulation (partition k serves platform ``k // shards``, user shard
``k % shards``: :func:`fedrec.federated.shards.partition_client`). The run's
resolved fedrec config arrives with every message (``fedrec-config``); what is local to a
deployed node comes from its node config (``data-root``, ``cache-dir``, ``state-dir``,
``threads``), else from its environment (``FEDREC_DATA``, ``FEDREC_CACHE``), else
``./data`` and ``.fedrec_cache`` (relative to the SuperNode's working directory).

The task is built once per process and reused (at most ``federation.client_cache``
clients per process, sharing their platform's data, encoder and item side:
:func:`fedrec.federated.client.cached_client`). Flower starts a fresh ClientApp process
per message in deployment, so what is expensive is cached on the node's disk: the frozen
lower-layer outputs (``<cache dir>/lower``) and the platform-local parameters after every
round (``<state dir>/<run key>/<client>/local-r<round>.pt``, client = the platform or
``<platform>/<shard>``, state dir default ``<cache dir>/client_state``).

Only adapter arrays, the number of training examples and metrics leave the client.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.federated.client import PlatformClient, cached_client, run_config
from fedrec.federated.shards import client_name, partition_client, shards_per_platform

app = ClientApp()

EVAL_KEYS = ("loss", "HR@10", "NDCG@10", "MRR", "coverage@10")


def platform_client(msg: Message, context: Context) -> PlatformClient:
    """The (cached) :class:`PlatformClient` this node runs for the message's run."""
    conf = msg.content["config"]
    cfg_yaml = str(conf["fedrec-config"])
    cfg = run_config(cfg_yaml)
    nc = context.node_config
    if "platform" in nc:  # deployment: one SuperNode per platform (or shard); its own paths, never the server's
        platform, shard = str(nc["platform"]), int(nc.get("shard", 0))
        cache_dir = str(nc.get("cache-dir", "")) or os.environ.get("FEDREC_CACHE") or ".fedrec_cache"
        data_root = str(nc.get("data-root", "")) or os.environ.get("FEDREC_DATA") or "./data"
        state_root = str(nc.get("state-dir", "")) or str(Path(cache_dir) / "client_state")
        threads = int(nc.get("threads", 0)) or None
    else:  # simulation: partition k serves platform k // shards, user shard k % shards
        platform, shard = partition_client(cfg, int(nc["partition-id"]))
        data_root, cache_dir = None, None
        state_root = str(cfg.federation.client_state_dir) or str(Path(cfg.data.cache_dir) / "client_state")
        threads = max(1, int(cfg.federation.client_cpus))
    state_dir = Path(state_root) / str(conf["run-key"]) / client_name(platform, shard, shards_per_platform(cfg))
    return cached_client(cfg_yaml, platform, state_dir, data_root, cache_dir, threads, shard)


def arrays_in(msg: Message) -> dict:
    """The message's adapter arrays as NumPy."""
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


LEDGER_KEY = "privacy-ledger"


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally from the global adapter; reply with the adapter, examples and train loss.

    Under DP the reply also carries the platform's cumulative epsilon and mechanism; a
    client whose budget would be exceeded replies without arrays and with ``refused``
    in its info record. The privacy ledger lives on the node's disk (atomic writes) and
    is mirrored in ``context.state`` (restored from there if the disk copy is behind).
    """
    started = time.perf_counter()
    client = platform_client(msg, context)
    setup = time.perf_counter() - started
    if LEDGER_KEY in context.state:
        client.restore_ledger(json.loads(str(context.state[LEDGER_KEY]["json"])))
    out = client.train(arrays_in(msg), int(msg.content["config"]["server-round"]))
    if out.ledger is not None:
        context.state[LEDGER_KEY] = ConfigRecord({"json": json.dumps(out.ledger)})
    metrics = {
        "num-examples": out.num_examples,
        "train-loss": out.loss,
        "steps": out.steps,
        "train-seconds": out.seconds,
        "setup-seconds": setup,  # building this platform's task in this process (0 when cached)
    }
    metrics.update(out.metrics)
    info: dict[str, str] = {"platform": client.platform, "client": client.name}
    if client.cfg.privacy.enabled:
        info["accountant"] = str(client.cfg.privacy.accountant)
    records: dict = {"metrics": MetricRecord(metrics), "info": ConfigRecord(info)}
    if out.refused is not None:
        info["refused"] = out.refused
        records["info"] = ConfigRecord(info)
    else:
        records["arrays"] = ArrayRecord({k: Array(v) for k, v in out.state.items()})
    return Message(RecordDict(records), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the received adapter on this platform's split (``valid`` each round, ``test`` at the end)."""
    started = time.perf_counter()
    client = platform_client(msg, context)
    setup = time.perf_counter() - started
    conf = msg.content["config"]
    started = time.perf_counter()
    m = client.evaluate(
        arrays_in(msg),
        split=str(conf["split"]),
        local_round=int(conf["local-round"]),
        max_users=int(client.cfg.federation.eval_max_users) if conf["split"] == "valid" else -1,
    )
    metrics = {k: float(m[k]) for k in EVAL_KEYS}
    metrics.update({"num-examples": int(m["users"]), "users": int(m["users"])})
    metrics["eval-seconds"] = time.perf_counter() - started  # the client's evaluation compute
    metrics["setup-seconds"] = setup  # building this platform's task in this process (0 when cached)
    info = ConfigRecord({"platform": client.platform, "client": client.name})
    content = RecordDict({"metrics": MetricRecord(metrics), "info": info})
    return Message(content, reply_to=msg)
