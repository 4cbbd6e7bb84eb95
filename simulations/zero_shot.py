"""Leave-one-platform-out: federate the sequence model on two platforms, score the third untrained.

For each held-out platform, a federated run (in process, the clients and server of
``fedrec.federated.local.run_local``) on the other two; then the held-out platform's test users
are scored by the federation's best shared part (the text path: its catalogue's text vectors
through the shared adaptor and encoder; no training, no ID embeddings) against the frozen-text
baseline (PROTOCOL.md) and the untrained shared part. Prints one JSON line per held-out
platform and a Markdown table.

    FEDREC_DATA=../shared/datasets python simulations/zero_shot.py seed=0 [overrides...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from fedrec.baselines import run_baselines
from fedrec.build import load_datasets
from fedrec.config import compose_config
from fedrec.federated.arrays import to_numpy
from fedrec.federated.local import run_local
from fedrec.seqrec.local import build_platforms

PLATFORMS = ("ecommerce", "video", "social")


def main(overrides: list[str]) -> list[dict]:
    rows = []
    for held in PLATFORMS:
        train_on = [p for p in PLATFORMS if p != held]
        cfg = compose_config([f"platform=[{','.join(train_on)}]", "train.progress=false", *overrides])
        with tempfile.TemporaryDirectory() as out:
            run_local(cfg, out)
            best = to_numpy(torch.load(Path(out) / "best_adapter.pt", weights_only=True))
        target = compose_config([f"platform=[{held}]", "train.progress=false", *overrides])
        (plat,) = build_platforms(target).values()
        untrained = plat.task.evaluate("test", "shared")["NDCG@10"]
        plat.load_shared(best, include_local=True)
        joint = plat.task.evaluate("test", "shared")["NDCG@10"]
        frozen = run_baselines(load_datasets(target), ["frozen_text"], ["test"], progress=False)
        row = {
            "held_out": held,
            "trained_on": train_on,
            "seed": int(cfg.seed),
            "joint_shared_part": joint,
            "frozen_text": frozen[held]["frozen_text"]["test"]["NDCG@10"],
            "untrained_shared_part": untrained,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| held-out platform | trained on | joint shared part | frozen text | untrained |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['held_out']} | {' + '.join(r['trained_on'])} | {r['joint_shared_part']:.4f} | "
            f"{r['frozen_text']:.4f} | {r['untrained_shared_part']:.4f} |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
