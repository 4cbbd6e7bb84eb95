"""What every report shares: Markdown tables and their cells, PNG figures written atomically."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedrec.io import atomic_write

#: a cell of a run that has not run yet
NOT_RUN = "not run"
#: a cell without a value
DASH = "–"


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with header ``head`` and one line per row of cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def number(x: Any, digits: int = 1) -> str:
    """A table cell: numbers with ``digits`` decimals (integers with separators), missing as a dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def size_text(n: Any) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    if not isinstance(n, int | float):
        return DASH
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n):,} B"


def machine_text(info: dict[str, Any]) -> str:
    """Cores and CPU model (and memory, torch) of a ``machine_info`` record, without the time-varying load."""
    if not info:
        return "machine not recorded"
    mem = f", {info['memory_gib']} GiB" if info.get("memory_gib") else ""
    usable = info.get("usable_cores")
    cores = f"{info.get('cores', '?')} cores" + (
        f" ({usable} usable)" if usable is not None and usable != info.get("cores") else ""
    )
    return f"{cores}, {info.get('cpu_model') or 'unknown CPU'}{mem}, torch {info.get('torch', '?')}"


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
