"""``fedrec bench scale``: round time and memory of simulated federations of 3 to 300 clients.

Each platform's users are split into shards (``federation.shards_per_platform``), one
client per shard, so ``n`` clients over the three platforms are ``n / 3`` shards each;
the tiny random BERT keeps compute small, so what grows with ``n`` is the framework's
share: messages, (de)serialisation, client (re)builds, the server's bookkeeping.

Every size is a real ``fedrec simulate`` (Flower's simulation engine on Ray) in a
process of its own, started with a fresh Ray instance: ``cores / client_cpus`` actors
(processes that serve the clients' messages one at a time), Ray's object store capped
(``federation.object_store_mib``). While it runs this process samples the memory of
that process tree: the server process (the driver: ServerApp, Coordinator, Flower's
engine), the Ray actors (``ClientAppActor`` workers) and the other Ray processes
(raylet, GCS, ...), and its CPU time. Reported per size:

* median round wall time over the rounds after the first, the first round (builds every
  client), the sum of the clients' own work in a median round (training, evaluation,
  and rebuilding clients evicted from the per-process cache) and the bytes per round;
* median CPU seconds of the whole tree per round (between the ends of consecutive
  rounds, seen in the run's ``history.json``): on a machine shared with other jobs the
  wall time measures their load as much as ours, the CPU time much less so;
* peak RSS of the server process (its own ``VmHWM``) and of the Ray actors and all
  Ray processes (sampled every 0.25 s; RSS counts shared pages in every process).

A size that goes over its time budget or the memory cap is stopped (its process group
killed) and recorded with the reason; larger sizes are then not run. A size whose
time, extrapolated from the completed ones, would exceed the budget is skipped with
that reason.

One size is measured by :mod:`fedrec.cli.bench.scale_size`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedrec.cli.bench.common import (
    base_overrides,
    compose,
    document,
    machine_info,
    median,
    print_table,
    ratio,
    write_result,
)
from fedrec.cli.bench.scale_size import measure, round_figures

__all__ = ["fit_line", "round_figures", "run_scale", "settings_overrides", "summarise"]

NAME = "scale"
PLATFORMS = ("ecommerce", "video", "social")
#: 3, 30, 100, 300 clients as multiples of the 3 platforms (100 -> 99: 33 shards each)
DEFAULT_CLIENTS = (3, 30, 99, 300)
SMOKE_CLIENTS = (3, 6)


def settings_overrides(
    clients: int, platforms: Sequence[str], rounds: int, local_steps: int, eval_users: int, object_store_mib: int
) -> list[str]:
    """The Hydra overrides of one size: the tiny BERT, ``clients / len(platforms)`` shards per platform.

    Raises
    ------
    ValueError
        If ``clients`` is not a positive multiple of the number of platforms.
    """
    if clients < len(platforms) or clients % len(platforms):
        raise ValueError(f"{clients} clients: need a positive multiple of the {len(platforms)} platforms")
    return [
        "model=tiny",
        "train=smoke",
        "train.threads=1",
        "train.progress=false",
        f"platform=[{','.join(platforms)}]",
        f"federation.shards_per_platform={clients // len(platforms)}",
        f"federation.rounds={rounds}",
        f"federation.local_steps={local_steps}",
        f"federation.eval_max_users={eval_users}",
        "federation.client_cpus=1",
        f"federation.object_store_mib={object_store_mib}",
    ]


def summarise(clients: int, shards: int, fig: dict[str, Any]) -> dict[str, Any]:
    """A size's row: medians over the rounds after the first, memory peaks, the stop reason."""
    row: dict[str, Any] = {"clients": clients, "shards_per_platform": shards, "wall_s": fig.get("wall_s")}
    for k in ("server_peak_mib", "server_start_mib", "actors_peak_mib", "ray_peak_mib", "tree_peak_mib", "cpu_s"):
        row[k] = fig.get(k, math.nan)
    row["load_average"] = fig.get("load_average")
    if "stopped" in fig:
        row["stopped"] = fig["stopped"]
    rounds = fig.get("rounds") or []
    if not rounds:
        return row
    later = rounds[1:] or rounds
    cpu = {int(k): float(v) for k, v in (fig.get("round_cpu_s") or {}).items()}
    for r in rounds:
        r["cpu_s"] = cpu.get(r["round"], math.nan)
    row |= {
        "round_s": median(r["wall_s"] for r in later),
        "round_cpu_s": median(cpu[r["round"]] for r in later if r["round"] in cpu),
        "first_round_s": rounds[0]["wall_s"],
        "work_s": median(r["train_s"] + r["eval_s"] + r["setup_s"] for r in later),
        "setup_s": median(r["setup_s"] for r in later),
        "aggregate_s": median(r["aggregate_s"] for r in later),
        "bytes_per_round": median(r["bytes"] for r in later),
        "simulation_wall_s": fig["simulation_wall_s"],
        "rounds_in_median": len(rounds) - 1,
        "rounds": rounds,
        "cross_platform_loss": fig.get("cross_platform_loss"),
        "test_users": fig.get("test_users"),
    }
    row["cpu_ms_per_client"] = 1000 * row["round_cpu_s"] / clients
    return row


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of ``ys`` against ``xs`` (NaN with fewer than two points)."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
    if len(pts) < 2:
        return math.nan, math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return math.nan, math.nan
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my - slope * mx, slope


