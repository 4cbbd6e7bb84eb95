"""Training throughput: now ``fedrec bench train`` (:mod:`fedrec.cli.bench.train`); this script forwards to it.

``fedrec bench train`` measures non-private and DP training on the same task, row by row
(LoRA placement, precision, user-text length), with medians over blocks, the DP / non-DP
ratio and peak RSS, and writes ``outputs/bench/bench_train.json``::

    FEDREC_DATA=../shared/datasets python simulations/bench/train_throughput.py [fedrec bench train options]
"""

from __future__ import annotations

import sys

from fedrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
