"""Flower ClientApp: one client per platform (or user shard), a thin transport over :mod:`fedrec.federated.client`.

Which platform a client serves comes from its node config: ``platform='video'`` in
deployment (``flower-supernode --node-config "platform='video' data-root='...'"``, and
``shard=3`` when ``federation.shards_per_platform`` splits the platforms), or the
partition id in simulation (partition k serves platform ``k // shards``, user shard
``k % shards``: :func:`fedrec.federated.shards.partition_client`). The run's
resolved fedrec config arrives with every message (``fedrec-config``); what is local to a
deployed node comes from its node config (``data-root``, ``cache-dir``, ``state-dir``,
``threads``), else from its environment (``FEDREC_DATA``, ``FEDREC_CACHE``), else
``./data`` and ``.fedrec_cache`` (relative to the SuperNode's working directory). A
node's own privacy limits are node config too, out of the server's reach:
``max-epsilon``, ``min-noise-multiplier``, ``privacy-delta``
(:class:`fedrec.privacy.NodeCaps`); with either cap the node trains only under DP.

The task is built once per process and reused (at most ``federation.client_cache``
clients per process, sharing their platform's data, encoder and item side:
:func:`fedrec.federated.client.cached_client`). Flower starts a fresh ClientApp process
per message in deployment, so what is expensive is cached on the node's disk: the frozen
lower-layer outputs (``<cache dir>/lower``) and the platform-local parameters after every
round (``<state dir>/<run key>/<client>/local-r<round>.pt``, client = the platform or
``<platform>/<shard>``, state dir default ``<cache dir>/client_state``). The privacy
ledgers are the node's, for every run: ``<state dir>/privacy`` (keyed by the training
data; :mod:`fedrec.privacy.ledgers`).

Only adapter arrays, the number of training examples and metrics leave the client; in a
DP run only the DP adapter and public metrics, and evaluation replies withhold their
metrics (:mod:`fedrec.federated.replies`). With ``federation.secure_aggregation=secaggplus``
the adapter leaves only masked (:mod:`clients.secagg`); a node whose config has
``secure-aggregation='secaggplus'`` refuses plain training messages.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.secagg import secagg_mod
from fedrec.federated.client import PlatformClient, cached_client, run_config
from fedrec.federated.replies import train_metrics
from fedrec.federated.shards import client_name, partition_client, shards_per_platform
from fedrec.io import safe_name
from fedrec.privacy import NodeCaps

app = ClientApp(mods=[secagg_mod])  # SecAgg+ for the training messages that use it (clients/secagg.py)


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
        caps = NodeCaps.from_node_config(nc)
    else:  # simulation: partition k serves platform k // shards, user shard k % shards
        platform, shard = partition_client(cfg, int(nc["partition-id"]))
        data_root, cache_dir = None, None
        state_root = str(cfg.federation.client_state_dir) or str(Path(cfg.data.cache_dir) / "client_state")
        threads = max(1, int(cfg.federation.client_cpus))
        caps = None
    run_key = safe_name(str(conf["run-key"]), "the message's run key")  # a path component: no ../ out of state_root
    state_dir = Path(state_root) / run_key / client_name(platform, shard, shards_per_platform(cfg))
    ledgers = Path(state_root) / "privacy"  # the node's, not the run's
    return cached_client(cfg_yaml, platform, state_dir, data_root, cache_dir, threads, shard, ledgers, caps)


def arrays_in(msg: Message) -> dict:
    """The message's adapter arrays as NumPy."""
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


LEDGER_KEY = "privacy-ledger"


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally from the global adapter; reply with the adapter, examples and train loss.

    Under DP the reply carries the platform's cumulative epsilon and mechanism, and no
    train loss or timings; a client whose budget or node cap would be exceeded replies
    without arrays and with ``refused`` in its info record. The privacy ledger lives in
    the node's ledger folder and is mirrored in ``context.state`` (restored from there
    if the folder's copy is behind).
    """
    started = time.perf_counter()
    client = platform_client(msg, context)
    setup = time.perf_counter() - started
    if LEDGER_KEY in context.state:
        client.restore_ledger(json.loads(str(context.state[LEDGER_KEY]["json"])))
    out = client.train(arrays_in(msg), int(msg.content["config"]["server-round"]))
    if out.ledger is not None:
        context.state[LEDGER_KEY] = ConfigRecord({"json": json.dumps(out.ledger)})
    metrics = train_metrics(out.num_examples, out.loss, out.steps, out.seconds, setup, out.metrics, client.private)
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
    """Score the received adapter on this platform's split (``valid`` each round, ``test`` at the end).

    The metrics go into the client's local report; in a DP run (or on a node with caps)
    the reply withholds them.
    """
    started = time.perf_counter()
    client = platform_client(msg, context)
    setup = time.perf_counter() - started
    conf = msg.content["config"]
    metrics = client.evaluation_reply(
        arrays_in(msg),
        split=str(conf["split"]),
        local_round=int(conf["local-round"]),
        max_users=int(client.cfg.federation.eval_max_users) if conf["split"] == "valid" else -1,
        setup_seconds=setup,
    )
    info = ConfigRecord({"platform": client.platform, "client": client.name})
    content = RecordDict({"metrics": MetricRecord(metrics), "info": info})
    return Message(content, reply_to=msg)
