"""``results.json`` and the terminal tables every command ends with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fedrec.documents import ResultsDocument
from fedrec.io import write_json
from fedrec.metrics import EXTRA_METRICS, METRICS

#: the metric columns of the tables (:data:`fedrec.metrics.METRICS`)
METRIC_KEYS = METRICS
#: reported when present (:data:`fedrec.metrics.EXTRA_METRICS`)
EXTRA_KEYS = EXTRA_METRICS


def cross_platform_loss(losses: Mapping[str, float], users: Mapping[str, int], weights: str = "uniform") -> float:
    """Weighted sum over platforms of each platform's validation softmax loss.

    Parameters
    ----------
    losses : mapping
        Platform name to its mean validation loss.
    users : mapping
        Platform name to its number of evaluated users.
    weights : {"uniform", "users"}, default "uniform"
        Equal weights, or weights proportional to the users.
    """
    if weights == "uniform":
        w = {p: 1.0 / len(losses) for p in losses}
    elif weights == "users":
        total = sum(users[p] for p in losses)
        w = {p: users[p] / total for p in losses}
    else:
        raise ValueError(f"eval.loss_weights must be 'uniform' or 'users', got {weights!r}")
    return float(sum(w[p] * losses[p] for p in losses))


def results_document(
    command: str, cfg: DictConfig, platforms: dict[str, Any], seconds: float, **fields: Any
) -> ResultsDocument:
    """The ``results.json`` document: command, resolved config, per-platform results, seconds.

    ``fields`` are the other :class:`~fedrec.documents.ResultsDocument` fields
    (``cross_platform_loss``, ``federation``, ``audit``, ...).
    """
    config = {str(k): v for k, v in OmegaConf.to_container(cfg, resolve=True).items()}  # type: ignore[union-attr]
    return ResultsDocument(command, config, platforms, round(seconds, 2), **fields)


def write_results(folder: str | Path, name: str, doc: ResultsDocument) -> Path:
    """Atomically write ``doc`` to ``folder/name``."""
    return write_json(Path(folder) / name, doc.to_json())


def print_table(
    title: str, rows: Sequence[tuple[str, str, Mapping[str, float]]], console: Console | None = None
) -> None:
    """Print ``(platform, model, test metrics)`` rows as a table (coverage@10 when the rows have it)."""
    extra = [k for k in EXTRA_KEYS if any(k in m for _, _, m in rows)]
    table = Table(title=title)
    for col in ("platform", "model", *METRIC_KEYS, *extra, "users"):
        table.add_column(col, justify="right" if col not in ("platform", "model") else "left")
    for platform, model, m in rows:
        cells = [f"{m[k]:.4f}" if k in m else "" for k in (*METRIC_KEYS, *extra)]
        table.add_row(platform, model, *cells, str(m.get("users", "")))
    (console or Console()).print(table)
