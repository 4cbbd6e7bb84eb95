"""Benchmarks behind ``fedrec bench``: each prints a table and writes ``<out>/bench_<name>.json``.

``train`` (:mod:`fedrec.cli.bench.train`)
    Local training examples/s and peak RSS, non-private vs DP, across LoRA placement,
    precision and user-text length; the DP / non-DP ratio per row.
``seqtrain`` (:mod:`fedrec.cli.bench.seq_train`)
    The sequence model's (the default's) local training users/s and targets/s, non-private
    vs user-level DP, one row per platform; the DP / non-DP ratio per row.
``encode`` (:mod:`fedrec.cli.bench.encode`)
    Item-index build items/s and one user's top-10 latency (p50 / p99).
``comm`` (:mod:`fedrec.cli.bench.comm`)
    Bytes per client per round for each aggregation mode vs the backbone; a default
    run's total.
``round`` (:mod:`fedrec.cli.bench.rounds`)
    A Flower simulation's round time split into client compute, server aggregation and
    Flower/Ray overhead.
``scale`` (:mod:`fedrec.cli.bench.scale`)
    Simulated federations of 3, 30, 99 and 300 clients (the platforms' users split into
    shards, tiny BERT): round time, server and Ray memory, how they grow, where it stops.

Shared machinery (machine line, medians, peak RSS, JSON, tables) is in
:mod:`fedrec.cli.bench.common`; the alternating non-DP / DP blocks of ``train`` and ``seqtrain`` in
:mod:`fedrec.cli.bench.blocks`. ``--smoke`` runs every benchmark in seconds on the tiny
random BERT (what CI runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

BENCHMARKS = ("train", "seqtrain", "encode", "comm", "round", "scale")

DESCRIPTION = """Benchmarks: each prints a table (with the machine it ran on) and writes <out>/bench_<name>.json.

  train   local training examples/s and peak RSS, non-DP vs DP (default platform video, MiniLM)
  seqtrain  the sequence model's training users/s and targets/s, non-DP vs DP, per platform
  encode  item-index build items/s and one user's top-10 latency p50/p99 (default platform social)
  comm    bytes per client per round per aggregation mode vs the backbone; a default run's total
  round   Flower simulation round time: client compute, server aggregation, Flower/Ray overhead
  scale   3, 30, 99, 300 simulated clients (user shards, tiny BERT): round time, memory, growth
  all     all of the above, in that order

Trailing arguments are Hydra overrides applied to every configuration the benchmark
composes, e.g. `fedrec bench train --smoke model.lora_r=4`."""


def parser() -> argparse.ArgumentParser:
    """The ``fedrec bench`` argument parser."""
    p = argparse.ArgumentParser(
        prog="fedrec bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. model=tiny train.num_negatives=256)")
    p.add_argument("--smoke", action="store_true", help="tiny random BERT, a few steps: seconds (CI)")
    p.add_argument("--out", default="outputs/bench", help="folder of the JSON files (default outputs/bench)")
    p.add_argument("--platform", help="platform (default: train video, encode social; seqtrain: all, or a,b)")
    p.add_argument("--threads", type=int, help="torch threads (default: train.threads; 1 with --smoke)")
    g = p.add_argument_group("train")
    g.add_argument("--grid", choices=["ofat", "full"], default="ofat", help="rows: one factor at a time (4) or all 8")
    g.add_argument("--top", type=int, help="N of the top-N cached LoRA placement (default model.lora_layers)")
    g.add_argument("--batch-size", type=int, help="examples (non-DP) / expected users (DP) per step")
    g.add_argument("--seconds", type=float, help="minimum training seconds per mode and row (default 12)")
    g.add_argument(
        "--interleave",
        action="store_true",
        help="all rows in this process, interleaved block by block (ratios between rows robust to load drift; "
        "peak RSS then covers every row's task); default: one process per row (--smoke: interleaved)",
    )
    g = p.add_argument_group("encode")
    g.add_argument("--users", type=int, help="users timed for the latency (default 300)")
    g.add_argument("--items", type=int, default=-1, help="encode only the first N items (default: all)")
    g = p.add_argument_group("round and scale")
    g.add_argument("--rounds", type=int, help="simulated rounds (round: default 5; scale: 3; smoke 2)")
    g = p.add_argument_group("scale")
    g.add_argument("--clients", type=_counts, help="client counts, multiples of 3 (default 3,30,99,300; smoke 3,6)")
    g.add_argument("--local-steps", type=int, help="local steps per client and round (default 2; smoke 1)")
    g.add_argument("--eval-users", type=int, help="validation users per client (default 20; smoke 5)")
    g.add_argument("--budget", type=float, help="seconds one size may take before it is stopped (default 1500)")
    g.add_argument("--max-mib", type=float, default=6144.0, help="RSS cap of a size's processes (default 6144)")
    g.add_argument("--object-store-mib", type=int, default=256, help="Ray object store cap (default 256)")
    return p


def _counts(text: str) -> list[int]:
    """``"3,30"`` -> ``[3, 30]``."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _runners(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    from fedrec.cli.bench import blocks, comm, encode, rounds, scale, seq_train, train

    budget = None  # --seconds: the train benchmarks' minimum seconds per mode
    if args.seconds is not None:
        budget = dataclasses.replace(blocks.default_budget(args.smoke), seconds=args.seconds, max_pairs=40)

    def run_train() -> Any:
        return train.run_train(
            args.overrides,
            smoke=args.smoke,
            out_dir=args.out,
            platform=args.platform or "video",
            grid=args.grid,
            top=args.top,
            batch=args.batch_size,
            budget=budget,
            isolate=False if args.interleave else None,
            threads=args.threads,
        )

    def run_seq_train() -> Any:
        return seq_train.run_seq_train(
            args.overrides,
            smoke=args.smoke,
            out_dir=args.out,
            platforms=args.platform.split(",") if args.platform else None,
            batch=args.batch_size,
            budget=budget,
            threads=args.threads,
        )

    return {
        "train": run_train,
        "seqtrain": run_seq_train,
        "encode": lambda: encode.run_encode(
            args.overrides,
            smoke=args.smoke,
            out_dir=args.out,
            platform=args.platform or "social",
            users=args.users,
            items=args.items,
            threads=args.threads,
        ),
        "comm": lambda: comm.run_comm(args.overrides, smoke=args.smoke, out_dir=args.out),
        "round": lambda: rounds.run_round(args.overrides, smoke=args.smoke, out_dir=args.out, rounds=args.rounds),
        "scale": lambda: scale.run_scale(
            args.overrides,
            smoke=args.smoke,
            out_dir=args.out,
            clients=args.clients,
            rounds=args.rounds,
            local_steps=args.local_steps,
            eval_users=args.eval_users,
            budget_s=args.budget,
            max_mib=args.max_mib,
            object_store_mib=args.object_store_mib,
        ),
    }


def bench_main(argv: list[str]) -> int:
    """``fedrec bench <name> [options] [overrides]``; returns the exit code."""
    args = parser().parse_intermixed_args(argv)
    from hydra.errors import HydraException

    from fedrec.cli.jobs import USER_ERRORS

    runners = _runners(args)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    try:
        for name in names:
            runners[name]()
    except (*USER_ERRORS, HydraException) as exc:
        print(f"fedrec bench: error: {exc}", file=sys.stderr)
        return 2
    return 0
