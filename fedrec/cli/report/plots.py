"""The results report's PNG figures: loss per round, utility vs epsilon, round time vs clients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fedrec.cli.experiments import GRID
from fedrec.cli.report.bench import scale_rows
from fedrec.cli.report.common import pyplot, save_png
from fedrec.cli.report.grid import Entry, Grid, entries, entry_label, loss_curve, platform_stats
from fedrec.cli.report.stats import Stat
from fedrec.documents import BenchDocument, ResultsDocument
from fedrec.metrics import NDCG

LOSS_PLOT = "results_loss_per_round.png"
EPSILON_PLOT = "results_utility_vs_epsilon.png"


def mean_curve(docs: Iterable[ResultsDocument]) -> dict[int, Stat]:
    """Round -> cross-platform loss over the runs (round 0 when recorded)."""
    by_round: dict[int, list[float]] = {}
    for doc in docs:
        initial, curve = loss_curve(doc)
        pts = ([(0, initial)] if initial is not None else []) + curve
        for r, x in pts:
            if x is not None:
                by_round.setdefault(r, []).append(float(x))
    return {r: Stat(tuple(v)) for r, v in sorted(by_round.items())}


def plot_loss(grid: Grid, path: Path) -> Path | None:
    """Cross-platform validation loss per round per aggregation mode (mean over seeds, ± std band)."""
    modes = [r for r in GRID if r.kind == "federated" and r.epsilon is None and grid.runs(r)]
    if not modes:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in modes:
        curve = mean_curve(grid.runs(row).values())
        xs = list(curve)
        mean = np.array([curve[r].mean for r in xs])
        std = np.array([curve[r].std for r in xs])
        n = len(grid.runs(row))
        (line,) = ax.plot(xs, mean, "o-", label=f"{row.aggregation} (n={n})")
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("round (0 = initial adapter)")
    ax.set_ylabel("cross-platform validation loss")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_title("fedrec: cross-platform loss per round (mean ± std over seeds)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def plot_epsilon(grid: Grid, platforms: Sequence[str], path: Path) -> Path | None:
    """Test NDCG@10 at epsilon 1, 8 and without DP (federated fedavg), per platform and macro, ± std."""
    fed = [r for r in GRID if r.kind == "federated" and r.aggregation == "fedavg"]
    points = sorted(fed, key=lambda r: r.epsilon if r.epsilon is not None else math.inf)
    if not any(grid.runs(r) for r in points):
        return None
    by_row = {r.name: platform_stats(grid, Entry(r.name, entry_label(r), r), platforms) for r in points}
    labels = [f"ε={r.epsilon:g}" if r.epsilon is not None else "non-private" for r in points]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    central = next((e for e in entries() if e.row.kind == "centralized"), None)
    for i, p in enumerate([*platforms, "macro"]):
        c = "black" if p == "macro" else colors[i % len(colors)]
        xs = [j for j, r in enumerate(points) if by_row[r.name][p][NDCG].n]
        if xs:
            ys = [by_row[points[j].name][p][NDCG] for j in xs]
            ax.errorbar(
                xs,
                [s.mean for s in ys],
                yerr=[s.std for s in ys],
                fmt="o-",
                color=c,
                lw=2 if p == "macro" else 1,
                capsize=3,
                label=f"{p} (federated)",
            )
        if central is not None:
            ref = platform_stats(grid, central, platforms)[p][NDCG]
            if ref.n:
                ax.axhline(ref.mean, color=c, ls="--", lw=1, label=f"{p} centralized")
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("privacy: target epsilon per platform (user level, delta = 1e-5)")
    ax.set_ylabel("test NDCG@10")
    ax.set_title("fedrec: utility vs privacy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_png(fig, path)


def plot_scale(doc: BenchDocument, path: Path) -> Path | None:
    """Round time vs number of clients from ``bench_scale.json``."""
    pts = scale_rows(doc)
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([x for x, _ in pts], [y for _, y in pts], "o-")
    ax.set_xlabel("clients")
    ax.set_ylabel("round wall time (s)")
    machine = doc.machine
    ax.set_title(f"round time vs clients ({machine.get('cores', '?')} cores, {machine.get('cpu_model', '?')})")
    ax.grid(alpha=0.3)
    return save_png(fig, path)
