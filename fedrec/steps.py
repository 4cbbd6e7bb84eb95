"""The one optimiser-step loop every trainer runs: two-tower ``fit``, the sequence model, DP-SGD.

A trainer describes its step as a *forward* (what one planned item — a batch of rows, a DP
step index — costs: per-row losses) and a few :class:`StepHooks` (an index refresh before a
step, per-sample gradient bookkeeping between backward and the optimiser step, its own
accounting after it, a progress bar); :func:`run_steps` does the rest, in one fixed order:

1. ``hooks.before(step, item)``
2. ``optimizer.zero_grad(set_to_none=True)`` (before the forward: Opacus's optimiser also
   clears the embedding lookups the forward records)
3. ``result = forward(item)``; unless it is empty (a DP step that sampled nobody),
   ``losses.mean()`` (or ``.sum()``) ``.backward()``
4. ``hooks.after_backward(result)``
5. ``optimizer.step()``
6. the :class:`StepStats` counts, then ``hooks.after(step, item, result)``
7. every ``hooks.every`` steps, the progress bar's postfix from ``hooks.postfix``
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")


@dataclass
class StepStats:
    """What a training call reports: steps, rows (users or examples) and targets seen, mean loss, seconds."""

    steps: int = 0
    rows: int = 0
    targets: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        """Mean per-row loss."""
        return self.loss_sum / self.rows if self.rows else float("nan")


@dataclass
class Step:
    """One step's forward.

    Attributes
    ----------
    losses : torch.Tensor or None
        ``[B]`` per-row losses (None: nothing to back-propagate, e.g. a DP batch that
        sampled nobody; the optimiser still steps).
    targets : int, default 0
        Targets the rows hold (a sequential row holds many).
    """

    losses: torch.Tensor | None
    targets: int = 0


@dataclass
class StepHooks(Generic[T]):
    """A trainer's per-step callbacks and progress display for :func:`run_steps` (each optional).

    Attributes
    ----------
    before : callable, optional
        ``before(step, item)``, before the step (refresh an item index, reseed noise).
    after_backward : callable, optional
        ``after_backward(result)``, between backward and ``optimizer.step()``.
    after : callable, optional
        ``after(step, item, result)``, after the step and the counts (a trainer's own figures).
    desc : str, default "train"
        The progress bar's label.
    progress : bool, default False
        Show a progress bar.
    postfix : callable, optional
        ``postfix(step, stats, result) -> {name: text}`` (or None: leave it), shown every
        ``every`` steps.
    every : int, default 10
        Steps between postfix updates.
    """

    before: Callable[[int, T], None] | None = None
    after_backward: Callable[[Step], None] | None = None
    after: Callable[[int, T, Step], None] | None = None
    desc: str = "train"
    progress: bool = False
    postfix: Callable[[int, StepStats, Step], dict[str, str] | None] | None = None
    every: int = 10


def run_steps(
    plan: Iterable[T],
    forward: Callable[[T], Step],
    optimizer: torch.optim.Optimizer,
    hooks: StepHooks[T] | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> StepStats:
    """Take one optimiser step per item of ``plan`` (the order is the module's docstring).

    Parameters
    ----------
    plan : iterable
        One item per step (a batch's rows, ``(task, rows)``, a step index).
    forward : callable
        ``forward(item) -> Step``: the step's per-row losses, computed with gradients.
    optimizer : torch.optim.Optimizer
        Stepped once per item (also on an empty :class:`Step`).
    hooks : StepHooks, optional
        Per-step callbacks and the progress bar; default none and no bar.
    reduction : {"mean", "sum"}, default "mean"
        What is back-propagated: the mean of the losses (SGD) or their sum (DP-SGD: the
        DP optimiser divides the noisy sum itself).

    Returns
    -------
    StepStats
        Steps, rows and targets seen, the summed loss and the loop's wall time.
    """
    hooks = hooks or StepHooks[T]()
    stats = StepStats()
    start = time.perf_counter()
    bar = tqdm(plan, desc=hooks.desc, unit="step", disable=not hooks.progress)
    try:
        for step, item in enumerate(bar):
            if hooks.before is not None:
                hooks.before(step, item)
            optimizer.zero_grad(set_to_none=True)
            result = forward(item)
            if result.losses is not None:
                (result.losses.mean() if reduction == "mean" else result.losses.sum()).backward()
            if hooks.after_backward is not None:
                hooks.after_backward(result)
            optimizer.step()
            stats.steps += 1
            stats.targets += result.targets
            if result.losses is not None:
                stats.rows += len(result.losses)
                stats.loss_sum += float(result.losses.detach().sum())
            if hooks.after is not None:
                hooks.after(step, item, result)
            if hooks.postfix is not None and step % hooks.every == 0:
                shown = hooks.postfix(step, stats, result)
                if shown:
                    bar.set_postfix(shown)
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - start
    return stats
