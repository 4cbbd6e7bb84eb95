"""The ``fedrec`` command line.

``fedrec <command> [hydra overrides]`` runs a Hydra job over ``conf/`` (``-m`` for
multirun, ``--cfg job`` to print the config, ``hydra.run.dir=...`` honoured);
``fedrec data download|verify`` manages the raw files; ``fedrec deploy credentials``
writes a deployment's TLS and node-authentication files (:mod:`fedrec.cli.deploy`);
``fedrec bench`` runs the benchmarks (:mod:`fedrec.cli.bench`); ``fedrec experiments`` runs the utility grid
(:mod:`fedrec.cli.experiments`) and ``fedrec report`` renders sweeps and grids
(:mod:`fedrec.cli.report`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

HYDRA_COMMANDS = ("train", "baselines", "simulate", "export", "recommend", "audit")
USAGE = """usage: fedrec [-v] <command> [options]

commands:
  train      [overrides]   train (mode=local: one model per platform; mode=centralized: pooled)
  baselines  [overrides]   MostPop, ItemKNN, frozen text, EASE and SASRec under the protocol
  simulate   [overrides]   federated training (Flower simulation, one client per platform)
  export     [run_dir=...] the joint model of a simulate run (merged HF model + item indexes)
  audit      [audit.platform=video audit.target_epsilon=8]   canary membership inference: attack AUC and
                           an empirical epsilon lower bound, non-private vs private (exit status 3 if a
                           lower bound exceeds the formal epsilon)
  recommend  platform=video user=42 [k=10 mmr_lambda=1.0 joint_model=...]   top-k unseen items
  experiments [--out DIR] [--seeds 0,1,2] [--rows a,b] [--dry-run] [overrides]   the utility grid (baselines,
                           local, centralized, federated per aggregation mode, DP at epsilon 1 and 8), one
                           process per run into <out>/<row>/seed<k>/results.json; resumable
  report <sweep dir> [--reference FILE] [--baselines FILE] [--out DIR]
                           privacy/utility sweep -> privacy_sweep.md + privacy_sweep.png
  report results <experiments dir> [--bench DIR] [--out docs] [--readme README.md]
                           the grid (and the benchmarks) -> RESULTS.md + PNG plots
  bench <train|seqtrain|encode|comm|round|all> [--smoke] [--out DIR] [overrides]   benchmarks (tables + JSON)
  deploy credentials <dir> [--host 127.0.0.1] [--platforms video ecommerce social]   TLS CA + SuperLink
                           certificate and one SuperNode key pair per platform (docs/DEPLOY.md)
  data download [--root DIR] [--platform NAME ...]   fetch the datasets (needs internet)
  data verify   [--root DIR]                          check the datasets' sha256 sums

