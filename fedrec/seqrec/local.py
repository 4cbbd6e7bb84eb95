"""Local-only sequence models: each platform alone, at the federated run's compute.

The comparison a platform makes before it joins: its own shared part trained for the same
``federation.rounds x federation.local_epochs`` passes with the same optimiser, seeds and
personal fit as its federated client, then the same test. The transfer matrix scores every
platform's shared part (the text path) on every platform: the zero-shot view of what one
platform's model knows of another's items.

With ``federation.compare_parallel`` each platform is trained in a process of its own
(spawned, one torch thread per core it gets), as the simulation's clients are: the models
are small, so one process per platform uses the cores far better than one process with
several threads. Each process first trains and serves its platform, sends back its metrics
and shared state, then scores every platform's shared state on its own test split (its row
of the transfer matrix's columns). Both ways run :func:`train_alone` with the same seeds.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.metrics import NDCG
from fedrec.seqrec.build import build_platform
from fedrec.seqrec.platform import SeqPlatform

log = logging.getLogger("fedrec.seqrec")


def build_platforms(cfg: DictConfig) -> dict[str, SeqPlatform]:
    """Every platform's :class:`SeqPlatform` on one shared encoder."""
    from fedrec.build import build_catalogue, build_encoder, build_inputs, load_datasets

    encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
    out = {}
    for name, data in load_datasets(cfg).items():
        inputs = build_inputs(cfg, data, tokenizer)
        out[name] = build_platform(cfg, data, encoder, build_catalogue(cfg, data, inputs, encoder))
    return out


