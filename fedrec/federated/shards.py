"""Clients of a federation: one per platform, or one per user shard of each platform.

With ``federation.shards_per_platform = n`` a run has ``len(platforms) * n`` clients.
Client ``k`` (Flower's partition id in simulation) serves platform ``k // n``, shard
``k % n`` (:func:`fedrec.data.shard.shard_users`: a disjoint subset of the platform's
users). A client is named after its platform (``video``) when ``n == 1`` and
``<platform>/<shard>`` (``video/3``) otherwise; the server keys replies, history and
results by that name.

Per-platform figures (history ``platforms``, the cross-platform loss, the results'
``platforms``) combine the platform's shards:

* evaluation metrics (loss, HR@10, NDCG@10, MRR, coverage@10): user-weighted means, so
  every metric that is a mean over users is exactly the metric over the union of the
  shards' evaluated users (coverage@10 is the users-weighted mean of the shards'
  coverages, not the coverage of the union's top-10 lists); ``users`` and
  ``num-examples`` are summed;
* training metrics: ``num_examples``, ``steps`` and ``bytes_up`` summed, times
  (``*seconds``) the slowest shard's (the critical path), everything else (the train
  loss) example-weighted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

SEP = "/"
SUMMED = ("num_examples", "num-examples", "users", "steps", "bytes_up")


def shards_per_platform(cfg: DictConfig) -> int:
    """``federation.shards_per_platform`` (1 when the key is absent, e.g. an older run's config)."""
    return int(cfg.federation.get("shards_per_platform", 1))


def client_name(platform: str, shard: int, shards: int) -> str:
    """``platform`` when the platform is one client, ``platform/shard`` when it is split."""
    return platform if shards == 1 else f"{platform}{SEP}{shard}"


def client_platform(name: str) -> str:
    """The platform of a client name (``video/3`` -> ``video``)."""
    return name.split(SEP, 1)[0]


def client_names(cfg: DictConfig) -> list[str]:
    """Every client of the run, in partition-id order (platform-major)."""
    n = shards_per_platform(cfg)
    return [client_name(p, s, n) for p in cfg.platforms for s in range(n)]


def partition_client(cfg: DictConfig, partition_id: int) -> tuple[str, int]:
    """``(platform, shard)`` a simulated partition serves.

    Raises
    ------
    ValueError
        If the partition id is outside ``[0, len(platforms) * shards)``.
    """
    names, n = list(cfg.platforms), shards_per_platform(cfg)
    if not 0 <= partition_id < len(names) * n:
        raise ValueError(
            f"partition {partition_id} has no client: the run has {len(names)} platforms {names} x {n} shards"
        )
    return names[partition_id // n], partition_id % n


def client_index(cfg: DictConfig, platform: str, shard: int) -> int:
    """The partition id of ``(platform, shard)`` (-1 if the platform is not in the run)."""
    names = list(cfg.platforms)
    return names.index(platform) * shards_per_platform(cfg) + shard if platform in names else -1


def _combine(parts: Sequence[Mapping[str, Any]], weight: str) -> dict[str, Any]:
    """Combine one platform's shard dicts: counts summed, times max, the rest ``weight``-weighted."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        values = [(p[key], float(p.get(weight, 0))) for p in parts if isinstance(p.get(key), int | float)]
        if not values:
            continue
        if key in SUMMED:
            s = sum(v for v, _ in values)
            out[key] = int(s) if all(isinstance(v, int) for v, _ in values) else float(s)
        elif key.endswith("seconds"):
            out[key] = max(float(v) for v, _ in values)
        else:
            w = sum(x for _, x in values)
            out[key] = sum(float(v) * x for v, x in values) / w if w > 0 else float("nan")
    return out


def combine_train(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A platform's training figures from its shards' (None when no shard trained)."""
    return _combine(parts, "num_examples") if parts else None


def combine_eval(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A platform's evaluation metrics from its shards' (user-weighted; None when none reported)."""
    return _combine(parts, "users") if parts else None


def by_platform(
    per_client: Mapping[str, Mapping[str, Any] | None], platforms: Sequence[str], evaluation: bool
) -> dict[str, dict[str, Any] | None]:
    """Combine per-client dicts (keyed by client name) into per-platform ones.

    Parameters
    ----------
    per_client : mapping
        Client name to its training figures or evaluation metrics (None: nothing reported).
    platforms : sequence of str
        The run's platforms (every one gets a key).
    evaluation : bool
        User-weighted evaluation metrics (True) or example-weighted training figures.
    """
    combine = combine_eval if evaluation else combine_train
    groups: dict[str, list[Mapping[str, Any]]] = {p: [] for p in platforms}
    for name, v in per_client.items():
        if v is not None and client_platform(name) in groups:
            groups[client_platform(name)].append(v)
    return {p: combine(groups[p]) for p in platforms}
