"""``fedrec bench train``: local training throughput and peak memory, non-private vs DP.

Each row is one model configuration (LoRA placement, precision, user-text length) on one
platform. Within a row both trainers run on the *same* task: :func:`fedrec.train.fit`
with ``batch`` examples per step and :func:`fedrec.privacy.train_private` with ``batch``
*expected* users per step (one example each). They alternate in blocks of steps, in the
order non-DP, DP, DP, non-DP, ... so that load from other processes hits both alike, and
each block's rate counts the training loop only (the same quantity both trainers report
as ``seconds``). A row reports, per mode, the median examples/s over its blocks, and the
DP / non-DP ratio as the median over adjacent block pairs.

Peak memory: before every block the process's peak RSS is reset (Linux
``/proc/self/clear_refs``) and read after it, so each mode's peak is its own. By default
every row runs in a fresh Python process (``isolate``), so a row's memory does not carry
over from the rows before it. With ``isolate=False`` (``--interleave``; the default of
``--smoke``) every row's task lives in this process and the rows are interleaved block by
block, so that the ratios *between* rows are measured under the same load too; the peak
RSS then covers every row's task, and each mode's own memory is its rise over the
block's start (measured after handing the allocator's freed memory back to the OS).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedrec.cli.bench.blocks import Budget, default_budget, measure_runners
from fedrec.cli.bench.common import (
    PeakRSS,
    base_overrides,
    compose,
    document,
    machine_info,
    median,
    print_table,
    ratio,
    write_result,
)

NAME = "train"
GRIDS = ("ofat", "full")
_DATA: dict[tuple[str, str, str], Any] = {}


@dataclass(frozen=True)
class Row:
    """One model configuration of the train benchmark.

    Attributes
    ----------
    lora_layers : int
        LoRA on the top N layers with the layers below cached (0 = LoRA on every layer,
        nothing but the embeddings cached).
    bf16 : bool
        bf16 autocast for the backbone's matmuls.
    user_tokens : int
        User text length (``model.user_max_tokens``).
    """

    lora_layers: int
    bf16: bool
    user_tokens: int

    @property
    def name(self) -> str:
        """Human-readable label, e.g. ``top-2 cached · bf16 · 32 tok``."""
        place = "all layers" if self.lora_layers == 0 else f"top-{self.lora_layers} cached"
        return f"{place} · {'bf16' if self.bf16 else 'fp32'} · {self.user_tokens} tok"

    def overrides(self) -> list[str]:
        """The Hydra overrides that select this row."""
        return [
            f"model.lora_layers={self.lora_layers}",
            f"model.bf16={str(self.bf16).lower()}",
            f"model.user_max_tokens={self.user_tokens}",
        ]


def grid_rows(grid: str = "ofat", top: int = 2) -> list[Row]:
    """The rows of a grid.

    Parameters
    ----------
    grid : {"ofat", "full"}, default "ofat"
        ``ofat``: the fastest configuration (top-``top`` cached, bf16, 32 user tokens)
        and one factor changed at a time (fp32; 64 tokens; LoRA on all layers), 4 rows.
        ``full``: every combination of the three factors, 8 rows.
    top : int, default 2
        N of the top-N placement.

    Raises
    ------
    ValueError
        On an unknown grid or ``top < 1``.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1 (the cached placement), got {top}")
    if grid == "ofat":
        return [Row(top, True, 32), Row(top, False, 32), Row(top, True, 64), Row(0, True, 32)]
    if grid == "full":
        return [Row(n, b, t) for n in (top, 0) for b in (True, False) for t in (32, 64)]
    raise ValueError(f"grid must be one of {list(GRIDS)}, got {grid!r}")


