"""Privacy/utility sweep report: epsilon vs test NDCG@10 per platform, as Markdown and a PNG plot.

A sweep directory holds one ``results.json`` per ``fedrec simulate`` job (a Hydra
multirun, e.g. ``simulations/privacy_sweep.sh``). The non-private reference is a run
in the sweep (or given) with ``privacy.enabled=false``; ItemKNN comes from a results
document that has it (a simulate run's ``comparison.baselines`` or ``fedrec baselines``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.cli.report.common import pyplot, save_png, table
from fedrec.documents import read_results
from fedrec.io import atomic_write
from fedrec.metrics import HR, METRICS, MRR, NDCG


@dataclass
class SweepRun:
    """One job of a sweep: its privacy setting, spent epsilon and test metrics per platform."""

    path: Path
    private: bool
    target: float | None
    noise: dict[str, float] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)
    test: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``eps=<target>`` or ``non-private``."""
        if not self.private:
            return "non-private"
        return "eps=inf (clip only)" if self.target is not None and math.isinf(self.target) else f"eps={self.target:g}"

    def macro(self, metric: str = NDCG) -> float:
        """Mean of ``metric`` over platforms."""
        return float(np.mean([m[metric] for m in self.test.values()])) if self.test else float("nan")


def read_run(path: str | Path) -> SweepRun:
    """A :class:`SweepRun` from a ``fedrec simulate`` ``results.json``.

    Raises
    ------
    ValueError
        If the document is not a simulate result with test metrics.
    """
    path = Path(path)
    doc = read_results(path)
    if doc.command != "simulate":
        raise ValueError(f"{path} is not a fedrec simulate result (command={doc.command!r})")
    priv_cfg = doc.config["privacy"]
    priv = doc.privacy or {}
    test = {p: {k: float(v["test"][k]) for k in METRICS} for p, v in doc.platforms.items() if "test" in v}
    if not test:
        raise ValueError(f"{path} has no test metrics")
    target = priv_cfg.get("target_epsilon")
    return SweepRun(
        path=path,
        private=bool(priv_cfg["enabled"]),
        target=None if target is None else float(target),
        noise={p: float(v) for p, v in (priv.get("noise_multiplier") or {}).items() if v is not None},
        epsilon={p: float(v) for p, v in (priv.get("epsilon") or {}).items() if v is not None},
        test=test,
    )


def itemknn_of(path: str | Path) -> dict[str, float]:
    """ItemKNN test NDCG@10 per platform from a results document that has it (simulate or baselines)."""
    doc = read_results(path)
    base = (doc.comparison or {}).get("baselines")
    if base:
        return {p: float(m["itemknn"][NDCG]) for p, m in base.items() if "itemknn" in m}
    if doc.command == "baselines":
        return {p: float(m["itemknn"]["test"][NDCG]) for p, m in doc.platforms.items() if "itemknn" in m}
    return {}


def collect(sweep_dir: str | Path) -> list[SweepRun]:
    """Every simulate job under ``sweep_dir`` (``results.json`` files), private ones by target epsilon."""
    runs = []
    for path in sorted(Path(sweep_dir).rglob("results.json")):
        try:
            runs.append(read_run(path))
        except (ValueError, KeyError):
            continue
    if not runs:
        raise ValueError(f"no fedrec simulate results.json under {sweep_dir}")
    return sorted(runs, key=lambda r: (not r.private, r.target if r.target is not None else math.inf))


