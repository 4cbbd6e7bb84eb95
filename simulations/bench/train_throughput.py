"""Training throughput of the local trainer on real data, several settings in one run.

Prints examples/s per setting and each setting's ratio to the first, all measured in the
same process (ratios are what to compare; absolute numbers depend on the machine).

    FEDREC_DATA=../shared/datasets python simulations/bench/train_throughput.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from fedrec.build import build_encoder, build_task, load_datasets
from fedrec.config import register_configs
from fedrec.train import fit

SETTINGS = {
    "top-2 LoRA, lower 4 cached, bf16": ["model.lora_layers=2", "model.bf16=true"],
    "top-2 LoRA, lower 4 cached, fp32": ["model.lora_layers=2", "model.bf16=false"],
    "top-1 LoRA, lower 5 cached, bf16": ["model.lora_layers=1", "model.bf16=true"],
    "LoRA on all 6 layers, bf16": ["model.lora_layers=0", "model.bf16=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="video")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per setting (default 30)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    args = parser.parse_args()
    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    rows = []
    for name, overrides in SETTINGS.items():
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("config", overrides=[f"platform={args.platform}", "train.progress=false", *overrides])
        torch.set_num_threads(cfg.train.threads)
        data = load_datasets(cfg)[args.platform]
        encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
        task = build_task(cfg, data, encoder, tokenizer)
        fit([task], batch_size=args.batch_size, max_steps=3, progress=False)  # warm-up
        start = time.perf_counter()
        res = fit([task], batch_size=args.batch_size, max_steps=args.steps, progress=False)
        rows.append({"setting": name, "examples_per_s": res.examples_per_second, "wall_s": time.perf_counter() - start})
    base = rows[0]["examples_per_s"]
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; platform={args.platform}, batch {args.batch_size}"
    )
    print(f"{'setting':40s} {'examples/s':>11s} {'ratio':>6s}")
    for r in rows:
        r["ratio"] = r["examples_per_s"] / base
        print(f"{r['setting']:40s} {r['examples_per_s']:11.1f} {r['ratio']:6.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
