"""What a platform serves after the last round: its personal model, blended with its prior.

Both the federated client (:mod:`fedrec.federated.seq_client`) and the local-only comparison
(:mod:`fedrec.seqrec.local`) end the same way: :func:`fit_serving` fits the personal model
(the epoch chosen on the platform's valid split) and the platform's prior with its blend
weight, and :func:`served_metrics` scores the served model with the parts beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from fedrec.baselines.run import cache_dir_from_config, ease_cache_dir, ease_grid, options_from_config
from fedrec.federated.replies import PERSONAL_PREFIX, SHARED_PREFIX
from fedrec.seqrec.platform import SeqPlatform
from fedrec.seqrec.prior import fit_ease_prior

log = logging.getLogger("fedrec.seqrec")


def fit_serving(plat: SeqPlatform, cfg: DictConfig, seed: int) -> dict[str, Any]:
    """Fit what is not fitted yet of the personal model and the prior (``cfg.platforms[<platform>].prior``)."""
    seq, batch = cfg.model.seq, int(cfg.train.eval_batch_size)
    info: dict[str, Any] = {}
    if plat.task.personal is None and int(seq.personal_epochs) > 0 and int(seq.personal_eval_every) > 0:
        info["personal"] = plat.finalize(
            int(seq.personal_epochs),
            int(seq.batch_size),
            float(seq.personal_lr),
            seed,
            eval_every=int(seq.personal_eval_every),
            patience=int(seq.personal_patience),
        )
        log.info(
            "%s: personal model, epoch %d (best of %d run, at most %d; valid NDCG@10 %.4f, %.1fs)",
            plat.name,
            info["personal"]["epochs"],
            info["personal"]["trained"],
            int(seq.personal_epochs),
            info["personal"]["valid"],
            info["personal"]["seconds"],
        )
    pcfg = cfg.platforms[plat.name]
    if plat.task.prior is None and str(pcfg.get("prior", "none")) == "ease":
        lambdas = ease_grid(options_from_config(cfg)["ease_lambdas"], plat.name)
        cache = ease_cache_dir(cache_dir_from_config(cfg))  # the baseline's fit is the prior's
        prior = plat.fit_prior(fit_ease_prior(plat.task.data, lambdas, batch, cache), seq.prior_weights)
        info["prior"] = {"weight": prior.weight, **prior.info}
        log.info("%s: EASE prior λ=%g, blend weight %g", plat.name, prior.info["lambda"], prior.weight)
    return info


def served_metrics(plat: SeqPlatform, split: str, users: Sequence[int] | None, batch_size: int) -> dict[str, Any]:
    """The served model's metrics on ``split``, with its parts' beside them.

    The shared part's under ``shared-``; with a prior, the unblended personal model's under
    ``personal-`` and the blend weight as ``prior-weight``.
    """
    task = plat.task
    weight = None if task.prior is None else task.prior.weight
    variants: list[tuple[str, float | None]] = [("personal", weight)]
    if weight is not None:
        variants.append(("personal", None))
    if task.personal is not None:
        variants.append(("shared", None))
    res = task.evaluate_variants(split, variants, users, batch_size)  # one pass over the users
    out = dict(res[("personal", weight)])
    if weight is not None:
        out.update(_prefixed(PERSONAL_PREFIX, res[("personal", None)]))
        out["prior-weight"] = weight
    if task.personal is not None:
        out.update(_prefixed(SHARED_PREFIX, res[("shared", None)]))
    return out


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in metrics.items() if k != "users"}