def markdown(runs: Sequence[SweepRun], reference: SweepRun | None, itemknn: dict[str, float]) -> str:
    """The sweep as Markdown tables: NDCG@10 per platform with spent epsilon, then HR@10 and MRR."""
    platforms = sorted({p for r in runs for p in r.test})
    ref_macro = reference.macro() if reference else float("nan")
    head = ["setting", *(f"{p} NDCG@10 (eps spent)" for p in platforms), "macro NDCG@10", "vs non-private"]
    rows = []
    for r in [*runs, *([reference] if reference and reference not in runs else [])]:
        cells = [r.label]
        for p in platforms:
            eps = r.epsilon.get(p)
            spent = "" if not r.private else (" (inf)" if eps is None or math.isinf(eps) else f" ({eps:.2f})")
            cells.append(f"{r.test[p][NDCG]:.4f}{spent}" if p in r.test else "")
        ratio = r.macro() / ref_macro if reference and ref_macro > 0 else float("nan")
        cells += [f"{r.macro():.4f}", f"{ratio:.0%}" if not math.isnan(ratio) else ""]
        rows.append(cells)
    if itemknn:
        cells = ["ItemKNN", *(f"{itemknn[p]:.4f}" if p in itemknn else "" for p in platforms)]
        cells += [f"{np.mean([itemknn[p] for p in platforms if p in itemknn]):.4f}", ""]
        rows.append(cells)
    out = [table(head, rows), ""]
    for metric in (HR, MRR):
        lines = [[r.label, *(f"{r.test[p][metric]:.4f}" for p in platforms)] for r in runs]
        out += [f"{metric}:", "", table(["setting", *platforms], lines), ""]
    return "\n".join(out)


def plot(runs: Sequence[SweepRun], reference: SweepRun | None, itemknn: dict[str, float], path: str | Path) -> Path:
    """PNG: target epsilon (log axis; inf at the right end) vs test NDCG@10 per platform, with reference lines."""
    import matplotlib.ticker

    plt = pyplot()

    private = [r for r in runs if r.private and r.target is not None]
    finite = [r.target for r in private if r.target is not None and not math.isinf(r.target)]
    inf_x = (max(finite) * 4) if finite else 1.0
    platforms = sorted({p for r in runs for p in r.test})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(platforms):
        c = colors[i % len(colors)]
        pts = sorted(
            (inf_x if math.isinf(r.target) else r.target, r.test[p][NDCG])
            for r in private
            if p in r.test and r.target is not None
        )
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=c, label=f"{p} (DP joint model)")
        if reference and p in reference.test:
            ax.axhline(reference.test[p][NDCG], color=c, ls="--", lw=1, label=f"{p} non-private joint")
        if p in itemknn:
            ax.axhline(itemknn[p], color=c, ls=":", lw=1, label=f"{p} ItemKNN")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ticks = sorted(set(finite)) + (
        [inf_x] if any(r.target is not None and math.isinf(r.target) for r in private) else []
    )
    ax.set_xticks(ticks)
    ax.set_xticklabels([("inf" if t == inf_x and t not in finite else f"{t:g}") for t in ticks])
    ax.set_xlabel("target epsilon per platform (user level, delta = 1e-5)")
    ax.set_ylabel("test NDCG@10")
    ax.set_title("fedrec: privacy vs utility (federated, full ranking)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return save_png(fig, path)


def report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    reference: str | Path | None = None,
    baselines: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``privacy_sweep.md`` and ``privacy_sweep.png`` for a sweep directory.

    Parameters
    ----------
    sweep_dir : path-like
        Folder with the jobs' ``results.json`` files.
    out_dir : path-like, optional
        Default ``sweep_dir``.
    reference : path-like, optional
        The non-private ``results.json`` (default: a non-private run found in the sweep).
    baselines : path-like, optional
        A results document with ItemKNN (default: the reference's ``comparison.baselines``).

    Returns
    -------
    dict
        ``{"markdown": path, "plot": path, "runs": n}``.
    """
    runs = collect(sweep_dir)
    ref = read_run(reference) if reference else next((r for r in runs if not r.private), None)
    private = [r for r in runs if r.private]
    knn = itemknn_of(baselines) if baselines else (itemknn_of(ref.path) if ref else {})
    out = Path(out_dir) if out_dir else Path(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = "# Privacy/utility sweep\n\n" + markdown(private, ref, knn)
    md = atomic_write(out / "privacy_sweep.md", lambda fh: fh.write(text.encode()))
    png = plot(private, ref, knn, out / "privacy_sweep.png")
    return {"markdown": md, "plot": png, "runs": len(private), "text": text}
