"""Local-only sequence models: each platform alone, at the federated run's compute.

The comparison a platform makes before it joins: its own shared part trained for the same
``federation.rounds x federation.local_epochs`` passes with the same optimiser, seeds and
personal fit as its federated client, then the same test. The transfer matrix scores every
platform's shared part (the text path) on every platform: the zero-shot view of what one
platform's model knows of another's items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig

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
    from fedrec.federated.client import round_seed
    from fedrec.seqrec.serving import fit_serving, served_metrics

    fed, seq = cfg.federation, cfg.model.seq
    platforms = build_platforms(cfg)
    models: dict[str, dict[str, Any]] = {}
    states = {}
    for i, (name, plat) in enumerate(platforms.items()):
        steps = rows = 0
        seconds = 0.0
        for r in range(1, int(fed.rounds) + 1):
            stats = plat.train(float(fed.local_epochs), int(seq.batch_size), round_seed(cfg.seed, r, i))
            steps, rows, seconds = steps + stats.steps, rows + stats.rows, seconds + stats.seconds
        states[name] = plat.shared_state()
        seconds += fit_serving(plat, cfg, int(cfg.seed)).get("personal", {}).get("seconds", 0.0)
        metrics = served_metrics(plat, split, None, int(cfg.train.eval_batch_size))
        models[name] = {"steps": steps, "examples": rows, "seconds": round(seconds, 2), split: metrics}
        log.info("local-only %s: %d steps, %.1fs, %s NDCG@10 %.4f", name, steps, seconds, split, metrics["NDCG@10"])
    transfer: dict[str, dict[str, dict[str, float]]] = {a: {} for a in platforms}
    start = time.perf_counter()
    for name, plat in platforms.items():
        own = plat.shared_state()
        for source, state in states.items():
            plat.load_shared(state, include_local=True)
            transfer[source][name] = plat.task.evaluate(split, "shared", batch_size=int(cfg.train.eval_batch_size))
        plat.load_shared(own, include_local=True)
    log.info("transfer matrix scored in %.1fs", time.perf_counter() - start)
    return {
        "epochs": float(fed.rounds) * float(fed.local_epochs),
        "models": models,
        "transfer": {"split": split, "adapters": list(platforms), "platforms": list(platforms), "metrics": transfer},
    }
