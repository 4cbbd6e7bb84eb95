"""One size of ``fedrec bench scale`` (:mod:`fedrec.cli.bench.scale`): a simulation in its own process, sampled.

:func:`measure` starts ``python -m fedrec.cli.bench.scale_size`` (:func:`run_one`: one
``fedrec simulate`` with a fresh Ray instance) in a new process group and samples the RSS
and CPU time of its process tree (:class:`TreeSampler`) until it ends, or stops it over
its time budget or memory cap; :func:`round_figures` reads one round of its history.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedrec.cli.bench.common import MIB, PeakRSS, compose
from fedrec.io import write_json

ACTOR_MARK = "ClientAppActor"


def round_figures(entry: dict[str, Any]) -> dict[str, Any]:
    """One round of the history: wall time, the clients' summed work, bytes.

    Parameters
    ----------
    entry : dict
        A round of :meth:`fedrec.federated.server.Coordinator.end_round`'s history
        (per-client figures under ``clients`` when the platforms are split, else
        ``platforms``).

    Returns
    -------
    dict
        ``round``, ``wall_s``, ``clients`` (that trained), ``train_s`` / ``eval_s`` /
        ``setup_s`` (summed over the clients: training loop, evaluation call, building
        the client in its process), ``aggregate_s`` and ``bytes``.
    """
    per = entry.get("clients") or entry["platforms"]
    train = [v["train"] for v in per.values() if v.get("train")]
    valid = [v["valid"] for v in per.values() if v.get("valid")]
    setup = sum(float(t.get("setup_seconds", 0.0)) for t in train) + sum(
        float(v.get("setup-seconds", 0.0)) for v in valid
    )
    return {
        "round": int(entry["round"]),
        "wall_s": float(entry["seconds"]),
        "clients": len(train),
        "train_s": sum(float(t.get("train_seconds", 0.0)) for t in train),
        "eval_s": sum(float(v.get("eval-seconds", 0.0)) for v in valid),
        "setup_s": setup,
        "aggregate_s": float(entry.get("aggregate_seconds", 0.0)),
        "bytes": int(entry["bytes"]["total"]),
    }


def run_one(overrides: list[str], result_path: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """Run one simulation in this process (run directory ``run_dir``); write its figures to ``result_path``."""
    cfg = compose(overrides)
    from server.simulation import simulate

    start_mib = PeakRSS.current_mib()
    PeakRSS.reset()
    t0 = time.perf_counter()
    res = simulate(cfg, run_dir)
    total = time.perf_counter() - t0
    history = res["federation"]["history"]
    out = {
        "rounds": [round_figures(h) for h in history],
        "simulation_wall_s": total,
        "server_start_mib": start_mib,
        "server_peak_mib": PeakRSS.peak_mib(),
        "peak_resettable": PeakRSS.reset(),
        "cross_platform_loss": res.get("cross_platform_loss"),
        "test_users": {p: int(v["test"]["users"]) for p, v in res["platforms"].items()},
    }
    write_json(result_path, out)
    return out


class TreeSampler:
    """RSS and CPU seconds of a process and all its descendants (the simulation and its Ray processes).

    Each :meth:`sample` reads every process of the tree: RSS summed for the root (the
    server process), the Ray actors (``ClientAppActor`` in their command line) and the
    other descendants, peaks kept; CPU seconds (user + system) kept per process id, so
    a process that has exited still counts with its last reading.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.cpu: dict[int, float] = {}
        self.actor_pids: set[int] = set()
        self.peaks = {"actors": 0.0, "ray": 0.0, "tree": 0.0}

    def sample(self) -> float:
        """Read the tree once; returns its current total RSS in MiB."""
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        own = actors = other = 0.0
        for p in procs:
            try:
                rss = p.memory_info().rss / MIB
                t = p.cpu_times()
                if p is not self.root and p.pid not in self.actor_pids and ACTOR_MARK in " ".join(p.cmdline()):
                    self.actor_pids.add(p.pid)
            except psutil.Error:
                continue
            self.cpu[p.pid] = t.user + t.system
            if p is self.root:
                own = rss
            elif p.pid in self.actor_pids:
                actors += rss
            else:
                other += rss
        self.peaks["actors"] = max(self.peaks["actors"], actors)
        self.peaks["ray"] = max(self.peaks["ray"], actors + other)
        self.peaks["tree"] = max(self.peaks["tree"], own + actors + other)
        return own + actors + other

    @property
    def cpu_s(self) -> float:
        """CPU seconds the tree has used so far."""
        return sum(self.cpu.values())


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the size's process group (the simulation and the Ray processes it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _history_length(path: Path, last_mtime: float) -> tuple[int | None, float]:
    """Rounds in the run's ``history.json`` if it changed since ``last_mtime`` (written atomically each round)."""
    try:
        mtime = path.stat().st_mtime
        if mtime == last_mtime:
            return None, last_mtime
        return len(json.loads(path.read_text())), mtime
    except (OSError, ValueError):
        return None, last_mtime


