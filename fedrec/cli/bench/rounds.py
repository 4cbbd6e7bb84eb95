"""``fedrec bench round``: where a federated round's wall time goes in Flower's simulation.

A real ``fedrec simulate`` run (Flower simulation engine, Ray), by default the tiny random
BERT on two platforms so that compute is small and the framework's share shows. Each
round's wall time (the server's, from sending the adapter out for training to having
every validation reply) is split into:

* client compute: the slowest client's training loop (``train-seconds``, reported by the
  client) plus the slowest client's evaluation call (``eval-seconds``); the clients run
  in parallel, ``federation.client_cpus`` CPUs each, so the slowest one is on the
  critical path;
* server aggregation: the time in ``Coordinator.aggregate_train`` (validation of the
  updates and the LoRA aggregation; ``aggregate_seconds`` in the round history);
* Flower/Ray overhead: the rest (messages, (de)serialisation, scheduling, the adapter
  loads and local-state saves around the clients' work).

Round 1 also builds every client (data, model, caches) and is reported apart; the
medians are over rounds 2 and later. Ray's start-up and the final test round are
``setup_and_test_seconds``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from fedrec.cli.bench.common import base_overrides, compose, document, machine_info, median, print_table, write_result

NAME = "round"


def split_round(entry: dict[str, Any]) -> dict[str, Any]:
    """Split one round-history entry (``history.json``) into compute, aggregation and overhead.

    Parameters
    ----------
    entry : dict
        A round of :meth:`fedrec.federated.server.Coordinator.end_round`'s history, with
        the clients' ``train_seconds`` / ``eval-seconds`` and ``aggregate_seconds``.

    Returns
    -------
    dict
        ``round``, ``wall_s``, ``train_s`` and ``eval_s`` (slowest client),
        ``compute_s``, ``aggregate_s``, ``overhead_s`` and ``overhead_fraction``.

    Raises
    ------
    ValueError
        If the entry lacks the timing fields (clients or server without them).
    """
    train, evals = [], []
    for p, v in entry["platforms"].items():
        if v.get("train"):
            if "train_seconds" not in v["train"]:
                raise ValueError(f"round {entry['round']}: client {p} reported no train-seconds")
            train.append(float(v["train"]["train_seconds"]))
        if v.get("valid"):
            if "eval-seconds" not in v["valid"]:
                raise ValueError(f"round {entry['round']}: client {p} reported no eval-seconds")
            evals.append(float(v["valid"]["eval-seconds"]))
    if "aggregate_seconds" not in entry:
        raise ValueError(f"round {entry['round']}: the history has no aggregate_seconds")
    wall = float(entry["seconds"])
    t, e, agg = max(train, default=0.0), max(evals, default=0.0), float(entry["aggregate_seconds"])
    overhead = wall - t - e - agg
    return {
        "round": int(entry["round"]),
        "wall_s": wall,
        "train_s": t,
        "eval_s": e,
        "compute_s": t + e,
        "aggregate_s": agg,
        "overhead_s": overhead,
        "overhead_fraction": overhead / wall if wall > 0 else float("nan"),
    }


def run_round(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str | Path = "outputs/bench",
    platforms: tuple[str, ...] = ("video", "ecommerce"),
    rounds: int | None = None,
    local_steps: int | None = None,
    eval_users: int | None = None,
) -> dict[str, Any]:
    """Run the round benchmark (a Flower simulation), print its table and write ``bench_round.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides (applied last: ``model=minilm_lora`` measures the real model).
    smoke : bool, default False
        ``train=smoke``, 2 rounds, 3 local steps, 100 validation users.
    out_dir : path-like, default "outputs/bench"
        Where the JSON goes (the simulation's own run directory is temporary).
    platforms : tuple of str, default ("video", "ecommerce")
        One client each (two clients run in parallel on a 2-core machine).
    rounds : int, optional
        Default 5 (smoke 2); at least 2 (round 1 builds the clients).
    local_steps : int, optional
        ``federation.local_steps`` (default 20; smoke 3).
    eval_users : int, optional
        ``federation.eval_max_users`` (default 300; smoke 100).

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_round.json``.
    """
    start = time.perf_counter()
    rounds = rounds or (2 if smoke else 5)
    if rounds < 2:
        raise ValueError(f"the round benchmark needs at least 2 rounds (round 1 builds the clients), got {rounds}")
    local_steps = local_steps or (3 if smoke else 20)
    eval_users = eval_users or (100 if smoke else 300)
    base = [
        "model=tiny",
        f"platform=[{','.join(platforms)}]",
        "train.progress=false",
        f"federation.rounds={rounds}",
        f"federation.local_steps={local_steps}",
        f"federation.eval_max_users={eval_users}",
        "federation.client_cpus=1",
    ]
    cfg = compose(base_overrides(smoke, None, [*base, *(overrides or [])]))
    machine = machine_info()
    from server.simulation import simulate

    with tempfile.TemporaryDirectory(prefix="fedrec-bench-round-") as tmp:
        t0 = time.perf_counter()
        res = simulate(cfg, Path(tmp) / "run")
        total = time.perf_counter() - t0
    history = res["federation"]["history"]
    rows = [split_round(h) for h in history]
    later = rows[1:]
    summary = {
        "round_s": median(r["wall_s"] for r in later),
        "compute_s": median(r["compute_s"] for r in later),
        "aggregate_s": median(r["aggregate_s"] for r in later),
        "overhead_s": median(r["overhead_s"] for r in later),
        "overhead_fraction": median(r["overhead_fraction"] for r in later),
        "first_round_s": rows[0]["wall_s"],
        "simulation_wall_s": round(total, 2),
        "setup_and_test_seconds": round(total - sum(r["wall_s"] for r in rows), 2),
        "rounds_in_median": len(later),
    }
    m = cfg.model
    settings = {
        "backbone": str(m.backbone),
        "platforms": list(cfg.platforms),
        "rounds": rounds,
        "local_steps": local_steps,
        "batch": int(cfg.train.batch_size),
        "eval_users": eval_users,
        "client_cpus": float(cfg.federation.client_cpus),
        "aggregation": str(cfg.federation.aggregation),
    }
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    path = write_result(out_dir, NAME, doc)
    med = {
        "round": "median r2+",
        **{k: summary[k2] for k, k2 in (("wall_s", "round_s"), ("compute_s", "compute_s"))},
        "aggregate_s": summary["aggregate_s"],
        "overhead_s": summary["overhead_s"],
        "overhead_fraction": summary["overhead_fraction"],
    }
    table = [
        [
            str(r["round"]),
            f"{r['wall_s']:.2f}",
            "-" if "train_s" not in r else f"{r['train_s']:.2f}",
            "-" if "eval_s" not in r else f"{r['eval_s']:.2f}",
            f"{r['compute_s']:.2f}",
            f"{r['aggregate_s'] * 1000:.2f}",
            f"{r['overhead_s']:.2f}",
            f"{r['overhead_fraction']:.1%}",
        ]
        for r in [*rows, med]
    ]
    print_table(
        f"fedrec bench round: Flower simulation, {m.backbone}, {len(cfg.platforms)} clients, {local_steps} local steps "
        f"x batch {settings['batch']}, {eval_users} validation users",
        ["round", "wall s", "train s", "eval s", "compute s", "aggregate ms", "overhead s", "overhead"],
        table,
        machine,
        [
            "compute = slowest client's training loop + slowest client's evaluation; aggregate = "
            "Coordinator.aggregate_train; overhead = the rest of the round's wall time (Flower, Ray, messages). "
            f"Round 1 includes building the clients. Each client: {settings['client_cpus']:g} CPU and as many "
            "torch threads (the machine line shows the server process's).",
            f"simulation {total:.1f}s in all, of which {summary['setup_and_test_seconds']:.1f}s Ray start-up, "
            f"final test and shutdown; results: {path}",
        ],
    )
    return doc.to_json()