overrides are Hydra's: e.g. `fedrec train mode=local platform=video train.epochs=1`,
`fedrec train --cfg job` prints the resolved config, `-m` runs a sweep.
`fedrec -v <command>` (or -v among a Hydra command's overrides) keeps third-party warnings,
Flower's deprecation notices and every Ray actor's output on the console."""


def run_hydra(command: str, job: Callable[..., object], argv: list[str]) -> None:
    """Run ``job(cfg)`` as a Hydra app over ``conf/`` with ``command=<command>`` set."""
    import hydra

    from fedrec.config import conf_dir, register_configs

    register_configs()
    # command=... goes last: Hydra's argparse takes no positional overrides after a flag such as -m
    sys.argv = [f"fedrec {command}", *argv, f"command={command}"]
    try:
        folder = conf_dir()
    except FileNotFoundError as exc:
        raise SystemExit(f"fedrec: error: {exc}") from None
    hydra.main(config_path=str(folder), config_name="config", version_base="1.3")(job)()


def data_main(argv: list[str]) -> int:
    """``fedrec data download|verify``."""
    from fedrec.data.download import DownloadError, download_datasets, verify_datasets

    parser = argparse.ArgumentParser(prog="fedrec data", description="Fetch or verify the platform datasets.")
    parser.add_argument("action", choices=["download", "verify"])
    parser.add_argument(
        "--root", default=os.environ.get("FEDREC_DATA", "./data"), help="data root (default: $FEDREC_DATA, else ./data)"
    )
    parser.add_argument("--platform", action="append", help="only this platform (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        if args.action == "download":
            report: dict[str, object] = dict(download_datasets(root, args.platform, timeout=args.timeout))
        else:
            report = dict(verify_datasets(root, args.platform))
    except DownloadError as exc:
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 1
    for name, status in report.items():
        print(f"{name}: {status}")
    return 0


def results_report_main(argv: list[str]) -> int:
    """``fedrec report results <experiments dir>``: RESULTS.md and its plots from a ``fedrec experiments`` grid."""
    from fedrec.cli.report.results import report_results

    parser = argparse.ArgumentParser(
        prog="fedrec report results",
        description="Render a fedrec experiments grid (and the fedrec bench JSON files) as RESULTS.md + PNG plots.",
    )
    parser.add_argument("experiments_dir", help="the folder fedrec experiments wrote (<row>/seed<k>/results.json)")
    parser.add_argument("--bench", help="folder with bench_*.json (fedrec bench --out); default: no benchmarks")
    parser.add_argument("--out", default="docs", help="output folder of RESULTS.md and the PNGs (default docs)")
    parser.add_argument("--readme", help="README whose generated results block gets the macro table and headline")
    args = parser.parse_args(argv)
    try:
        res = report_results(
            args.experiments_dir,
            args.out,
            args.bench,
            args.readme,
            command=shlex.join(["fedrec", "report", "results", *argv]),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 2
    plots = [str(p) for p in res["plots"].values() if p is not None]
    readme = f"; headline numbers into {res['readme']}" if res["readme"] else ""
    print(f"wrote {res['markdown']} and {len(plots)} plot(s) {', '.join(plots)} ({res['runs']} runs){readme}")
    return 0


def report_main(argv: list[str]) -> int:
    """``fedrec report <sweep dir>``: Markdown table and PNG plot of a privacy/utility sweep.

    ``fedrec report results <experiments dir> ...`` renders an experiments grid instead
    (:func:`results_report_main`); a sweep folder named ``results`` is ``./results``.
    """
    if len(argv) >= 2 and argv[0] == "results" and (not argv[1].startswith("-") or argv[1] in ("-h", "--help")):
        return results_report_main(argv[1:])
    from fedrec.cli.report.privacy import report

    parser = argparse.ArgumentParser(
        prog="fedrec report", description="Render a privacy/utility sweep (results.json files) as Markdown + PNG."
    )
    parser.add_argument("sweep_dir", help="folder with the sweep jobs' results.json (a Hydra multirun dir)")
    parser.add_argument("--reference", help="non-private simulate results.json (default: found in the sweep)")
    parser.add_argument("--baselines", help="results.json with ItemKNN (default: the reference's comparison)")
    parser.add_argument("--out", help="output folder (default: the sweep dir)")
    args = parser.parse_args(argv)
    try:
        res = report(args.sweep_dir, args.out, args.reference, args.baselines)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 2
    print(res["text"])
    print(f"wrote {res['markdown']} and {res['plot']} ({res['runs']} private runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedrec`` console script.

    Third-party warnings and Flower's deprecation banner stay off the console
    (:func:`fedrec.cli.quiet.quiet_console`) unless ``-v`` / ``--verbose`` is given: as the
    first argument for every command, anywhere for the Hydra commands (where it also sets
    ``verbose=true``, which brings back Ray's per-actor output).
    """
    from fedrec.cli.quiet import pop_verbose, quiet_console

    verbose, argv = pop_verbose(sys.argv[1:] if argv is None else argv, anywhere=False)
    if argv and argv[0] in HYDRA_COMMANDS:
        more, rest = pop_verbose(argv[1:])
        verbose |= more
        if verbose:  # beside the other overrides: Hydra's parser takes them in one run
            at = next((i for i, a in enumerate(rest) if "=" in a and not a.startswith("-")), len(rest))
            rest.insert(at, "verbose=true")
        argv = [argv[0], *rest]
    with quiet_console(verbose):
        return _dispatch(argv)


def _dispatch(argv: list[str]) -> int:
    """Run the command ``argv[0]`` with the arguments after it."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "data":
        return data_main(rest)
    if command == "report":
        return report_main(rest)
    if command == "deploy":
        from fedrec.cli.deploy import deploy_main

        return deploy_main(rest)
    if command == "experiments":
        from fedrec.cli.experiments import experiments_main

        return experiments_main(rest)
    if command == "bench":
        from fedrec.cli.bench import bench_main

        return bench_main(rest)
    if command in HYDRA_COMMANDS:
        from fedrec.cli import jobs

        run_hydra(command, getattr(jobs, f"{command}_job"), rest)
        return 0
    print(f"fedrec: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