def train_alone(
    cfg: DictConfig, plat: SeqPlatform, index: int, split: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train, serve and score one platform alone: ``(its record, its shared state)``.

    The record is ``{"steps", "examples", "seconds", split: metrics}`` (the served model's
    metrics with the shared part's as ``shared-<metric>``). Torch's generator is seeded from
    the run's seed and the platform's index first, so the result does not depend on which
    platforms ran before it in the same process.
    """
    from fedrec.federated.client import round_seed
    from fedrec.seqrec.serving import fit_serving, served_metrics

    fed, seq = cfg.federation, cfg.model.seq
    torch.manual_seed(round_seed(int(cfg.seed), 0, index))
    steps = rows = 0
    seconds = 0.0
    for r in range(1, int(fed.rounds) + 1):
        stats = plat.train(float(fed.local_epochs), int(seq.batch_size), round_seed(cfg.seed, r, index))
        steps, rows, seconds = steps + stats.steps, rows + stats.rows, seconds + stats.seconds
    state = plat.shared_state()
    seconds += fit_serving(plat, cfg, int(cfg.seed)).get("personal", {}).get("seconds", 0.0)
    metrics = served_metrics(plat, split, None, int(cfg.train.eval_batch_size))
    return {"steps": steps, "examples": rows, "seconds": round(seconds, 2), split: metrics}, state


def transfer_column(
    plat: SeqPlatform, states: dict[str, dict[str, np.ndarray]], split: str, batch_size: int
) -> dict[str, dict[str, float]]:
    """Every source's shared state scored on ``plat`` (text path); ``plat`` keeps its own state after."""
    own = plat.shared_state()
    out = {}
    for source, state in states.items():
        plat.load_shared(state, include_local=True)
        out[source] = plat.task.evaluate(split, "shared", batch_size=batch_size)
    plat.load_shared(own, include_local=True)
    return out


def local_only(cfg: DictConfig, split: str = "test") -> dict[str, Any]:
    """Train each platform's sequence model alone and score every shared part on every platform.

    Parameters
    ----------
    cfg : DictConfig
        The federated run's resolved config.
    split : str, default "test"
        The split scored.

    Returns
    -------
    dict
        As :func:`fedrec.federated.compare.local_only`: ``{"epochs", "models": {platform:
        {"steps", "examples", "seconds", split: metrics}}, "transfer": {...}}``; a model's
        metrics are its personal model's, with the shared part's as ``shared-<metric>``.
    """
    names = list(cfg.platforms)
    parallel = bool(cfg.federation.compare_parallel) and len(names) > 1
    run = _in_processes if parallel else _in_this_process
    models, transfer = run(cfg, split)
    return {
        "epochs": float(cfg.federation.rounds) * float(cfg.federation.local_epochs),
        "models": {n: models[n] for n in names},
        "transfer": {"split": split, "adapters": names, "platforms": names, "metrics": transfer},
    }


def _report(name: str, rec: dict[str, Any], split: str) -> None:
    log.info(
        "local-only %s: %d steps, %.1fs, %s NDCG@10 %.4f",
        name,
        rec["steps"],
        rec["seconds"],
        split,
        rec[split][NDCG],
    )


def _in_this_process(cfg: DictConfig, split: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    platforms = build_platforms(cfg)
    models, states = {}, {}
    for i, (name, plat) in enumerate(platforms.items()):
        models[name], states[name] = train_alone(cfg, plat, i, split)
        _report(name, models[name], split)
    start = time.perf_counter()
    transfer: dict[str, dict[str, Any]] = {a: {} for a in platforms}
    for name, plat in platforms.items():
        for source, m in transfer_column(plat, states, split, int(cfg.train.eval_batch_size)).items():
            transfer[source][name] = m
    log.info("transfer matrix scored in %.1fs", time.perf_counter() - start)
    return models, transfer


def _in_processes(cfg: DictConfig, split: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    names = list(cfg.platforms)
    threads = max(1, (os.cpu_count() or 1) // len(names))
    ctx = mp.get_context("spawn")
    doc = OmegaConf.to_container(cfg, resolve=True)
    workers = []
    for i, name in enumerate(names):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(doc, name, i, split, threads, theirs), daemon=True)
        proc.start()
        workers.append((name, proc, ours))
    done = False
    try:
        got: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
        pending: dict[Any, str] = {conn: name for name, _, conn in workers}
        while pending:  # in the order they finish: a failure is reported as soon as it happens
            for conn in wait(list(pending)):
                name = pending.pop(conn)
                got[name] = _receive(name, conn, "trained")
        models = {name: got[name][0] for name in names}
        states = {name: got[name][1] for name in names}
        for name in names:
            _report(name, models[name], split)
        for _, _, conn in workers:
            conn.send(states)
        transfer: dict[str, dict[str, Any]] = {a: {} for a in names}
        for name, _, conn in workers:
            for source, m in _receive(name, conn, "transfer").items():
                transfer[source][name] = m
        done = True
        return models, transfer
    finally:
        for _, proc, _ in workers:
            proc.join(timeout=30 if done else 0)  # after a failure the others are stopped at once
            if proc.is_alive():
                proc.kill()


def _receive(name: str, conn: Any, kind: str) -> Any:
    """The next message of a platform's process; its traceback as an error if it failed."""
    try:
        got, payload = conn.recv()
    except EOFError:
        raise RuntimeError(f"the local-only process of platform {name!r} died without a reply") from None
    if got == "error":
        raise RuntimeError(f"the local-only model of platform {name!r} failed:\n{payload}")
    assert got == kind, (got, kind)
    return payload


def _worker(doc: dict[str, Any], name: str, index: int, split: str, threads: int, conn: Any) -> None:
    """A platform's process: train and serve it alone, then score the shared states it is sent."""
    try:
        torch.set_num_threads(threads)
        cfg = OmegaConf.create(doc)
        cfg.platforms = {name: cfg.platforms[name]}
        cfg.train.progress = False
        plat = build_platforms(cfg)[name]
        conn.send(("trained", train_alone(cfg, plat, index, split)))
        states = conn.recv()
        conn.send(("transfer", transfer_column(plat, states, split, int(cfg.train.eval_batch_size))))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
