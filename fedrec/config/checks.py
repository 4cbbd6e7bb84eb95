"""Checks of a composed configuration the type system cannot make: enumerations, ranges, combinations."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from fedrec.config.schema import CHOICES
from fedrec.model.precision import resolve_bf16


def validate(cfg: DictConfig) -> None:
    """Check values the type system cannot (enumerations, ranges).

    Raises
    ------
    ValueError
        Naming the key, the bad value and the allowed values.
    """
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ValueError(f"config key {key}={value!r} is not one of {list(allowed)}")
    if not cfg.platforms:
        raise ValueError("no platform selected: set platform=<name> or platform=[a,b]")
    for name, p in cfg.platforms.items():
        if p.friend_signal and name != "social" and p.loader != "custom":
            raise ValueError(f"platforms.{name}.friend_signal needs a platform with a friend graph")
    validate_seq(cfg)
    resolve_bf16(cfg.model.bf16)
    if cfg.model.lora_layers < 0:
        raise ValueError(f"model.lora_layers must be >= 0, got {cfg.model.lora_layers}")
    if cfg.train.batch_size <= 0:
        raise ValueError(f"train.batch_size must be > 0, got {cfg.train.batch_size}")
    validate_federation(cfg)
    known = ("mostpop", "itemknn", "frozen_text", "ease", "sasrec")
    for key in ("baselines", "federation.compare_baselines"):
        bad = [m for m in OmegaConf.select(cfg, key) or [] if m not in known]
        if bad:
            raise ValueError(f"config key {key} has unknown models {bad}; known: {list(known)}")
    validate_baseline(cfg)
    if not 0.0 <= cfg.mmr_lambda <= 1.0 or cfg.k < 1:
        raise ValueError(f"mmr_lambda must be in [0, 1] and k >= 1, got mmr_lambda={cfg.mmr_lambda}, k={cfg.k}")
    validate_privacy(cfg)


def validate_federation(cfg: DictConfig) -> None:
    """Check ``federation``: round counts, fractions, sizes and the robust-aggregation bounds.

    Raises
    ------
    ValueError
        Naming the key and the bad value.
    """
    fed = cfg.federation
    if fed.rounds < 1:
        raise ValueError(f"federation.rounds must be >= 1, got {fed.rounds}")
    from fedrec.federated.server_opt import from_config

    try:
        from_config(fed)
    except ValueError as err:
        raise ValueError(f"federation.server_*: {err}") from None
    if not 0.0 < fed.fraction_train <= 1.0:
        raise ValueError(f"federation.fraction_train must be in (0, 1], got {fed.fraction_train}")
    if fed.min_clients < 0 or fed.checkpoint_every < 1 or fed.client_cpus <= 0:
        raise ValueError(
            "federation.min_clients must be >= 0, federation.checkpoint_every >= 1 and federation.client_cpus > 0"
        )
    if fed.shards_per_platform < 1 or fed.client_cache < 1 or fed.object_store_mib < 0:
        raise ValueError(
            "federation.shards_per_platform and federation.client_cache must be >= 1 and "
            f"federation.object_store_mib >= 0, got {fed.shards_per_platform}, {fed.client_cache}, "
            f"{fed.object_store_mib}"
        )
    if fed.update_norm_bound < 0 or not 0.0 < fed.max_weight_share <= 1.0:
        raise ValueError(
            "federation.update_norm_bound must be >= 0 (0 = off) and federation.max_weight_share in (0, 1] "
            f"(1 = off), got {fed.update_norm_bound} and {fed.max_weight_share}"
        )
    for key in ("wait_timeout", "round_timeout"):
        value = float(fed[key])
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"federation.{key} must be a finite number of seconds > 0, got {fed[key]}")
    validate_robust(fed)
    validate_secagg(cfg)


MODULUS = 2**32  # SecAgg+'s mask modulus (Flower's default modulus_range)


def validate_secagg(cfg: DictConfig) -> None:
    """Check ``federation.secure_aggregation`` and its ``secagg_*`` parameters.

    Under SecAgg+ the server sees only the weighted sum of the updates, so every setting
    that checks, clips, re-weights or selects an individual update is refused with it.

    Raises
    ------
    ValueError
        Naming the keys that cannot go with ``secure_aggregation=secaggplus``, or a bad parameter.
    """
    fed = cfg.federation
    if str(fed.get("secure_aggregation", "none")) == "none":
        return
    conflicts = []
    if str(fed.aggregation) == "svd":
        conflicts.append("federation.aggregation=svd (it merges each client's products B·A, not a sum of A and B)")
    if str(fed.robust) != "none":
        conflicts.append(f"federation.robust={fed.robust} (a median, trimmed mean or Krum needs every update)")
    if float(fed.update_norm_bound) > 0:
        conflicts.append("federation.update_norm_bound > 0 (an update's norm is never seen)")
    if float(fed.max_weight_share) < 1:
        conflicts.append("federation.max_weight_share < 1 (the weights are applied by the clients, inside the sum)")
    if str(fed.weighting) != "examples":
        conflicts.append("federation.weighting=uniform (SecAgg+ weights by the clients' example counts)")
    if conflicts:
        raise ValueError(
            "federation.secure_aggregation=secaggplus shows the server only the weighted sum of the updates, never "
            "one of them, so it cannot go with: " + "; ".join(conflicts)
        )
    clients = len(cfg.platforms) * int(fed.shards_per_platform)
    if clients < 2:
        raise ValueError(f"federation.secure_aggregation=secaggplus needs at least 2 clients, got {clients}")
    shares, threshold = float(fed.secagg_num_shares), float(fed.secagg_reconstruction_threshold)
    if not (0 < shares <= 1 or (shares >= 3 and shares.is_integer())):
        raise ValueError(f"federation.secagg_num_shares must be in (0, 1] or an integer >= 3, got {shares}")
    if not (0 < threshold <= 1 or (threshold.is_integer() and (shares <= 1 or threshold < shares))):
        raise ValueError(
            "federation.secagg_reconstruction_threshold must be in (0, 1] or an integer below "
            f"federation.secagg_num_shares, got {threshold} (num_shares {shares})"
        )
    rng = int(fed.secagg_quantization_range)
    if float(fed.secagg_clipping_range) <= 0 or float(fed.secagg_max_weight) <= 0 or rng <= 0:
        raise ValueError(
            "federation.secagg_clipping_range, federation.secagg_max_weight and federation.secagg_quantization_range "
            f"must be > 0, got {fed.secagg_clipping_range}, {fed.secagg_max_weight}, {rng}"
        )
    if clients * rng >= MODULUS:
        raise ValueError(
            f"federation.secagg_quantization_range={rng} times the {clients} clients must stay below the mask "
            f"modulus 2**32 (the sum would wrap around)"
        )


def validate_robust(fed: DictConfig) -> None:
    """Check the robust-aggregation keys (``federation.robust`` and its parameters).

    Raises
    ------
    ValueError
        Naming the key and the bad value, or the aggregation mode robust aggregation does not support.
    """
    robust = str(fed.get("robust", "none"))
    if not 0.0 <= float(fed.robust_trim_fraction) < 0.5:
        raise ValueError(f"federation.robust_trim_fraction must be in [0, 0.5), got {fed.robust_trim_fraction}")
    if int(fed.robust_byzantine) < 0:
        raise ValueError(f"federation.robust_byzantine must be >= 0, got {fed.robust_byzantine}")
    if robust != "none" and str(fed.aggregation) == "svd":
        raise ValueError(
            f"federation.robust={robust} is not supported with federation.aggregation=svd (svd merges the products "
            "B·A and re-factorises them; a coordinate-wise median, trimmed mean or Krum selection of A and B is "
            "not that merge): use aggregation=fedavg or ffa, or robust=none"
        )


def validate_seq(cfg: DictConfig) -> None:
    """Check ``model.seq`` (the sequence model's ranges and part names).

    Raises
    ------
    ValueError
        Naming the key and the bad value.
    """
    seq = cfg.model.seq
    if seq.dim < 1 or seq.heads < 1 or seq.dim % seq.heads:
        raise ValueError(f"model.seq.dim ({seq.dim}) must be a positive multiple of model.seq.heads ({seq.heads})")
    if seq.layers < 1 or seq.max_history < 1 or seq.batch_size < 1 or seq.personal_epochs < 0:
        raise ValueError("model.seq.layers, max_history and batch_size must be >= 1 and personal_epochs >= 0")
    if seq.length_groups < 1:
        raise ValueError(f"model.seq.length_groups must be >= 1, got {seq.length_groups}")
    if not 0.0 < seq.holdout < 1.0 or not 0.0 <= seq.dropout < 1.0:
        raise ValueError(f"model.seq.holdout must be in (0, 1) and dropout in [0, 1), got {seq.holdout}, {seq.dropout}")
    for name, p in cfg.platforms.items():
        if not 0.0 < float(p.get("user_fraction", 1.0)) <= 1.0:
            raise ValueError(f"platforms.{name}.user_fraction must be in (0, 1], got {p.user_fraction}")
        if p.get("prior", "none") not in ("none", "ease"):
            raise ValueError(f"platforms.{name}.prior={p.prior!r} is not one of ['none', 'ease']")
    if any(not 0.0 <= w <= 1.0 for w in seq.prior_weights) or not seq.prior_weights:
        raise ValueError(f"model.seq.prior_weights must be a non-empty list in [0, 1], got {list(seq.prior_weights)}")
    bad = [p for p in seq.local_parts if p not in ("adaptor", "encoder")]
    if bad:
        raise ValueError(f"model.seq.local_parts has unknown parts {bad}; known: ['adaptor', 'encoder']")


def validate_baseline(cfg: DictConfig) -> None:
    """Check the ``baseline`` group: positive λ grids, positive SASRec sizes and budgets.

    Raises
    ------
    ValueError
        Naming the key and its bad value.
    """
    b = cfg.get("baseline")
    if b is None:
        return
    grids = {"baseline.ease.lambdas": b.ease.lambdas}
    grids.update({f"baseline.ease.platform_lambdas.{p}": v for p, v in b.ease.platform_lambdas.items()})
    for key, grid in grids.items():
        if not grid or any(not float(x) > 0 for x in grid):
            raise ValueError(f"config key {key} must be a non-empty list of positive numbers, got {list(grid)}")
    s = b.sasrec
    for key in ("dim", "max_len", "layers", "heads", "batch_size", "max_epochs", "eval_every", "patience"):
        if int(s[key]) < 1:
            raise ValueError(f"config key baseline.sasrec.{key} must be >= 1, got {s[key]}")
    if s.dim % s.heads:
        raise ValueError(f"baseline.sasrec.dim={s.dim} is not divisible by baseline.sasrec.heads={s.heads}")
    if not 0.0 <= s.dropout < 1.0 or not s.lr > 0 or s.threads < 0:
        raise ValueError(
            "baseline.sasrec.dropout must be in [0, 1), lr > 0 and threads >= 0, got "
            f"dropout={s.dropout}, lr={s.lr}, threads={s.threads}"
        )


def validate_privacy(cfg: DictConfig) -> None:
    """Check the ``privacy`` group (ranges, and no cross-user inputs when DP is on).

    Raises
    ------
    ValueError
        On an out-of-range value, or DP together with ``platforms.<p>.friend_signal``
        (the friend segment puts other users' data into a user's input, so one user's
        data would reach other users' gradients and the per-user sensitivity bound fails).
    """
    priv = cfg.get("privacy")
    if priv is None or not priv.enabled:
        return
    if priv.max_grad_norm <= 0 or priv.noise_multiplier < 0:
        raise ValueError("privacy.max_grad_norm must be > 0 and privacy.noise_multiplier >= 0")
    if not 0.0 < priv.delta < 1.0:
        raise ValueError(f"privacy.delta must be in (0, 1), got {priv.delta}")
    if priv.target_epsilon is not None and priv.target_epsilon <= 0:
        raise ValueError(f"privacy.target_epsilon must be > 0 (or null), got {priv.target_epsilon}")
    if priv.budget is not None and priv.budget <= 0:
        raise ValueError(f"privacy.budget must be > 0 (or null), got {priv.budget}")
    if priv.batch_size < 0:
        raise ValueError(f"privacy.batch_size must be >= 0, got {priv.batch_size}")
    if priv.lr < 0:
        raise ValueError(f"privacy.lr must be >= 0 (0 = model.seq.lr), got {priv.lr}")
    if not 0.0 <= priv.sample_rate <= 1.0:
        raise ValueError(f"privacy.sample_rate must be in [0, 1] (0 = batch_size / users), got {priv.sample_rate}")
    if cfg.command == "train" and cfg.mode == "centralized":
        raise ValueError(
            "privacy: user-level DP trains each platform on its own users, not a pool of platforms; "
            "use mode=local (or fedrec simulate)"
        )
    for name, p in cfg.platforms.items():
        if p.friend_signal:
            raise ValueError(
                f"platforms.{name}.friend_signal=true cannot be combined with differential privacy: the friend "
                "segment puts other users' data into each user's input, which breaks the user-level guarantee; "
                f"set platforms.{name}.friend_signal=false or privacy=off"
            )