class RowRunner:
    """One row's task, built in this process, and a timed block of either trainer on it.

    Parameters
    ----------
    overrides : list of str
        Hydra overrides of the row (platform, model, threads, ...); one platform.
    batch : int
        Examples per non-DP step and expected users per DP step.
    noise : float
        DP noise multiplier (does not change the cost; recorded).
    rss : PeakRSS
        The process's peak-RSS meter (reset before every block).
    """

    def __init__(self, overrides: list[str], batch: int, noise: float, rss: PeakRSS) -> None:
        cfg = compose(overrides)  # first: a bad override fails before the heavy imports
        import torch

        from fedrec.build import build_encoder, build_task, load_datasets
        from fedrec.privacy import count_users

        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if len(cfg.platforms) != 1:
            raise ValueError(f"the train benchmark runs one platform, got {list(cfg.platforms)}")
        torch.set_num_threads(int(cfg.train.threads))
        torch.manual_seed(cfg.seed)
        self.cfg, self.batch, self.noise, self.rss = cfg, batch, noise, rss
        start = time.perf_counter()
        self.platform = next(iter(cfg.platforms))
        key = (str(cfg.data.root), self.platform, str(cfg.platforms[self.platform].loader))
        if key not in _DATA:  # rows measured in one process share the loaded platform
            _DATA[key] = load_datasets(cfg)[self.platform]
        encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
        self.task = build_task(cfg, _DATA[key], encoder, tokenizer)
        self.build_seconds = time.perf_counter() - start
        self.users = count_users(self.task)
        t = cfg.train
        self.options = {
            "lr": float(t.lr),
            "head_lr": float(t.head_lr),
            "num_negatives": int(t.num_negatives),
            "index_refresh_steps": int(t.index_refresh_steps),
        }

    def run(self, mode: str, steps: int, seed: int) -> dict[str, float]:
        """Train ``steps`` steps with ``mode`` (``"non_dp"`` or ``"dp"``): examples, seconds, peak RSS."""
        from fedrec.privacy import plan_private, train_private
        from fedrec.train import fit

        self.rss.reset()
        before = self.rss.current_mib()
        if mode == "non_dp":
            epochs = math.ceil(steps * self.batch / len(self.task.examples))  # enough passes for `steps` batches
            r = fit([self.task], epochs, self.batch, max_steps=steps, seed=seed, progress=False, **self.options)  # type: ignore[arg-type]
            n = sum(r.num_examples.values())
        else:
            plan = plan_private(
                self.users,
                self.batch,
                steps_per_round=steps,
                noise_multiplier=self.noise,
                max_grad_norm=float(self.cfg.privacy.max_grad_norm),
            )
            r = train_private(self.task, plan, seed=seed, progress=False, **self.options)  # type: ignore[arg-type]
            n = r.sampled_examples
        return {"examples": float(n), "seconds": r.seconds, "peak_mib": self.rss.peak_mib(), "before_mib": before}


def measure_rows(rows: list[list[str]], batch: int, noise: float, budget: Budget) -> list[dict[str, Any]]:
    """Build every row's task in this process and measure both trainers on each, rows interleaved.

    :class:`RowRunner` for every row, then :func:`measure_runners`.

    Each round of measurement visits every row (starting one row later each round, so
    drift in the machine's load spreads over the rows) and runs one non-DP and one DP
    block on it, in alternating order; it stops when every row has ``budget.min_pairs``
    pairs and ``budget.seconds`` per mode, or after ``budget.max_pairs`` rounds.

    Parameters
    ----------
    rows : list of list of str
        Each row's Hydra overrides (see :class:`RowRunner`).
    batch : int
        Examples per non-DP step and expected users per DP step.
    noise : float
        DP noise multiplier.
    budget : Budget
        How long to measure.

    Returns
    -------
    list of dict
        Per row: ``platform``, ``users``, ``build_seconds``, ``steps_per_block``,
        ``peak_resettable``, the ``non_dp`` and ``dp`` summaries (median and total
        examples/s, examples, seconds, blocks, block rates, peak RSS and its rise over the
        block's start in MiB), ``dp_ratio`` (median of adjacent block pairs) and
        ``dp_ratio_total``.
    """
    rss = PeakRSS()
    return measure_runners([RowRunner(r, batch, noise, rss) for r in rows], batch, budget, rss)


