"""Run the protocol baselines on several platforms: :func:`run_baselines`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fedrec.baselines.ease import EASE_LAMBDAS, fit_ease
from fedrec.baselines.frozen_text import FROZEN_TEXT_MAX_TOKENS, FrozenText, encode_items, item_vectors_cache_path
from fedrec.baselines.itemknn import ItemKNN
from fedrec.baselines.mostpop import MostPop
from fedrec.baselines.sasrec import fit_sasrec
from fedrec.config import SASRecConfig
from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_rankings

log = logging.getLogger("fedrec.baselines")

BASELINES = ("mostpop", "itemknn", "frozen_text", "ease", "sasrec")
#: the learned baselines: their result carries a ``fit`` record beside the splits
FITTED = ("ease", "sasrec")


def ease_grid(lambdas: Sequence[float] | Mapping[str, Sequence[float]], platform: str) -> list[float]:
    """The λ grid of ``platform``: ``lambdas`` itself, or ``lambdas[platform]`` / ``lambdas["default"]``."""
    if isinstance(lambdas, Mapping):
        grid = lambdas.get(platform, lambdas.get("default", EASE_LAMBDAS))
    else:
        grid = lambdas
    return [float(x) for x in grid]


def run_baselines(
    datasets: Mapping[str, PlatformData],
    models: Iterable[str] = BASELINES,
    splits: Iterable[str] = ("valid", "test"),
    backbone: str | tuple[Any, Any] = "minilm",
    item_vectors: Mapping[str, torch.Tensor] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
    ease_lambdas: Sequence[float] | Mapping[str, Sequence[float]] = EASE_LAMBDAS,
    sasrec: SASRecConfig | None = None,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Evaluate the protocol baselines on several platforms.

    Parameters
    ----------
    datasets : mapping of str to PlatformData
        Platforms by name.
    models : iterable of str, default all of ``BASELINES``
        Baselines to run: mostpop, itemknn, frozen_text, ease, sasrec.
    splits : iterable of str, default ("valid", "test")
        Splits to evaluate.
    backbone : str or (model, tokenizer), default "minilm"
        Frozen-text backbone; loaded once, and only if some platform needs encoding.
    item_vectors : mapping of str to torch.Tensor, optional
        Precomputed frozen-text item vectors per platform name; default None (encode).
    cache_dir : str or pathlib.Path, optional
        On-disk cache of the encoded item vectors and of EASE's fits (``<cache_dir>/ease``);
        default None (no cache).
    batch_size : int, default 256
        Users scored per call of a score function.
    progress : bool, default True
        Show a tqdm progress bar over (platform, model).
    ease_lambdas : sequence of float, or mapping of platform to sequence, default PROTOCOL's grid
        EASE's λ grid, chosen from on the valid split (see :func:`ease_grid`).
    sasrec : SASRecConfig, optional
        SASRec's architecture and training budget; default its defaults.
    seed : int, default 0
        SASRec's seed (the other baselines are deterministic).

    Returns
    -------
    dict
        ``{platform: {model: {split: metrics}}}`` with ``metrics`` as returned by
        :func:`fedrec.evaluate.metrics_from_ranks` (``HR@10``, ``NDCG@10``, ``MRR``, ``users``,
        ``coverage@10``); EASE and SASRec also have ``"fit"``: the chosen λ and the valid
        NDCG@10 of each (:func:`~fedrec.baselines.ease.fit_ease`), or the best epoch, the valid
        curve and the seconds spent (:func:`~fedrec.baselines.sasrec.fit_sasrec`).
    """
    models = list(models)
    splits = list(splits)
    unknown = [m for m in models if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    item_vectors = dict(item_vectors or {})
    loaded = None if isinstance(backbone, str) else backbone  # load the backbone once, only if needed
    results: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    bar = tqdm([(p, m) for p in datasets for m in models], disable=not progress, desc="baselines")
    for platform, model in bar:
        bar.set_postfix_str(f"{platform}/{model}")
        data = datasets[platform]
        score_fn: Callable[[Sequence[int], str], torch.Tensor]
        fit: dict[str, Any] | None = None
        if model == "mostpop":
            score_fn = MostPop(data)
        elif model == "itemknn":
            score_fn = ItemKNN(data)
        elif model == "ease":
            ease_cache = None if cache_dir is None else ease_cache_dir(cache_dir)
            grid = ease_grid(ease_lambdas, platform)
            score_fn, fit = fit_ease(data, grid, batch_size=batch_size, cache_dir=ease_cache)
        elif model == "sasrec":
            score_fn, fit = fit_sasrec(data, sasrec, seed=seed, batch_size=batch_size)
        else:
            vectors = item_vectors.get(platform)
            if vectors is None:
                path = item_vectors_cache_path(cache_dir, backbone, data.item_texts, FROZEN_TEXT_MAX_TOKENS)
                if loaded is None and not (path is not None and path.is_file()):
                    from fedrec.model.backbone import load_backbone

                    loaded = load_backbone(backbone) if isinstance(backbone, str) else backbone
                vectors = encode_items(data.item_texts, backbone, cache_dir=cache_dir, loaded=loaded)
            score_fn = FrozenText(data, item_vectors=vectors)
        out: dict[str, dict[str, Any]] = {
            split: evaluate_rankings(data, split, score_fn, batch_size=batch_size) for split in splits
        }
        if fit is not None:
            out["fit"] = fit
        results.setdefault(platform, {})[model] = out
    return results


def cache_dir_from_config(cfg: Any) -> Path:
    """The baselines' on-disk cache of a run: ``<data.cache_dir>/baselines``."""
    return Path(cfg.data.cache_dir).expanduser() / "baselines"


def ease_cache_dir(cache_dir: str | Path) -> Path:
    """Where EASE's fits are kept inside the baselines' cache (shared by the baseline and the served prior)."""
    return Path(cache_dir) / "ease"


def options_from_config(cfg: Any) -> dict[str, Any]:
    """``run_baselines`` keyword arguments from a resolved fedrec config: the ``baseline`` group and the seed.

    Parameters
    ----------
    cfg : DictConfig
        A config with ``baseline.ease``, ``baseline.sasrec`` and ``seed`` (``conf/baseline``).

    Returns
    -------
    dict
        ``ease_lambdas`` (per platform, ``"default"`` the shared grid), ``sasrec`` and ``seed``.
    """
    from omegaconf import OmegaConf

    b = cfg.baseline
    lambdas: dict[str, list[float]] = {"default": [float(x) for x in b.ease.lambdas]}
    lambdas.update({p: [float(x) for x in v] for p, v in b.ease.platform_lambdas.items()})
    sasrec = SASRecConfig(**OmegaConf.to_container(b.sasrec, resolve=True))  # type: ignore[arg-type]
    return {"ease_lambdas": lambdas, "sasrec": sasrec, "seed": int(cfg.seed)}


def baseline_label(model: str, result: Mapping[str, Any]) -> str:
    """A table label for a baseline's result: the model, with EASE's λ or SASRec's best epoch."""
    fit = result.get("fit") or {}
    if model == "ease" and "lambda" in fit:
        return f"ease (λ={fit['lambda']:g})"
    if model == "sasrec" and "best_epoch" in fit:
        more = ", still improving" if fit.get("still_improving") else ""
        return f"sasrec (epoch {fit['best_epoch']} of {fit['epochs']}{more})"
    return model


__all__ = [
    "BASELINES",
    "FITTED",
    "baseline_label",
    "cache_dir_from_config",
    "ease_cache_dir",
    "ease_grid",
    "options_from_config",
    "run_baselines",
]
