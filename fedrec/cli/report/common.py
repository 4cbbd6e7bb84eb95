"""What every report shares: Markdown tables and PNG figures written atomically."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedrec.io import atomic_write


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with header ``head`` and one line per row of cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically, 120 dpi, tight layout) and close it."""
    fig.tight_layout()
    out = atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120))
    pyplot().close(fig)
    return out