def _estimate(done: Sequence[dict[str, Any]], n: int) -> tuple[float, str]:
    """Wall time of ``n`` clients extrapolated from the completed sizes, and how it was extrapolated."""
    if len(done) >= 2:
        b0, b1 = fit_line([r["clients"] for r in done], [r["wall_s"] for r in done])
        if math.isfinite(b1) and b1 > 0:
            return b0 + b1 * n, f"line through {len(done)} completed sizes: {b0:.0f} s + {b1:.2f} s per client"
    last = done[-1]
    rounds = sum(r["wall_s"] for r in last["rounds"])
    fixed = float(last["wall_s"]) - rounds  # start-up, final test, shutdown: taken as not growing
    return fixed + rounds * n / int(last["clients"]), (
        f"{last['clients']} clients' {fixed:.0f} s outside the rounds + their {rounds:.0f} s of rounds x "
        f"{n / int(last['clients']):.1f}"
    )


def run_scale(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str | Path = "outputs/bench",
    clients: Sequence[int] | None = None,
    rounds: int | None = None,
    local_steps: int | None = None,
    eval_users: int | None = None,
    budget_s: float | None = None,
    max_mib: float = 6144.0,
    object_store_mib: int = 256,
    platforms: Sequence[str] = PLATFORMS,
) -> dict[str, Any]:
    """Run the scale benchmark, print its table and write ``bench_scale.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides, applied last to every size.
    smoke : bool, default False
        3 and 6 clients, 2 rounds, 1 local step, 5 validation users per client.
    out_dir : path-like, default "outputs/bench"
        Where the JSON goes (and ``bench_scale.log``, the simulations' output).
    clients : sequence of int, optional
        Client counts, multiples of the number of platforms (default 3, 30, 99, 300).
    rounds : int, optional
        Rounds per simulation (default 3; smoke 2; at least 2: round 1 builds the clients).
    local_steps : int, optional
        ``federation.local_steps`` (default 2; smoke 1).
    eval_users : int, optional
        ``federation.eval_max_users`` per client (default 20; smoke 5).
    budget_s : float, optional
        Wall-time budget of one size (default 1500 s; smoke 900 s).
    max_mib : float, default 6144
        Cap on the RSS of a size's whole process tree.
    object_store_mib : int, default 256
        ``federation.object_store_mib``: Ray's object store (the messages are KiB-sized).
    platforms : sequence of str, default ("ecommerce", "video", "social")
        The platforms whose users are split.

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_scale.json``.
    """
    start = time.perf_counter()
    sizes = sorted(set(clients or (SMOKE_CLIENTS if smoke else DEFAULT_CLIENTS)))
    rounds = rounds or (2 if smoke else 3)
    if rounds < 2:
        raise ValueError(f"the scale benchmark needs at least 2 rounds (round 1 builds the clients), got {rounds}")
    local_steps = local_steps or (1 if smoke else 2)
    eval_users = eval_users or (5 if smoke else 20)
    budget_s = budget_s or (900.0 if smoke else 1500.0)
    per_size = {
        n: base_overrides(
            smoke,
            None,
            [*settings_overrides(n, platforms, rounds, local_steps, eval_users, object_store_mib), *(overrides or [])],
        )
        for n in sizes
    }
    cfg = compose(per_size[sizes[0]])  # fails early on a bad override
    machine = machine_info()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "bench_scale.log"
    log_path.write_bytes(b"")
    rows: list[dict[str, Any]] = []
    stop: str | None = None
    for n in sizes:
        shards = n // len(platforms)
        if stop is not None:
            rows.append({"clients": n, "shards_per_platform": shards, "stopped": f"not run: {stop}"})
            continue
        done = [r for r in rows if "round_s" in r and "stopped" not in r]
        if done:
            estimate, basis = _estimate(done, n)
            if estimate > budget_s:
                stop = f"skipped: {n} clients would take ~{estimate:.0f} s ({basis}), over the {budget_s:.0f} s budget"
                rows.append({"clients": n, "shards_per_platform": shards, "stopped": stop, "estimate_s": estimate})
                continue
        print(f"fedrec bench scale: {n} clients ({shards} shards per platform) ...", flush=True)
        row = summarise(n, shards, measure(per_size[n], budget_s, max_mib, log_path))
        rows.append(row)
        if "stopped" in row:
            stop = f"{n} clients stopped ({row['stopped']})"
    ok = [r for r in rows if "round_s" in r and "stopped" not in r]
    first = ok[0] if ok else {}
    for r in rows:
        for k in ("round_s", "round_cpu_s", "server_peak_mib", "actors_peak_mib"):
            r[f"{k}_x"] = ratio(r.get(k, math.nan), first.get(k, math.nan))
    xs = [r["clients"] for r in ok]
    t0, t1 = fit_line(xs, [r["round_s"] for r in ok])
    c0, c1 = fit_line(xs, [r["round_cpu_s"] for r in ok])
    m0, m1 = fit_line(xs, [r["server_peak_mib"] for r in ok])
    _a0, a1 = fit_line(xs, [r["actors_peak_mib"] for r in ok])
    stopped = next((r for r in rows if "stopped" in r), None)
    summary = {
        "largest_completed": max(xs) if xs else None,
        "stopped_at": None if stopped is None else stopped["clients"],
        "stop_reason": None if stopped is None else stopped["stopped"],
        "round_s_fixed": t0,
        "round_ms_per_client": 1000 * t1,
        "round_cpu_s_fixed": c0,
        "round_cpu_ms_per_client": 1000 * c1,
        "server_mib_fixed": m0,
        "server_mib_per_100_clients": 100 * m1,
        "actors_mib_per_100_clients": 100 * a1,
    }
    settings = {
        "backbone": str(cfg.model.backbone),
        "platforms": list(platforms),
        "clients": sizes,
        "rounds": rounds,
        "local_steps": local_steps,
        "batch": int(cfg.train.batch_size),
        "eval_users_per_client": eval_users,
        "client_cpus": float(cfg.federation.client_cpus),
        "ray_actors": int(machine["cores"] // float(cfg.federation.client_cpus)),
        "object_store_mib": object_store_mib,
        "client_cache": int(cfg.federation.client_cache),
        "budget_s": budget_s,
        "max_mib": max_mib,
    }
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    path = write_result(out_dir, NAME, doc)
    table = []
    for r in rows:
        if "round_s" not in r:
            table.append([str(r["clients"]), str(r["shards_per_platform"]), *["-"] * 12, r.get("stopped", "")])
            continue
        table.append(
            [
                str(r["clients"]),
                str(r["shards_per_platform"]),
                f"{r['round_s']:.2f}",
                f"{r['round_s_x']:.1f}x",
                f"{r['round_cpu_s']:.2f}",
                f"{r['round_cpu_s_x']:.1f}x",
                f"{r['cpu_ms_per_client']:.0f}",
                f"{r['first_round_s']:.1f}",
                f"{r['work_s']:.2f}",
                f"{r['server_peak_mib']:.0f}",
                f"{r['server_peak_mib_x']:.2f}x",
                f"{r['actors_peak_mib']:.0f}",
                f"{r['ray_peak_mib']:.0f}",
                f"{r['bytes_per_round'] / 1024:.0f}",
                r.get("stopped", "ok"),
            ]
        )
    print_table(
        f"fedrec bench scale: Flower simulation of {'/'.join(platforms)} split into user shards, "
        f"{cfg.model.backbone} BERT, {rounds} rounds x {local_steps} local steps x batch {settings['batch']}, "
        f"{eval_users} validation users per client",
        [
            "clients",
            "shards",
            "round s",
            "x",
            "round CPU s",
            "x",
            "CPU ms/client",
            "round 1 s",
            "client work s",
            "server MiB",
            "x",
            "actors MiB",
            "Ray MiB",
            "KiB/round",
            "status",
        ],
        table,
        machine,
        [
            f"round s = median wall time of rounds 2..{rounds} (x = vs {first.get('clients', '-')} clients); "
            "round CPU s = median CPU seconds (user + system) of the whole process tree per round, which other "
            "jobs on the machine inflate less than the wall time; round 1 builds every client. "
            "client work = the clients' training + evaluation + (re)build seconds "
            f"summed over a round; Ray runs {settings['ray_actors']} actors ({settings['client_cpus']:g} CPU each), "
            f"each keeps {settings['client_cache']} clients built (federation.client_cache) and one copy of each "
            "platform's data, encoder and item side.",
            "server MiB = peak RSS of the simulation's driver process (ServerApp, Coordinator, Flower's engine); "
            "actors MiB / Ray MiB = peak summed RSS of the Ray actors / of all Ray processes (sampled every 0.25 s, "
            f"shared pages counted in each); Ray object store capped at {object_store_mib} MiB.",
            f"fit over completed sizes: round = {t0:.2f} s + {1000 * t1:.1f} ms x clients, round CPU = {c0:.2f} s + "
            f"{1000 * c1:.1f} ms x clients; server = {m0:.0f} MiB + "
            f"{100 * m1:.1f} MiB per 100 clients; actors + {100 * a1:.1f} MiB per 100 clients.",
            (
                f"stops at {summary['stopped_at']} clients: {summary['stop_reason']}"
                if summary["stop_reason"]
                else "every size completed"
            )
            + f"; results: {path}; simulation output: {log_path}",
        ],
    )
    return doc.to_json()
