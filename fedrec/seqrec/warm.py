"""Warm the frozen text cache before a federation starts: every catalogue's text index, once, on every core.

With the adapter frozen (``model.seq.train_adapter=false``, the default) an item's text
vector never changes, and :class:`fedrec.seqrec.text.ItemText` keeps it in the disk cache
beside the lower-layer states. Left to the clients, the first client of each platform
computes it on its one thread while the others wait or idle (on 2 cores the social
catalogue alone is about four fifths of the work); computed here first, with every core, the
clients, the local-only models and the evaluation load ``[N, h]`` vectors and never run
the backbone.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from omegaconf import DictConfig

from fedrec.seqrec.build import is_seqrec

log = logging.getLogger("fedrec.seqrec")


def frozen_text_cached(cfg: DictConfig) -> bool:
    """Whether the run's item text is frozen and disk-cached (what :func:`warm_text_cache` fills)."""
    return is_seqrec(cfg) and not bool(cfg.model.seq.train_adapter) and bool(cfg.model.cache_lower_layers)


def warm_text_cache(cfg: DictConfig, threads: int | None = None) -> dict[str, float]:
    """Compute (or find) every platform's frozen text index in the disk cache.

    Parameters
    ----------
    cfg : DictConfig
        The run's config (``platforms``, ``model``, ``data.cache_dir``).
    threads : int, optional
        Torch threads while computing (default: every core); restored after.

    Returns
    -------
    dict
        Seconds per platform (about 0 where the cache already held it); empty if the run's
        text is not frozen and cached (:func:`frozen_text_cached`).
    """
    if not frozen_text_cached(cfg):
        return {}
    from fedrec.seqrec.local import build_platforms

    before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    out: dict[str, float] = {}
    try:
        for name, plat in build_platforms(cfg).items():  # catalogues are lazy: nothing runs until index()
            start = time.perf_counter()
            plat.task.text.index()
            out[name] = round(time.perf_counter() - start, 2)
        log.info("frozen item text ready (%s)", ", ".join(f"{k} {v:.0f}s" for k, v in out.items()))
    finally:
        torch.set_num_threads(before)
    return out