def _python_path() -> str:
    """A ``PYTHONPATH`` that makes a child process import this very ``fedrec``."""
    import fedrec

    root = str(Path(fedrec.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + old if old else "")


def measure_row_isolated(overrides: list[str], batch: int, noise: float, budget: Budget) -> dict[str, Any]:
    """One row measured by :func:`measure_rows` in a fresh Python process (clean peak RSS).

    Raises
    ------
    RuntimeError
        If the child process fails (its stderr's tail is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"overrides": overrides, "batch": batch, "noise": noise, "budget": asdict(budget)}))
        proc = subprocess.run(
            [sys.executable, "-m", "fedrec.cli.bench.train", str(spec), str(result)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": _python_path()},
        )
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"benchmark row {overrides} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        out: dict[str, Any] = json.loads(result.read_text())
        return out


def run_train(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str | Path = "outputs/bench",
    platform: str = "video",
    grid: str = "ofat",
    top: int | None = None,
    batch: int | None = None,
    noise: float = 1.0,
    budget: Budget | None = None,
    isolate: bool | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the train benchmark, print its table and write ``bench_train.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides for every row, applied before the row's own (so a row's
        LoRA placement, precision and user-text length always win).
    smoke : bool, default False
        Tiny random BERT, ``train=smoke``, 1 thread, 1-step blocks, rows interleaved in-process.
    out_dir : path-like, default "outputs/bench"
        Where the JSON goes.
    platform : str, default "video"
        The platform (real data from ``data.root``).
    grid : {"ofat", "full"}, default "ofat"
        See :func:`grid_rows`.
    top : int, optional
        N of the top-N cached placement (default: ``model.lora_layers``, 1 for the tiny
        model if that is 0, else 2).
    batch : int, optional
        Default ``train.batch_size`` of the composed config.
    noise : float, default 1.0
        DP noise multiplier.
    budget : Budget, optional
        Default :func:`default_budget`.
    isolate : bool, optional
        True: one process per row, rows one after the other (clean peak RSS per row).
        False: every row's task in this process, the rows interleaved block by block
        (:func:`measure_rows`): ratios between rows are then robust to drifting load, but
        the peak RSS covers every row's task (the rise over a block's start is still the
        mode's own). Default True, False with ``smoke``.
    threads : int, optional
        ``train.threads`` (default: the config's; 1 with ``smoke``).

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_train.json``.
    """
    start = time.perf_counter()
    common = base_overrides(smoke, threads, [f"platform={platform}", "train.progress=false", *(overrides or [])])
    cfg = compose(common)
    import torch

    torch.set_num_threads(int(cfg.train.threads))  # the machine line reports the benchmark's threads
    if top is None:
        top = int(cfg.model.lora_layers) or (1 if cfg.model.backbone == "tiny" else 2)
    batch = int(batch or cfg.train.batch_size)
    budget = budget or default_budget(smoke)
    isolate = (not smoke) if isolate is None else isolate
    rows_spec = grid_rows(grid, top)
    machine = machine_info()
    overrides_per_row = [[*common, *spec.overrides()] for spec in rows_spec]
    if isolate:
        results = [measure_row_isolated(o, batch, noise, budget) for o in overrides_per_row]
    else:
        results = measure_rows(overrides_per_row, batch, noise, budget)
    rows: list[dict[str, Any]] = [
        {"row": spec.name, **asdict(spec), **res} for spec, res in zip(rows_spec, results, strict=True)
    ]
    base = rows[0]["non_dp"]["examples_per_s"]
    for r in rows:
        r["non_dp_vs_first"] = ratio(r["non_dp"]["examples_per_s"], base)
    fastest = max(rows, key=lambda r: r["dp"]["examples_per_s"])
    m = cfg.model
    settings = {
        "platform": platform,
        "backbone": str(m.backbone),
        "batch": batch,
        "num_negatives": int(cfg.train.num_negatives),
        "noise_multiplier": noise,
        "max_grad_norm": float(cfg.privacy.max_grad_norm),
        "hybrid": bool(m.hybrid),
        "item_tower": str(m.item_tower),
        "lora_r": int(m.lora_r),
        "threads": int(cfg.train.threads),
        "grid": grid,
        "isolated": isolate,
        "budget": asdict(budget),
        "overrides": common,
    }
    summary = {
        "dp_ratio_median": median(r["dp_ratio"] for r in rows),
        "dp_ratio_min": min(r["dp_ratio"] for r in rows),
        "dp_ratio_max": max(r["dp_ratio"] for r in rows),
        "fastest_dp_row": fastest["row"],
        "fastest_dp_examples_per_s": fastest["dp"]["examples_per_s"],
    }
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    path = write_result(out_dir, NAME, doc)
    print_table(
        f"fedrec bench train: {platform}, {m.backbone}, batch {batch}, {settings['num_negatives']} negatives",
        [
            "row",
            "non-DP ex/s",
            "DP ex/s",
            "DP/non-DP",
            "vs row 1",
            "non-DP peak MiB",
            "DP peak MiB",
            "DP +MiB",
            "blocks",
        ],
        [
            [
                r["row"],
                r["non_dp"]["examples_per_s"],
                r["dp"]["examples_per_s"],
                f"{r['dp_ratio']:.3f}",
                f"{r['non_dp_vs_first']:.2f}",
                r["non_dp"]["peak_rss_mib"],
                r["dp"]["peak_rss_mib"],
                r["dp"]["rss_increase_mib"],
                r["dp"]["blocks"],
            ]
            for r in rows
        ],
        machine,
        [
            "examples/s: median over blocks of the training loop; DP/non-DP: median over adjacent block pairs "
            "(same task, same run); peak MiB: the process's peak RSS during that mode's blocks; DP +MiB: its rise "
            "over the block's start; "
            + ("one process per row." if isolate else "all rows in one process, interleaved block by block."),
            f"fastest DP row: {fastest['row']} at {fastest['dp']['examples_per_s']:.1f} examples/s; results: {path}",
        ],
    )
    return doc.to_json()


def _worker(argv: list[str]) -> int:
    """Child-process entry: ``python -m fedrec.cli.bench.train SPEC.json RESULT.json``."""
    spec = json.loads(Path(argv[0]).read_text())
    res = measure_rows([spec["overrides"]], int(spec["batch"]), float(spec["noise"]), Budget(**spec["budget"]))[0]
    from fedrec.io import write_json

    write_json(argv[1], res)
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
