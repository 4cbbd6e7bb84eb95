"""Local-only models of some platforms (the federation's comparison, alone), with config overrides.

Prints one JSON line: the overrides, the seconds and each platform's test NDCG@10 (served,
personal, shared part). Used to check the personal fit's epoch cap on video:

    FEDREC_DATA=../shared/datasets python simulations/local_only.py video 0 \\
        model.seq.personal_epochs=100 model.seq.personal_patience=3

The log shows the personal fit's chosen epoch (``personal model, epoch E (best of N run ...)``).
"""

from __future__ import annotations

import json
import logging
import sys
import time


def main(argv: list[str]) -> int:
    """``<platform[,platform...]> <seed> [override ...]``."""
    from fedrec.config import compose_config
    from fedrec.federated.compare import local_only

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    platforms, seed, *over = argv
    base = ["train.progress=false", f"platform=[{platforms}]", "train.threads=1", "federation.client_cpus=1"]
    cfg = compose_config([*base, *over, f"seed={seed}"], command="simulate")
    t = time.time()
    lo = local_only(cfg, progress=False)
    test = {p: {k: v for k, v in m["test"].items() if k.endswith("NDCG@10")} for p, m in lo["models"].items()}
    print(json.dumps({"over": over, "seed": int(seed), "seconds": round(time.time() - t), "test": test}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
