"""What a federated run's rounds say: the progress line of a round, and the privacy spent.

Functions of the round history the :class:`~fedrec.federated.server.Coordinator` keeps (one
entry per round, as in ``results.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from fedrec.metrics import NDCG


def round_line(entry: dict[str, Any], rounds: int, best_round: int | None) -> str:
    """One progress line for a round (``rounds`` in all; the best round so far)."""
    x = entry["cross_platform_loss"]
    parts = [f"round {entry['round']}/{rounds}", f"xloss {x:.4f}" if x is not None else "xloss n/a"]
    for p, v in entry["platforms"].items():
        if v["valid"] and NDCG in v["valid"]:
            parts.append(f"{p} {NDCG} {v['valid'][NDCG]:.4f}")
    eps = epsilons(entry)
    if eps:
        parts.append("eps " + " ".join(f"{p} {e:.3g}" for p, e in eps.items()))
    parts.append(f"{entry['bytes']['down_per_client'] / 1024:.1f}+{entry['bytes']['up_per_client'] / 1024:.1f} KiB")
    if entry["rejected"]:
        parts.append(f"{len(entry['rejected'])} rejected")
    if entry.get("refused"):
        parts.append(f"{len(entry['refused'])} refused")
    parts.append(f"{entry['seconds']:.1f}s")
    best = f" (best {best_round})" if best_round else ""
    return " | ".join(parts) + best


def epsilons(entry: dict[str, Any]) -> dict[str, float]:
    """Each platform's cumulative epsilon after a round (from its reply, trained or refused)."""
    out = {
        p: float(v["train"]["epsilon"]) for p, v in entry["platforms"].items() if v["train"] and "epsilon" in v["train"]
    }
    out.update({r["platform"]: float(r["epsilon"]) for r in entry.get("refused", []) if "epsilon" in r})
    return dict(sorted(out.items()))


def privacy_summary(cfg: DictConfig, history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``privacy`` block of ``results.json`` from a run's round history (None without DP)."""
    p = cfg.get("privacy")
    if p is None or not p.enabled:
        return None
    last: dict[str, dict[str, float]] = {}
    for entry in history:
        for name, v in entry["platforms"].items():
            if v["train"] and "epsilon" in v["train"]:
                last[name] = v["train"]
        for r in entry.get("refused", []):
            last.setdefault(r["platform"], {}).update({"epsilon": r["epsilon"]})
    return {
        "unit": "user",
        "accountant": str(p.accountant),
        "delta": float(p.delta),
        "target_epsilon": None if p.target_epsilon is None else float(p.target_epsilon),
        "budget": None if p.budget is None else float(p.budget),
        "epsilon": {name: v.get("epsilon") for name, v in sorted(last.items())},
        "noise_multiplier": {name: v.get("noise_multiplier") for name, v in sorted(last.items())},
        "sample_rate": {name: v.get("sample_rate") for name, v in sorted(last.items())},
        "max_grad_norm": float(p.max_grad_norm),
        "per_round": [{"round": e["round"], "epsilon": epsilons(e)} for e in history],
        "guarantee": (
            "Each platform's adapter updates, over all rounds of this run, are (epsilon, delta)-DP with respect "
            "to adding or removing one of that platform's users (the user's whole history); its item-ID "
            "embeddings never leave it. Not covered: client-level DP, secure aggregation."
        ),
    }
