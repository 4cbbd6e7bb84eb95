"""``fedrec experiments``: the utility grid of PROTOCOL.md, one subprocess per run, resumable.

The grid (:data:`GRID`): the baselines (MostPop, ItemKNN, frozen text, EASE: one
``fedrec baselines`` run, deterministic; SASRec: one run per seed), local-only training per platform, centralized
(pooled) training, the federation with each aggregation mode and the federation under
user-level DP at epsilon 1 and 8. Every trained row runs once per seed. Each run is a
``fedrec`` process of its own writing ``<out>/<row>/seed<k>/results.json`` (and its log
``run.log`` beside it), so one failure is recorded and the others go on; a run whose
``results.json`` exists is skipped, so re-running the command continues an interrupted
grid (an interrupted federated run also resumes from its checkpoint:
``federation.resume=true``). ``<out>/experiments.json`` records every run's command,
exit status and wall time with the machine it ran on. ``fedrec report results <out>``
renders the grid (:mod:`fedrec.cli.report.results`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrec.cli.bench.common import machine_info
from fedrec.io import write_json

MANIFEST = "experiments.json"
RESULTS = "results.json"
LOG = "run.log"
DEFAULT_SEEDS = (0, 1, 2)
#: what every federated run adds: no side comparisons (the grid has its own rows), the round-0 loss, resumable
FEDERATED = (
    "federation.compare_local=false",
    "federation.compare_baselines=[]",
    "federation.export_joint_model=false",
    "federation.evaluate_initial=true",
    "federation.resume=true",
)
#: Settings of the grid's federated runs, before the user's overrides (which may change them):
#: every validation user each round (the best round, rounds-to-quality).
GRID_DEFAULTS = ("federation.eval_max_users=-1",)
#: The grid measures the two-tower model (its local and centralized rows are ``fedrec train``, which
#: runs it only); the sequence model's comparison is simulations/seqrec_compare.py (docs/RESULTS.md).
GRID_MODEL = ("model=minilm_lora",)


@dataclass(frozen=True)
class Row:
    """One run row of the grid.

    Attributes
    ----------
    name : str
        Folder name under the output directory (``<out>/<name>/seed<k>``).
    command : str
        The ``fedrec`` command.
    overrides : tuple of str
        Hydra overrides that define the row (applied after the user's, so they win).
    seeded : bool
        Run once per seed (False: once, with the first seed; the row is deterministic).
    kind : str
        ``baselines``, ``local``, ``centralized`` or ``federated``.
    aggregation : str, optional
        Federated rows: the aggregation mode.
    epsilon : float, optional
        Federated DP rows: the target epsilon per platform.
    models : tuple of str
        Baseline rows: the baselines the run scores (its ``baselines=[...]`` override).
    """

    name: str
    command: str
    overrides: tuple[str, ...]
    seeded: bool
    kind: str
    aggregation: str | None = None
    epsilon: float | None = None
    models: tuple[str, ...] = ()


def _baselines(name: str, models: tuple[str, ...], seeded: bool) -> Row:
    """A ``fedrec baselines`` row scoring ``models``."""
    return Row(name, "baselines", (f"baselines=[{','.join(models)}]",), seeded, "baselines", models=models)


def _federated(mode: str) -> Row:
    """The non-private federated row of an aggregation mode."""
    return Row(f"fed-{mode}", "simulate", (*FEDERATED, f"federation.aggregation={mode}"), True, "federated", mode)


def _private(eps: float) -> Row:
    """The federated row under user-level DP at target epsilon ``eps`` (fedavg)."""
    overrides = (*FEDERATED, "federation.aggregation=fedavg", "privacy=target_eps", f"privacy.target_epsilon={eps:g}")
    return Row(f"fed-dp-eps{eps:g}", "simulate", overrides, True, "federated", "fedavg", eps)


#: The rows of the utility table, in order.
GRID: tuple[Row, ...] = (
    _baselines("baselines", ("mostpop", "itemknn", "frozen_text", "ease"), False),
    _baselines("sasrec", ("sasrec",), True),
    Row("local", "train", ("mode=local",), True, "local"),
    Row("centralized", "train", ("mode=centralized",), True, "centralized"),
    _federated("fedavg"),
    _federated("ffa"),
    _federated("svd"),
    _private(1.0),
    _private(8.0),
)
ROWS = {r.name: r for r in GRID}


@dataclass(frozen=True)
class Job:
    """One run of the grid: a row at a seed, its folder and its command line."""

    row: Row
    seed: int
    run_dir: Path
    argv: tuple[str, ...]

    @property
    def key(self) -> str:
        """``<row>/seed<k>``: the run's key in the manifest and its folder under the output directory."""
        return f"{self.row.name}/seed{self.seed}"

    @property
    def results(self) -> Path:
        """The run's ``results.json``."""
        return self.run_dir / RESULTS


def plan(
    out_dir: str | Path,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    rows: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    python: str = sys.executable,
) -> list[Job]:
    """The runs of the grid, in order: every row at every seed (unseeded rows at the first seed only).

    Parameters
    ----------
    out_dir : path-like
        The grid's folder.
    seeds : sequence of int, default (0, 1, 2)
        Seeds of the trained rows.
    rows : sequence of str, optional
        Names of the rows to run (default: all of :data:`GRID`).
    overrides : sequence of str, default ()
        Hydra overrides for every run, before the row's own (``model=tiny train=smoke``
        makes a smoke grid).
    python : str, default ``sys.executable``
        The interpreter that runs ``-m fedrec.cli``.

    Raises
    ------
    ValueError
        On an unknown row name or no seed.
    """
    if not seeds:
        raise ValueError("no seed given")
    unknown = [r for r in rows or () if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; the grid has {list(ROWS)}")
    chosen = [r for r in GRID if rows is None or r.name in rows]
    out = Path(out_dir)
    jobs = []
    for row in chosen:
        for seed in seeds if row.seeded else seeds[:1]:
            run_dir = out / row.name / f"seed{seed}"
            argv = (
                python,
                "-m",
                "fedrec.cli",
                row.command,
                "train.progress=false",
                *GRID_MODEL,
                *(GRID_DEFAULTS if row.command == "simulate" else ()),
                *overrides,
                *row.overrides,
                f"seed={seed}",
                f"hydra.run.dir={run_dir}",
            )
            jobs.append(Job(row, int(seed), run_dir, argv))
    return jobs


def git_commit() -> str | None:
    """The commit of fedrec's source tree (``-dirty`` when it has uncommitted changes), or None."""
    import fedrec

    here = Path(fedrec.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``<out_dir>/experiments.json`` (an empty manifest when there is none)."""
    path = Path(out_dir) / MANIFEST
    if path.is_file():
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    return {"invocations": [], "runs": {}}


def _now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_job(job: Job, timeout: float | None = None) -> dict[str, Any]:
    """Run one job in a subprocess (output into ``<run dir>/run.log``); returns its manifest record."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "row": job.row.name,
        "seed": job.seed,
        "command": shlex.join(["fedrec", *job.argv[3:]]),
        "started": _now(),
        "machine": machine_info(),
    }
    start = time.perf_counter()
    with open(job.run_dir / LOG, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(job.argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["returncode"] = code
    ok = code == 0 and job.results.is_file()
    record["status"] = "ok" if ok else ("timeout" if code is None else "failed")
    return record


def run_experiments(
    out_dir: str | Path,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    rows: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    timeout: float | None = None,
    argv: Sequence[str] | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run the grid (see :func:`plan`), skipping runs that already have a ``results.json``.

    Prints a progress line per run and keeps ``<out_dir>/experiments.json`` up to date
    after each one.

    Parameters
    ----------
    out_dir : path-like
        The grid's folder.
    seeds, rows, overrides
        As in :func:`plan`.
    dry_run : bool, default False
        Print the command lines only.
    timeout : float, optional
        Seconds after which a run is stopped and recorded as ``timeout``.
    argv : sequence of str, optional
        The command line to record (default ``sys.argv``).
    python : str, default ``sys.executable``
        The interpreter that runs each job (``<python> -m fedrec.cli ...``).

    Returns
    -------
    dict
        The manifest; ``"failed"`` lists the keys of this invocation's failed runs.
    """
    jobs = plan(out_dir, seeds, rows, overrides, python)
    out = Path(out_dir)
    manifest = load_manifest(out)
    if not dry_run:
        manifest["invocations"].append(
            {
                "argv": list(sys.argv if argv is None else argv),
                "seeds": list(seeds),
                "rows": list(dict.fromkeys(j.row.name for j in jobs)),
                "overrides": list(overrides),
                "time": _now(),
                "commit": git_commit(),
            }
        )
    failed: list[str] = []
    for i, job in enumerate(jobs, 1):
        head = f"[{i}/{len(jobs)}] {job.key}"
        if dry_run:
            print(f"{head}: {shlex.join(['fedrec', *job.argv[3:]])}", flush=True)
            continue
        if job.results.is_file():
            manifest["runs"].setdefault(job.key, {"row": job.row.name, "seed": job.seed, "status": "existing"})
            print(f"{head}: done before ({job.results}), skipped", flush=True)
            continue
        print(f"{head}: running ...", flush=True)
        record = run_job(job, timeout)
        manifest["runs"][job.key] = record
        write_json(out / MANIFEST, manifest)
        if record["status"] == "ok":
            print(f"{head}: ok in {record['seconds']:.1f}s", flush=True)
        else:
            failed.append(job.key)
            print(
                f"{head}: {record['status'].upper()} (exit {record['returncode']}), see {job.run_dir / LOG}", flush=True
            )
    if not dry_run:
        write_json(out / MANIFEST, manifest)
    return {**manifest, "failed": failed}


def parser() -> argparse.ArgumentParser:
    """The ``fedrec experiments`` argument parser."""
    p = argparse.ArgumentParser(
        prog="fedrec experiments",
        description="Run the utility grid (baselines, local-only, centralized, federated per aggregation mode, "
        "federated DP at epsilon 1 and 8) into <out>/<row>/seed<k>/results.json, one process per run; runs with a "
        "results.json are skipped (re-run to continue). Trailing arguments are Hydra overrides for every run "
        "(e.g. model=tiny train=smoke federation.rounds=2 for a smoke grid); a row's own settings win.",
        epilog="rows: " + ", ".join(f"{r.name} (fedrec {r.command} {' '.join(r.overrides)})".strip() for r in GRID),
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    p.add_argument("--out", default="outputs/experiments", help="the grid's folder (default outputs/experiments)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated (default 0,1,2)")
    p.add_argument("--rows", help=f"comma-separated subset of the rows (default all: {','.join(ROWS)})")
    p.add_argument("--timeout", type=float, help="stop a run after this many seconds (recorded as timeout)")
    p.add_argument("--dry-run", action="store_true", help="print the command lines and exit")
    return p


def experiments_main(argv: list[str]) -> int:
    """``fedrec experiments [options] [overrides]``; returns the exit code (1 if a run failed)."""
    args = parser().parse_intermixed_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
        res = run_experiments(
            args.out, seeds, rows, args.overrides, args.dry_run, args.timeout, argv=["fedrec", "experiments", *argv]
        )
    except ValueError as exc:
        print(f"fedrec experiments: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    failed = res["failed"]
    print(
        f"{len(failed)} run(s) failed: {', '.join(failed)}" if failed else "all runs done",
        f"(manifest: {Path(args.out) / MANIFEST}); next: fedrec report results {args.out}",
    )
    return 1 if failed else 0
