"""Timed blocks of two trainers on one task, alternating, for ``fedrec bench train`` and ``seqtrain``.

A runner (a task and its two trainers, ``non_dp`` and ``dp``) is measured in blocks of steps in
the order non-DP, DP, DP, non-DP, ... so that load from other processes hits both alike; the
rates are medians over blocks, the DP / non-DP ratio the median over adjacent block pairs, and
each block's peak RSS is its own (:class:`~fedrec.cli.bench.common.PeakRSS`).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedrec.cli.bench.common import PeakRSS, median, ratio


@dataclass(frozen=True)
class Budget:
    """How long a row is measured.

    Attributes
    ----------
    seconds : float
        Minimum training seconds per mode.
    block_seconds : float
        Target duration of one block (its step count is set from the warm-up rates).
    min_pairs : int
        Minimum (non-DP, DP) block pairs, whatever ``seconds`` says.
    max_pairs : int
        Stop after this many pairs.
    warmup_steps : int
        Untimed steps per mode before measuring (allocation, first-call costs).
    """

    seconds: float = 12.0
    block_seconds: float = 2.0
    min_pairs: int = 3
    max_pairs: int = 40
    warmup_steps: int = 2


def default_budget(smoke: bool = False) -> Budget:
    """:class:`Budget`'s defaults; with ``smoke``: 1 warm-up step, then 2 pairs of 1-step blocks."""
    if smoke:
        return Budget(seconds=0.0, block_seconds=0.0, min_pairs=2, max_pairs=2, warmup_steps=1)
    return Budget()


def _mode_summary(blocks: list[dict[str, float]]) -> dict[str, Any]:
    examples = sum(b["examples"] for b in blocks)
    seconds = sum(b["seconds"] for b in blocks)
    extra = {}
    if blocks and all("targets" in b for b in blocks):
        extra["targets_per_s"] = median(b["targets"] / b["seconds"] for b in blocks if b["seconds"] > 0)
        extra["targets"] = int(sum(b["targets"] for b in blocks))
    return {
        **extra,
        "examples_per_s": median(b["examples"] / b["seconds"] for b in blocks if b["seconds"] > 0),
        "examples_per_s_total": ratio(examples, seconds),
        "examples": int(examples),
        "seconds": round(seconds, 3),
        "blocks": len(blocks),
        "block_rates": [round(b["examples"] / b["seconds"], 2) for b in blocks if b["seconds"] > 0],
        "peak_rss_mib": max((b["peak_mib"] for b in blocks), default=float("nan")),
        "rss_increase_mib": max((b["peak_mib"] - b["before_mib"] for b in blocks), default=float("nan")),
    }


def measure_runners(runners: Sequence[Any], batch: int, budget: Budget, rss: PeakRSS) -> list[dict[str, Any]]:
    """Measure both trainers of every runner, runners interleaved (the loop of :func:`measure_rows`).

    A runner has ``platform``, ``users``, ``build_seconds`` and ``run(mode, steps, seed)``
    returning ``examples``, ``seconds``, ``peak_mib``, ``before_mib`` (and optionally
    ``targets``: then each mode's summary has ``targets_per_s`` too); :class:`RowRunner`
    and the sequence model's :class:`fedrec.cli.bench.seq_train.SeqRunner` are two.
    """
    gc.collect()  # once, before measuring: a collection inside a block would count as training time
    steps = []
    for runner in runners:  # warm-up (not in the results); its rates size the blocks
        warm = [runner.run(m, budget.warmup_steps, seed=10_000) for m in ("non_dp", "dp")]
        slowest = min(ratio(w["examples"], w["seconds"]) for w in warm)
        steps.append(max(1, min(100, round(budget.block_seconds * slowest / batch))) if math.isfinite(slowest) else 1)
    blocks: list[dict[str, list[dict[str, float]]]] = [{"non_dp": [], "dp": []} for _ in runners]
    pair_ratios: list[list[float]] = [[] for _ in runners]

    def done(i: int) -> bool:
        spent = min(sum(b["seconds"] for b in blocks[i][m]) for m in ("non_dp", "dp"))
        return len(pair_ratios[i]) >= budget.min_pairs and spent >= budget.seconds

    pair = 0
    while pair < budget.max_pairs and not all(done(i) for i in range(len(runners))):
        pair += 1
        order = ("non_dp", "dp") if pair % 2 else ("dp", "non_dp")
        for k in range(len(runners)):
            i = (k + pair - 1) % len(runners)
            rates = {}
            for mode in order:
                b = runners[i].run(mode, steps[i], seed=pair)
                blocks[i][mode].append(b)
                rates[mode] = ratio(b["examples"], b["seconds"])
            pair_ratios[i].append(ratio(rates["dp"], rates["non_dp"]))
    out = []
    for i, runner in enumerate(runners):
        non_dp, dp = _mode_summary(blocks[i]["non_dp"]), _mode_summary(blocks[i]["dp"])
        out.append(
            {
                "platform": runner.platform,
                "users": runner.users,
                "build_seconds": round(runner.build_seconds, 2),
                "steps_per_block": steps[i],
                "peak_resettable": rss.resettable,
                "non_dp": non_dp,
                "dp": dp,
                "dp_ratio": median(pair_ratios[i]),
                "dp_ratio_total": ratio(dp["examples_per_s_total"], non_dp["examples_per_s_total"]),
            }
        )
    return out
