"""``fedrec simulate``: the selected platforms through Flower's simulation engine (Ray).

One virtual SuperNode per client: per platform, or per user shard with
``federation.shards_per_platform`` (partition k serves platform ``k // shards``, shard
``k % shards``). Ray runs ``cores / federation.client_cpus`` actors (each a process
serving the clients' messages one at a time, with as many torch threads as CPUs), so
two clients train at once on a 2-core machine whatever the number of clients; Ray's
object store is capped at ``federation.object_store_mib`` when set. Flower's config home (``FLWR_HOME``) is
the run directory's ``flwr_home/`` (a user's ``~/.flwr`` is never touched), and
Flower's runtime dependency installation is disabled: nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from omegaconf import DictConfig, OmegaConf

from fedrec.federated.rounds import prepare_run_config
from fedrec.federated.shards import client_names
from fedrec.io import atomic_write
from server.app import make_server_app

CONFIG_FILE = "fedrec_config.yaml"


def flower_environment(out_dir: Path) -> dict[str, str]:
    """Point Flower at a config home inside the run directory and disable runtime installs."""
    home = out_dir / "flwr_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    os.environ.update(env)
    return env


def quiet_logs() -> None:
    """Flower prints its own log lines: do not repeat them through Hydra's root handler."""
    logging.getLogger("flwr").propagate = False
    for name in ("alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ray_backend_config(cfg: DictConfig) -> dict[str, Any]:
    """Flower's Ray backend settings: a fresh local Ray, every core, ``client_cpus`` per actor, the object store cap.

    The actors' output (``(ClientAppActor pid=...)`` lines: their warnings and log) reaches
    this console only with ``verbose=true`` (``fedrec -v``); a client's failure still does,
    as the error of its reply.
    """
    fed = cfg.federation
    # address "local": always a fresh Ray instance, never someone else's cluster
    init: dict[str, Any] = {
        "address": "local",
        "num_cpus": os.cpu_count() or 1,
        "log_to_driver": bool(cfg.get("verbose", False)),
    }
    if int(fed.get("object_store_mib", 0)) > 0:
        init["object_store_memory"] = int(fed.object_store_mib) * 1024**2
    return {"init_args": init, "client_resources": {"num_cpus": float(fed.client_cpus), "num_gpus": 0.0}}


def simulate(cfg: DictConfig, out_dir: str | Path, client_app: ClientApp | None = None) -> dict[str, Any]:
    """Run the federation in simulation and return the results document.

    Parameters
    ----------
    cfg : DictConfig
        The composed fedrec config (``federation.*`` drives the run).
    out_dir : path-like
        The run directory: ``fedrec_config.yaml``, ``results.json``, adapters,
        ``checkpoint/``, ``client_state/``, ``flwr_home/``.
    client_app : ClientApp, optional
        Replaces ``clients.app.app`` (tests inject faulty clients this way).
    """
    from flwr.simulation import run_simulation

    from clients.app import app as default_client_app

    out_dir = Path(out_dir).resolve()
    run_cfg = prepare_run_config(cfg, out_dir)
    text = OmegaConf.to_yaml(run_cfg).encode()
    config_path = atomic_write(out_dir / CONFIG_FILE, lambda fh: fh.write(text))
    flower_environment(out_dir)
    quiet_logs()
    backend_config = ray_backend_config(run_cfg)
    results = out_dir / str(run_cfg.output)
    results.unlink(missing_ok=True)  # a resumed run writes a fresh one
    run_simulation(
        server_app=make_server_app(str(config_path), str(out_dir), "simulate"),
        client_app=client_app or default_client_app,
        num_supernodes=len(client_names(run_cfg)),
        backend_config=backend_config,  # type: ignore[arg-type]
    )
    if not results.is_file():
        raise RuntimeError(f"the simulation ended without writing {results}; see the log above")
    return json.loads(results.read_text())
