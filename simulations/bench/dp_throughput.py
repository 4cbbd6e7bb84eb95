"""Non-private vs user-level DP training throughput on the same config, in one run.

Both modes train the same task (same platform, model, batch size, negatives, index
refreshes): ``fedrec.train.fit`` with ``batch_size`` examples per step, and
``fedrec.privacy.train_private`` with ``batch_size`` *expected* users per step (one
example each). They run in alternating blocks of steps so that load from other processes
on the machine hits both alike; the time of each block is the training loop only (the
index refresh at a block's start is excluded in both modes). Prints examples/s of each and
the DP / non-DP ratio (issue 4 asks for >= 0.8).

Usage::

    python simulations/bench/dp_throughput.py                       # tiny random BERT, video
    python simulations/bench/dp_throughput.py --backbone minilm --seconds 20
    python simulations/bench/dp_throughput.py -- model.hybrid=true  # any Hydra override after --

The data root is ``$FEDREC_DATA``, else ``../shared/datasets`` beside the repository.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line: ``--backbone``, ``--platform``, ``--batch``, ``--seconds``, ``--block``, ``--threads``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", choices=["tiny", "minilm"], default="tiny", help="model group (default: tiny)")
    p.add_argument("--platform", default="video", help="platform config (default: video)")
    p.add_argument("--batch", type=int, default=32, help="examples (non-DP) / expected users (DP) per step [32]")
    p.add_argument("--seconds", type=float, default=20.0, help="training seconds per mode [20]")
    p.add_argument("--block", type=int, default=0, help="steps per block (0 = 10 tiny, 4 minilm)")
    p.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    p.add_argument("--noise", type=float, default=1.0, help="DP noise multiplier [1.0]")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the two throughputs and their ratio."""
    args = parse_args(argv)
    os.environ.setdefault("FEDREC_DATA", str(REPO.parent / "shared" / "datasets"))
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", category=FutureWarning)

    from fedrec.build import build_encoder, build_task, load_datasets
    from fedrec.config import register_configs, validate
    from fedrec.privacy import count_users, plan_private, train_private
    from fedrec.train import fit

    register_configs()
    model = "tiny" if args.backbone == "tiny" else "minilm_lora"
    overrides = [
        f"platform={args.platform}",
        "mode=local",
        f"model={model}",
        "privacy=dp",
        f"privacy.noise_multiplier={args.noise}",
        f"train.batch_size={args.batch}",
        "train.progress=false",
        "data.download=false",
        *args.overrides,
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    block = args.block or (10 if args.backbone == "tiny" else 4)
    t0 = time.perf_counter()
    data = load_datasets(cfg)[args.platform]
    encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
    task = build_task(cfg, data, encoder, tokenizer)
    print(f"built {args.platform} with {args.backbone} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    t = cfg.train
    common = dict(lr=t.lr, head_lr=t.head_lr, num_negatives=t.num_negatives, index_refresh_steps=t.index_refresh_steps)
    plan = plan_private(
        count_users(task),
        args.batch,
        steps_per_round=block,
        noise_multiplier=args.noise,
        max_grad_norm=cfg.privacy.max_grad_norm,
    )
    # warm-up (allocations, first-call overheads) in both modes, not timed
    fit([task], epochs=1, batch_size=args.batch, max_steps=2, progress=False, **common)  # type: ignore[arg-type]
    train_private(task, plan, progress=False, **common)  # type: ignore[arg-type]
    seen = {"non-DP": 0, "DP": 0}
    spent = {"non-DP": 0.0, "DP": 0.0}
    pair_ratios = []
    seed = 0
    while min(spent.values()) < args.seconds:
        seed += 1
        block_rate = {}
        for mode in ("non-DP", "DP") if seed % 2 else ("DP", "non-DP"):  # ABBA: drift hits both alike
            if mode == "non-DP":
                r = fit([task], epochs=1, batch_size=args.batch, max_steps=block, seed=seed, progress=False, **common)  # type: ignore[arg-type]
                n = sum(r.num_examples.values())
            else:
                r = train_private(task, plan, seed=seed, progress=False, **common)  # type: ignore[arg-type]
                n = r.sampled_examples
            seen[mode] += n
            spent[mode] += r.seconds
            block_rate[mode] = n / r.seconds
        pair_ratios.append(block_rate["DP"] / block_rate["non-DP"])
    rate = {k: seen[k] / spent[k] for k in seen}
    m = cfg.model
    print(
        f"config: platform={args.platform} backbone={m.backbone} lora_layers={m.lora_layers} r={m.lora_r} "
        f"bf16={m.bf16} item_tower={m.item_tower} hybrid={m.hybrid} batch={args.batch} "
        f"negatives={t.num_negatives} threads={args.threads} noise={args.noise} block={block} steps"
    )
    for k in ("non-DP", "DP"):
        print(f"{k:>6}: {rate[k]:8.1f} examples/s  ({seen[k]} examples in {spent[k]:.1f}s)")
    print(f" ratio: {rate['DP'] / rate['non-DP']:.3f} (DP / non-DP, totals)")
    print(
        f" ratio: {statistics.median(pair_ratios):.3f} (median of {len(pair_ratios)} adjacent block pairs; "
        "robust to load from other processes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
