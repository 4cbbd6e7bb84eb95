"""``fedrec bench seqtrain``: the sequence model's local training users/s and targets/s, non-private vs DP.

One row per platform, on the default model (``model=seqrec``, as ``fedrec simulate``
trains it). Within a row both trainers run on the *same* :class:`~fedrec.seqrec.task.SeqTask`
and its shared part: :meth:`~fedrec.seqrec.task.SeqTask.train_shared` with ``batch`` users
per step (a row is one user with all of its targets) and
:func:`~fedrec.seqrec.private.train_shared_private`, user-level DP-SGD with ``batch``
*expected* users per step (Poisson sampling, per-user clipping, noise). They alternate in
blocks of steps exactly as ``fedrec bench train`` does
(:func:`fedrec.cli.bench.blocks.measure_runners`): users/s and targets/s (the positions
scored by the full-catalogue softmax) are the medians over blocks of the training loop;
DP/non-DP is the median over adjacent block pairs; peak RSS is each mode's own.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np

from fedrec.cli.bench.blocks import Budget, default_budget, measure_runners
from fedrec.cli.bench.common import (
    PeakRSS,
    base_overrides,
    compose,
    document,
    machine_info,
    median,
    print_table,
    write_result,
)

NAME = "seqtrain"
COLUMNS = (
    "platform",
    "users",
    "non-DP users/s",
    "DP users/s",
    "non-DP targets/s",
    "DP targets/s",
    "DP/non-DP",
    "DP peak MiB",
)
SMOKE_MODEL = "model=seqrec_tiny"


class _CountingTask:
    """A :class:`~fedrec.seqrec.task.SeqTask` seen through a proxy that counts the targets of its rows."""

    def __init__(self, task: Any) -> None:
        self._task, self.targets = task, 0

    def rows(self, users: Any, rng: np.random.Generator) -> Any:
        rows = self._task.rows(users, rng)
        self.targets += int(rows.num_targets.sum())
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


class SeqRunner:
    """One platform's sequence task and a timed block of either trainer on it.

    Parameters
    ----------
    platform : SeqPlatform
        The platform (its shared part and Adam optimiser are trained in place).
    batch : int
        Users per non-DP step and expected users per DP step.
    noise : float
        DP noise multiplier (does not change the cost; recorded).
    max_grad_norm : float
        DP per-user clip norm.
    rss : PeakRSS
        The process's peak-RSS meter (reset before every block).
    build_seconds : float
        Seconds it took to build the platforms, per platform (their mean).
    """

    def __init__(
        self, platform: Any, batch: int, noise: float, max_grad_norm: float, rss: PeakRSS, build_seconds: float
    ) -> None:
        self.plat, self.batch, self.noise, self.max_grad_norm, self.rss = platform, batch, noise, max_grad_norm, rss
        self.platform = platform.name
        self.users = len(platform.task.trainable_users)
        self.build_seconds = build_seconds
        self.batches_per_epoch = max(1, math.ceil(self.users / batch))

    def run(self, mode: str, steps: int, seed: int) -> dict[str, float]:
        """Train ``steps`` steps with ``mode`` (``"non_dp"`` or ``"dp"``): users, targets, seconds, peak RSS."""
        from fedrec.privacy.plan import DPPlan
        from fedrec.seqrec.private import train_shared_private

        self.rss.reset()
        before = self.rss.current_mib()
        task = self.plat.task
        if mode == "non_dp":
            stats = task.train_shared(
                self.plat.optimizer, steps / self.batches_per_epoch, self.batch, np.random.default_rng(seed)
            )
            users, targets, seconds = stats.rows, stats.targets, stats.seconds
        else:
            rate = min(1.0, self.batch / self.users)
            plan = DPPlan(
                noise_multiplier=self.noise,
                max_grad_norm=self.max_grad_norm,
                sample_rate=rate,
                expected_batch_size=rate * self.users,
                num_users=self.users,
                steps_per_round=steps,
            )
            counting = _CountingTask(task)
            res = train_shared_private(counting, plan, self.plat.optimizer, seed=seed)
            users, targets, seconds = res.sampled_examples, counting.targets, res.seconds
        return {
            "examples": float(users),
            "targets": float(targets),
            "seconds": seconds,
            "peak_mib": self.rss.peak_mib(),
            "before_mib": before,
        }


def run_seq_train(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str = "outputs/bench",
    platforms: list[str] | None = None,
    batch: int | None = None,
    noise: float = 1.0,
    budget: Budget | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the sequence-model train benchmark, print its table and write ``bench_seqtrain.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides (after ``model=seqrec``; ``model=...`` among them picks another
        sequence model).
    smoke : bool, default False
        ``model=seqrec_tiny``, one thread, 1-step blocks: seconds (CI).
    out_dir : str, default "outputs/bench"
        Where the JSON goes.
    platforms : list of str, optional
        Default: every platform of the config.
    batch : int, optional
        Default ``model.seq.batch_size``.
    noise : float, default 1.0
        DP noise multiplier.
    budget : Budget, optional
        Default :func:`fedrec.cli.bench.blocks.default_budget`.
    threads : int, optional
        Torch threads (default 1: what a simulated client gets on 2 cores).

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_seqtrain.json``.

    Raises
    ------
    ValueError
        If the composed model is not a sequence model.
    """
    start = time.perf_counter()
    model = SMOKE_MODEL if smoke else "model=seqrec"
    user = [o for o in (overrides or []) if o.split("=", 1)[0] != "model"]
    picked = [o for o in (overrides or []) if o.split("=", 1)[0] == "model"]
    extra = [f"platform=[{','.join(platforms)}]"] if platforms else []
    common = [*(picked or [model]), *base_overrides(False, threads or 1, ["train.progress=false", *extra, *user])]
    if smoke:
        common += ["model.seq.batch_size=16"]
    cfg = compose(common)
    if str(cfg.model.get("kind", "")) != "seqrec":
        raise ValueError(f"fedrec bench seqtrain measures a sequence model (model.kind=seqrec), got {cfg.model.kind!r}")
    import torch

    from fedrec.seqrec.local import build_platforms

    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    torch.set_num_threads(int(cfg.train.threads))
    torch.manual_seed(int(cfg.seed))
    batch = int(batch or cfg.model.seq.batch_size)
    budget = budget or default_budget(smoke)
    rss = PeakRSS()
    built = time.perf_counter()
    plats = build_platforms(cfg)
    build_s = (time.perf_counter() - built) / max(1, len(plats))
    max_norm = float(cfg.privacy.max_grad_norm)
    runners = [SeqRunner(p, batch, noise, max_norm, rss, build_s) for p in plats.values()]
    results = measure_runners(runners, batch, budget, rss)
    rows = [{"row": r["platform"], **r} for r in results]
    machine = machine_info()
    settings = {
        "model": str(cfg.model.backbone),
        "batch": batch,
        "noise_multiplier": noise,
        "max_grad_norm": max_norm,
        "max_history": int(cfg.model.seq.max_history),
        "threads": int(cfg.train.threads),
        "budget": asdict(budget),
        "overrides": common,
    }
    summary = {"dp_ratio_median": median(r["dp_ratio"] for r in rows)}
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    path = write_result(out_dir, NAME, doc)
    print_table(
        f"fedrec bench seqtrain: {cfg.model.backbone} sequence model, {batch} users per step",
        COLUMNS,
        [
            [
                r["platform"],
                r["users"],
                r["non_dp"]["examples_per_s"],
                r["dp"]["examples_per_s"],
                r["non_dp"].get("targets_per_s"),
                r["dp"].get("targets_per_s"),
                f"{r['dp_ratio']:.3f}",
                r["dp"]["peak_rss_mib"],
            ]
            for r in rows
        ],
        machine,
        [
            "users/s, targets/s: median over blocks of the training loop (a row is one user with all of its targets; "
            "targets are the positions the full-catalogue softmax scores); DP/non-DP: median over adjacent block "
            f"pairs (same task, same run); DP: Poisson sampling at {batch} expected users, per-user clipping, noise; "
            f"results: {path}",
        ],
    )
    return doc.to_json()
