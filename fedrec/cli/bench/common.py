"""What every benchmark shares: the machine, robust statistics, peak memory, config, output.

Absolute numbers depend on the machine and on what else runs on it, so every table is
printed with a machine line (cores, CPU model, torch and its threads, load average) and
every JSON document carries the same information under ``"machine"``. Figures are medians
over repeats; ratios are taken between measurements made in the same run.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import math
import os
import platform
import resource
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fedrec.documents import BenchDocument
from fedrec.io import write_json

MIB = 1024**2
#: Hydra overrides every ``--smoke`` run adds: the tiny random BERT, seconds-long training.
SMOKE_OVERRIDES = ("model=tiny", "train=smoke", "train.threads=1")


# -- the machine ------------------------------------------------------------------------------
def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and feature flags from ``/proc/cpuinfo`` (``platform`` as a fallback)."""
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on.

    Returns
    -------
    dict
        ``cores`` (logical CPUs), ``usable_cores`` (this process's CPU affinity),
        ``cpu_model`` and ``bf16`` (AVX512-BF16 or AMX flag) from ``/proc/cpuinfo``,
        ``memory_gib``, ``torch``, ``torch_threads``, ``python``, ``load_average``
        (1, 5, 15 minutes: others' work on a shared machine shows here) and ``time``.
    """
    import torch

    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = []
    return {
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "cpu_model": model,
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "memory_gib": _mem_total_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": load,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line describing :func:`machine_info`'s machine, printed beside every table."""
    load = "/".join(f"{x:.1f}" for x in info.get("load_average", []))
    mem = f", {info['memory_gib']} GiB" if info.get("memory_gib") else ""
    return (
        f"machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu_model']}"
        f"{' (bf16)' if info.get('bf16') else ''}{mem}; torch {info['torch']}, {info['torch_threads']} threads; "
        f"load average {load or 'n/a'} (1/5/15 min)"
    )


# -- statistics -------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    """Median of ``values``; NaN when there are none."""
    xs = [float(v) for v in values]
    return float(statistics.median(xs)) if xs else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; NaN when empty."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else math.nan


def ratio(num: float, den: float) -> float:
    """``num / den``, NaN when the denominator is zero or not finite."""
    return num / den if den and math.isfinite(den) else math.nan


# -- memory -----------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakRSS:
    """Peak resident memory of this process, resettable between measurements on Linux.

    Linux keeps the peak RSS (``VmHWM``); writing ``5`` to ``/proc/self/clear_refs``
    resets it to the current RSS, so the peak of one phase can be read without starting a
    process for it. Where that is not possible the peak is ``getrusage``'s ``ru_maxrss``
    since the process started, and :attr:`resettable` is False.
    """

    def __init__(self) -> None:
        self.resettable = self.reset()

    @staticmethod
    def trim() -> None:
        """Hand the memory glibc's allocator keeps after frees back to the OS (``malloc_trim``), if glibc."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass

    @classmethod
    def reset(cls) -> bool:
        """Trim the allocator, then reset the peak to the current RSS; False if the kernel does not allow it.

        Without the trim, memory freed by an earlier phase but kept by the allocator would
        count as the next phase's starting point, hiding that phase's own rise.
        """
        cls.trim()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def peak_mib() -> float:
        """Peak RSS in MiB (since the last reset, if resettable)."""
        kib = _status_kib("VmHWM")
        if kib is None:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            if sys.platform == "darwin":  # pragma: no cover - bytes on macOS
                kib //= 1024
        return kib / 1024

    @staticmethod
    def current_mib() -> float:
        """Current RSS in MiB (psutil if installed, else ``/proc/self/status``)."""
        try:
            import psutil

            return float(psutil.Process().memory_info().rss) / MIB
        except ImportError:  # pragma: no cover - psutil is optional
            kib = _status_kib("VmRSS")
            return kib / 1024 if kib is not None else math.nan


# -- configuration ----------------------------------------------------------------------------
def compose(overrides: Sequence[str]) -> DictConfig:
    """Fedrec's configuration (``conf/``) with Hydra ``overrides``, validated, ``command=bench``.

    :func:`fedrec.config.compose_config`; the benchmarks measure the two-tower model unless an
    override picks another (``model=...``).
    """
    from fedrec.config import compose_config

    picked = any(o.split("=", 1)[0].lstrip("+~") == "model" for o in overrides)
    return compose_config(list(overrides) if picked else ["model=minilm_lora", *overrides], command="bench")


def base_overrides(smoke: bool, threads: int | None, overrides: Sequence[str]) -> list[str]:
    """``SMOKE_OVERRIDES`` when ``smoke``, then ``train.threads``, then the user's overrides (last wins)."""
    out = list(SMOKE_OVERRIDES) if smoke else []
    if threads:
        out.append(f"train.threads={int(threads)}")
    return out + list(overrides)


# -- output -----------------------------------------------------------------------------------
def document(
    name: str,
    machine: dict[str, Any],
    smoke: bool,
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    seconds: float,
) -> BenchDocument:
    """The document every benchmark writes (``bench_<name>.json``)."""
    return BenchDocument(name, smoke, machine, settings, rows, summary, round(seconds, 2), list(sys.argv))


def write_result(out_dir: str | Path, name: str, doc: BenchDocument) -> Path:
    """Atomically write ``doc`` to ``<out_dir>/bench_<name>.json``; returns the path."""
    return write_json(Path(out_dir) / f"bench_{name}.json", _finite(doc.to_json()))


def _finite(obj: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: numbers with ``digits`` decimals, NaN/None as ``-``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    machine: dict[str, Any],
    notes: Sequence[str] = (),
    console: Console | None = None,
) -> None:
    """Print a rich table with the machine line and ``notes`` under it.

    Parameters
    ----------
    title : str
        Table title.
    columns : sequence of str
        Column headers; the first is left-aligned, the others right-aligned.
    rows : sequence of sequences
        Cells (already formatted, or formatted with :func:`fmt`).
    machine : dict
        From :func:`machine_info` (printed as :func:`machine_line`).
    notes : sequence of str, default ()
        Lines printed under the machine line (settings, how the figures were measured).
    console : rich.console.Console, optional
        Where to print (default: a new console on stdout).
    """
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(c if isinstance(c, str) else fmt(c) for c in row))
    con = console or Console(width=None if sys.stdout.isatty() else 160)
    con.print(table)
    con.print(machine_line(machine), soft_wrap=True)
    for line in notes:
        con.print(line, soft_wrap=True, markup=False)
