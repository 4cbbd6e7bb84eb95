"""Reading an experiments grid: the ``results.json`` of every run row and seed, its manifest, the table lines."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.cli.experiments import GRID, RESULTS, Row, load_manifest
from fedrec.cli.report.stats import Stat
from fedrec.documents import ResultsDocument, read_results
from fedrec.metrics import METRICS


@dataclass(frozen=True)
class Entry:
    """A line of the utility table: a run row of the grid (and, for the baselines, one of its models)."""

    key: str
    label: str
    row: Row
    model: str | None = None

    def test(self, doc: ResultsDocument) -> dict[str, dict[str, float]]:
        """``{platform: {metric: value}}`` of this entry's test metrics in a results document."""
        out = {}
        for p, v in doc.platforms.items():
            m = (v.get(self.model) or {}).get("test") if self.model else v.get("test")
            if m and all(k in m for k in METRICS):
                out[p] = {k: float(m[k]) for k in METRICS}
        return out


BASELINE_LABELS = {
    "mostpop": "MostPop",
    "itemknn": "ItemKNN",
    "frozen_text": "frozen text",
    "ease": "EASE (λ on valid)",
    "sasrec": "SASRec (ID only, best valid epoch)",
}


def entry_label(row: Row) -> str:
    """The table label of a (non-baseline) run row."""
    if row.kind == "local":
        return "local-only (each platform alone)"
    if row.kind == "centralized":
        return "centralized (pooled, non-private)"
    if row.epsilon is not None:
        return f"federated DP ε={row.epsilon:g} ({row.aggregation})"
    return f"federated {row.aggregation}"


def entries(grid: Sequence[Row] = GRID) -> list[Entry]:
    """The utility table's lines, in the grid's order (a baselines run gives one per model it scores)."""
    out = []
    for row in grid:
        if row.kind == "baselines":
            out += [Entry(m, BASELINE_LABELS.get(m, m), row, m) for m in row.models]
        else:
            out.append(Entry(row.name, entry_label(row), row))
    return out


@dataclass
class Grid:
    """The results documents of an experiments folder, by run row and seed, with its manifest."""

    folder: Path
    docs: dict[str, dict[int, ResultsDocument]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def platforms(self) -> list[str]:
        """Platforms in the order of the first document's configuration (then any others)."""
        seen: dict[str, None] = {}
        for by_seed in self.docs.values():
            for doc in by_seed.values():
                for p in doc.config.get("platforms") or doc.platforms:
                    seen.setdefault(p, None)
        return list(seen)

    def runs(self, row: Row) -> dict[int, ResultsDocument]:
        """Seed -> results document of a run row (empty when it has not run)."""
        return self.docs.get(row.name, {})

    def config(self) -> dict[str, Any]:
        """The configuration of a representative run (a federated one if any)."""
        ordered = sorted(GRID, key=lambda r: r.kind != "federated")
        for row in ordered:
            for doc in self.runs(row).values():
                return dict(doc.config)
        return {}


def read_grid(folder: str | Path, grid: Sequence[Row] = GRID) -> Grid:
    """Every ``<row>/seed<k>/results.json`` under ``folder`` for the rows of ``grid``.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no experiments folder {folder}")
    out = Grid(folder, manifest=load_manifest(folder))
    for row in grid:
        for path in sorted((folder / row.name).glob(f"seed*/{RESULTS}")):
            try:
                seed = int(path.parent.name.removeprefix("seed"))
                doc = read_results(path)
            except (ValueError, OSError, TypeError, AttributeError):
                out.unreadable.append(str(path))
                continue
            out.docs.setdefault(row.name, {})[seed] = doc
    return out


def platform_stats(grid: Grid, entry: Entry, platforms: Sequence[str]) -> dict[str, dict[str, Stat]]:
    """``{platform or "macro": {metric: Stat over seeds}}``; the macro average is taken per seed first."""
    values: dict[str, dict[str, list[float]]] = {p: {m: [] for m in METRICS} for p in [*platforms, "macro"]}
    for _, doc in sorted(grid.runs(entry.row).items()):
        test = entry.test(doc)
        for p, m in test.items():
            if p in values:
                for k in METRICS:
                    values[p][k].append(m[k])
        if platforms and all(p in test for p in platforms):
            for k in METRICS:
                values["macro"][k].append(float(np.mean([test[p][k] for p in platforms])))
    return {p: {k: Stat(tuple(v)) for k, v in ms.items()} for p, ms in values.items()}


def xloss_stat(grid: Grid, row: Row) -> Stat:
    """The reported model's cross-platform validation loss over seeds."""
    xs = [doc.cross_platform_loss for doc in grid.runs(row).values()]
    return Stat(tuple(float(x) for x in xs if x is not None))


def loss_curve(doc: ResultsDocument) -> tuple[float | None, list[tuple[int, float | None]]]:
    """``(round-0 loss or None, [(round, cross-platform loss)])`` of a federated results document."""
    if doc.federation is None:
        return None, []
    initial = (doc.federation.initial or {}).get("cross_platform_loss")
    return initial, [(int(h["round"]), h.get("cross_platform_loss")) for h in doc.federation.history]


def invocations(grid: Grid) -> list[str]:
    """The distinct ``fedrec experiments`` command lines recorded in the manifest."""
    inv = grid.manifest.get("invocations", [])
    return list(dict.fromkeys(shlex.join(i["argv"]) for i in inv if i.get("argv")))


def commits(grid: Grid) -> list[str]:
    """The distinct source commits recorded in the manifest."""
    return list(dict.fromkeys(str(i["commit"]) for i in grid.manifest.get("invocations", []) if i.get("commit")))


def is_smoke(grid: Grid) -> bool:
    """Whether any run used the tiny random model."""
    return any(
        doc.config.get("model", {}).get("backbone") == "tiny"
        for by_seed in grid.docs.values()
        for doc in by_seed.values()
    )
