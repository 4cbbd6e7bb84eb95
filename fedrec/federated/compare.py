"""What a federated run is compared with: local-only models, their transfer, baselines.

A platform's *local-only* model is the adapter it would have trained alone: the same
initial adapter, trainable set, optimiser and batch size as its federated client, for
the same local compute (the steps its client took over all rounds, at most
``rounds x local_epochs`` passes). The *transfer matrix* scores the local-only adapter
of platform ``i`` on platform ``j``'s test split; platform ``j`` keeps its own
platform-local parameters (its local-only item-ID embeddings), so only the shared
adapter changes along a column and the diagonal is the local-only model itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from fedrec.federated.replies import SHARED_PREFIX
from fedrec.metrics import NDCG

log = logging.getLogger("fedrec.federated")


def client_steps(history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Local steps each platform's client took over a run's rounds (from its history)."""
    steps: dict[str, int] = {}
    for entry in history:
        for platform, v in entry["platforms"].items():
            train = v.get("train") or {}
            steps[platform] = steps.get(platform, 0) + int(train.get("steps", 0))
    return steps


def local_only(
    cfg: DictConfig,
    steps: Mapping[str, int] | None = None,
    split: str = "test",
    progress: bool = True,
) -> dict[str, Any]:
    """Train each platform's local-only model and score every one on every platform.

    Parameters
    ----------
    cfg : DictConfig
        The federated run's resolved config (model, train, federation, platforms).
    steps : mapping, optional
        Local steps per platform to match (:func:`client_steps` of the run); default:
        ``federation.rounds x federation.local_epochs`` passes, uncapped.
    split : str, default "test"
        The split of the transfer matrix.
    progress : bool, default True
        Show training progress bars.

    Returns
    -------
    dict
        ``{"epochs", "models": {platform: {"steps", "examples", "seconds", split: metrics}},
        "transfer": {"split", "adapters", "platforms", "metrics": {adapter: {platform: metrics}}}}``.
    """
    from fedrec.build import build_encoder, build_task, load_datasets
    from fedrec.federated.client import round_seed
    from fedrec.seqrec.build import is_seqrec
    from fedrec.train import fit, fit_options

    if is_seqrec(cfg):  # same epochs, seeds and personal fit as the federated clients: same compute by construction
        from fedrec.seqrec.local import local_only as seq_local_only

        return seq_local_only(cfg, split)
    fed = cfg.federation
    epochs = float(fed.rounds) * float(fed.local_epochs)
    datasets = load_datasets(cfg)
    encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
    if fed.aggregation == "ffa":
        encoder.freeze_lora_a()  # the trainable set of the federated clients
    initial = encoder.adapter_state()
    tasks = {name: build_task(cfg, d, encoder, tokenizer) for name, d in datasets.items()}
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    local_states: dict[str, dict[str, torch.Tensor]] = {}
    models: dict[str, dict[str, Any]] = {}
    for i, (name, task) in enumerate(tasks.items()):
        encoder.load_adapter_state(initial)
        cap = int(steps[name]) if steps and name in steps else int(fed.local_steps) * int(fed.rounds)
        result = fit(
            [task],
            epochs=epochs,
            max_steps=cap if cap > 0 else -1,
            **fit_options(cfg.train),
            seed=round_seed(cfg.seed, 0, i),
            progress=progress,
        )
        adapters[name] = {k: v.clone() for k, v in encoder.adapter_state().items()}
        local_states[name] = {k: v.clone() for k, v in task.local_state().items()}
        models[name] = {
            "steps": result.steps,
            "examples": int(result.num_examples.get(name, 0)),
            "seconds": round(result.seconds, 2),
        }
        log.info("local-only %s: %d steps in %.1fs", name, result.steps, result.seconds)
    transfer: dict[str, dict[str, dict[str, float]]] = {a: {} for a in tasks}
    start = time.perf_counter()
    for name, task in tasks.items():
        task.load_local_state(local_states[name])
        for source in tasks:
            encoder.load_adapter_state(adapters[source])
            transfer[source][name] = task.evaluate(split, batch_size=int(cfg.train.eval_batch_size))
        models[name][split] = transfer[name][name]
    log.info("transfer matrix scored in %.1fs", time.perf_counter() - start)
    return {
        "epochs": epochs,
        "models": models,
        "transfer": {"split": split, "adapters": list(tasks), "platforms": list(tasks), "metrics": transfer},
    }


def baselines(cfg: DictConfig, models: Sequence[str], split: str = "test") -> dict[str, dict[str, Any]]:
    """``{platform: {model: split metrics}}`` of the protocol's baselines (see :mod:`fedrec.baselines`)."""
    from fedrec.baselines import options_from_config, run_baselines
    from fedrec.baselines.run import cache_dir_from_config
    from fedrec.build import load_datasets

    if not models:
        return {}
    res = run_baselines(
        load_datasets(cfg),
        models=list(models),
        splits=[split],
        backbone=cfg.model.backbone,
        cache_dir=cache_dir_from_config(cfg),
        batch_size=int(cfg.train.eval_batch_size),
        progress=False,
        **options_from_config(cfg),
    )
    return {p: {m: v[split] for m, v in ms.items()} for p, ms in res.items()}


def transfer_rows(doc: Mapping[str, Any], metric: str = NDCG) -> list[list[str]]:
    """The transfer matrix as table rows: one per adapter (``local:<platform>``, then ``joint``)."""
    tr = doc["comparison"]["local_only"]["transfer"]
    platforms = tr["platforms"]
    rows = [[f"local:{a}", *(f"{tr['metrics'][a][p][metric]:.4f}" for p in platforms)] for a in tr["adapters"]]
    joint = doc.get("platforms", {})
    shared = f"{SHARED_PREFIX}{metric}"  # the sequence model: the rows are shared parts, so is the joint one
    if all(p in joint and shared in joint[p].get("test", {}) for p in platforms):
        rows.append(["joint", *(f"{joint[p]['test'][shared]:.4f}" for p in platforms)])
    elif all(p in joint and metric in joint[p].get("test", {}) for p in platforms):
        rows.append(["joint", *(f"{joint[p]['test'][metric]:.4f}" for p in platforms)])
    return rows


def macro(values: Sequence[float]) -> float:
    """Unweighted mean over platforms."""
    return float(np.mean(values)) if len(values) else float("nan")
