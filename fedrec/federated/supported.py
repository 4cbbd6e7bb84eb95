"""Settings the federated path refuses rather than silently ignores."""

from __future__ import annotations

from omegaconf import DictConfig

from fedrec.federated.shards import shards_per_platform


def check_supported(cfg: DictConfig) -> None:
    """Refuse settings the federated path does not honour (rather than ignoring them).

    Raises
    ------
    ValueError
        With ``privacy.enabled`` and ``federation.fraction_train < 1``: the client's
        accounting assumes it trains every round it is planned for (its noise is
        calibrated for ``federation.rounds`` rounds); sampled participation is not
        accounted for. With ``privacy.enabled`` and ``federation.shards_per_platform > 1``:
        each shard would keep its own ledger and the platform's epsilon over its shards
        is not reported. A server optimiser with ``svd`` aggregation.
    """
    priv = cfg.get("privacy")
    if priv is not None and priv.get("enabled", False) and float(cfg.federation.fraction_train) < 1.0:
        raise ValueError(
            "privacy.enabled=true needs federation.fraction_train=1.0 (each platform's DP plan covers every round)"
        )
    if priv is not None and priv.get("enabled", False) and shards_per_platform(cfg) > 1:
        raise ValueError(
            "privacy.enabled=true needs federation.shards_per_platform=1 (a platform's privacy ledger and epsilon "
            "are per client; split platforms are not accounted for)"
        )
    opt = str(cfg.federation.get("server_optimizer", "none"))
    if opt != "none" and str(cfg.federation.aggregation) == "svd":
        raise ValueError(
            f"federation.server_optimizer={opt} steps on the change of every tensor; federation.aggregation=svd "
            "re-factors the LoRA pairs each round, so their change is not a gradient (use fedavg or ffa)"
        )
    if str(cfg.model.get("kind", "two_tower")) == "seqrec":
        if str(cfg.federation.aggregation) != "fedavg":
            raise ValueError(
                f"model.kind=seqrec federates its shared part with federation.aggregation=fedavg, got "
                f"{cfg.federation.aggregation!r} (ffa and svd merge LoRA pairs; the sequence model's shared part is "
                "dense)"
            )
        if shards_per_platform(cfg) > 1:
            raise ValueError("model.kind=seqrec runs one client per platform (federation.shards_per_platform=1)")