def measure(overrides: list[str], budget_s: float, max_mib: float, log_path: Path) -> dict[str, Any]:
    """Run one size in a child process, sampling its tree; stop it over ``budget_s`` or ``max_mib``.

    Returns
    -------
    dict
        The child's figures (:func:`run_one`) plus ``actors_peak_mib``, ``ray_peak_mib``
        (actors and other Ray processes), ``tree_peak_mib``, ``cpu_s`` (the tree's CPU
        seconds), ``round_cpu_s`` (round number to the tree's CPU seconds between the end
        of the previous round and the end of this one, from round 2), ``load_average``
        (1 min, before and after), ``wall_s`` and, when it did not finish, ``stopped``.
    """
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-scale-") as tmp:
        result, run_dir = Path(tmp) / "result.json", Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fedrec.cli.bench.scale_size", str(result), str(run_dir), *overrides]
        load = [os.getloadavg()[0]]
        start = time.perf_counter()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        tree = TreeSampler(proc.pid)
        marks: dict[int, float] = {}  # rounds done -> the tree's CPU seconds then
        mtime = 0.0
        stopped = None
        try:
            while proc.poll() is None:
                total = tree.sample()
                done, mtime = _history_length(run_dir / "history.json", mtime)
                if done:
                    marks.setdefault(done, tree.cpu_s)
                elapsed = time.perf_counter() - start
                if elapsed > budget_s:
                    stopped = f"over the time budget: still running after {elapsed:.0f} s (budget {budget_s:.0f} s)"
                elif total > max_mib:
                    stopped = f"over the memory cap: {total:.0f} MiB RSS (cap {max_mib:.0f} MiB)"
                if stopped:
                    _kill_group(proc)
                    break
                time.sleep(0.25)
            proc.wait()
        finally:
            _kill_group(proc)  # whatever Ray left behind
        wall = time.perf_counter() - start
        load.append(os.getloadavg()[0])
        out: dict[str, Any] = {}
        if stopped is None and proc.returncode == 0 and result.is_file():
            out = json.loads(result.read_text())
        elif stopped is None:
            stopped = f"the simulation failed (exit code {proc.returncode}); see {log_path}"
    out.update(
        actors_peak_mib=tree.peaks["actors"],
        ray_peak_mib=tree.peaks["ray"],
        tree_peak_mib=tree.peaks["tree"],
        cpu_s=tree.cpu_s,
        round_cpu_s={r: marks[r] - marks[r - 1] for r in sorted(marks) if r - 1 in marks},
        load_average=load,
        wall_s=wall,
    )
    if stopped:
        out["stopped"] = stopped
    return out


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m fedrec.cli.bench.scale_size <result.json> <run dir> [overrides]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    run_one(args[2:], args[0], args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
