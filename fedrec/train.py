"""The local trainer: adapters in, adapters out, with metrics and example counts.

:func:`fit` trains the shared encoder's LoRA adapters (and each task's platform-local
head) on one or more :class:`~fedrec.task.PlatformTask`. One task is a local run and
exactly the unit a federated client calls; several tasks pooled is the centralized
(non-federated) upper bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedrec.steps import Step, StepHooks, StepStats, run_steps
from fedrec.task import PlatformTask


@dataclass
class FitResult:
    """What a training run reports.

    Attributes
    ----------
    steps : int
        Optimizer steps taken.
    num_examples : dict of str to int
        Training examples processed per platform (samples, not batches).
    loss : dict of str to float
        Mean training loss per platform.
    seconds : float
        Wall time of the training loop (excluding cache building).
    """

    steps: int = 0
    num_examples: dict[str, int] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        """Training throughput over all platforms."""
        return sum(self.num_examples.values()) / self.seconds if self.seconds > 0 else 0.0


def trainable_parameters(tasks: list[PlatformTask]) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(adapter parameters, platform-local parameters)`` of the tasks, without duplicates."""
    encoder = tasks[0].encoder
    adapters = [p for p in encoder.parameters() if p.requires_grad]
    local = [p for t in tasks if t.model.head is not None for p in t.model.head.parameters()]
    return adapters, local


def schedule(
    tasks: list[PlatformTask], batch_size: int, epochs: float, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """Interleaved batches ``(task index, example rows)`` covering ``epochs`` passes."""
    out: list[tuple[int, np.ndarray]] = []
    for _ in range(max(1, math.ceil(epochs))):
        epoch = []
        for ti, task in enumerate(tasks):
            perm = rng.permutation(len(task.examples))
            epoch += [(ti, perm[s : s + batch_size]) for s in range(0, len(perm), batch_size)]
        order = rng.permutation(len(epoch))
        out += [epoch[i] for i in order]
    per_epoch = len(out) / max(1, math.ceil(epochs))
    return out[: max(1, round(per_epoch * epochs))]


def fit_options(train_cfg: Any) -> dict[str, Any]:
    """The optimiser and sampling keyword arguments of :func:`fit` taken from a ``train`` config group."""
    t = train_cfg
    return {
        "batch_size": t.batch_size,
        "lr": t.lr,
        "head_lr": t.head_lr,
        "weight_decay": t.weight_decay,
        "num_negatives": t.num_negatives,
        "index_refresh_steps": t.index_refresh_steps,
    }


def sample_negatives(num_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct catalogue items drawn uniformly (public randomness); all items if ``k < 0``."""
    if k < 0 or k >= num_items:
        return np.arange(num_items)
    return rng.choice(num_items, size=k, replace=False)


def fit(
    tasks: list[PlatformTask],
    epochs: float = 1.0,
    batch_size: int = 64,
    lr: float = 1e-3,
    head_lr: float = 1e-2,
    weight_decay: float = 0.0,
    num_negatives: int = 1024,
    index_refresh_steps: int = 50,
    max_steps: int = -1,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train the shared adapters (and each task's head) on the tasks' examples.

    Parameters
    ----------
    tasks : list of PlatformTask
        One task (local training, a federated client) or several (pooled).
    epochs : float, default 1.0
        Passes over all examples.
    batch_size : int, default 64
        Examples per step (one platform per step).
    lr : float, default 1e-3
        AdamW learning rate of the adapters.
    head_lr : float, default 1e-2
        AdamW learning rate of the platform-local heads.
    weight_decay : float, default 0.0
        AdamW weight decay.
    num_negatives : int, default 1024
        Catalogue negatives per step (-1 = whole catalogue).
    index_refresh_steps : int, default 50
        Re-encode a task's item index after this many steps.
    max_steps : int, default -1
        Cap on the steps (-1 = none).
    seed : int, default 0
        Seed of the batch order and the negatives.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    FitResult
    """
    rng = np.random.default_rng(seed)
    adapters, local = trainable_parameters(tasks)
    groups = [{"params": adapters, "lr": lr}]
    if local:
        groups.append({"params": local, "lr": head_lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    plan = schedule(tasks, batch_size, epochs, rng)
    if max_steps >= 0:
        plan = plan[:max_steps]
    for t in tasks:
        t.model.train()
        t.refresh_index()
    last_refresh = [0] * len(tasks)
    sums = {t.name: 0.0 for t in tasks}
    counts = {t.name: 0 for t in tasks}

    def before(step: int, item: tuple[int, np.ndarray]) -> None:
        ti = item[0]
        if step - last_refresh[ti] >= index_refresh_steps:
            tasks[ti].refresh_index()
            last_refresh[ti] = step

    def forward(item: tuple[int, np.ndarray]) -> Step:
        task = tasks[item[0]]
        return Step(task.model(**task.batch(item[1], sample_negatives(task.data.num_items, num_negatives, rng))))

    def after(step: int, item: tuple[int, np.ndarray], result: Step) -> None:
        assert result.losses is not None
        name = tasks[item[0]].name
        sums[name] += float(result.losses.detach().sum())
        counts[name] += len(item[1])

    def postfix(step: int, stats: StepStats, result: Step) -> dict[str, str]:
        assert result.losses is not None
        return {
            "loss": f"{result.losses.mean().item():.3f}",
            "ex_s": f"{stats.rows / (time.perf_counter() - start):.0f}",
        }

    start = time.perf_counter()
    hooks = StepHooks(before=before, after=after, postfix=postfix, desc="train", progress=progress)
    stats = run_steps(plan, forward, opt, hooks)
    for t in tasks:
        t.model.eval()
    return FitResult(
        steps=stats.steps,
        num_examples=counts,
        loss={k: sums[k] / max(1, counts[k]) for k in sums},
        seconds=stats.seconds,
    )
