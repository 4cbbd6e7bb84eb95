"""Non-private vs DP throughput: now ``fedrec bench train`` (:mod:`fedrec.cli.bench.train`); this script forwards to it.

Every row of ``fedrec bench train`` runs both trainers on the same task in alternating
blocks and reports the DP / non-DP ratio (median over adjacent block pairs)::

    FEDREC_DATA=../shared/datasets python simulations/bench/dp_throughput.py --smoke   # tiny random BERT
    FEDREC_DATA=../shared/datasets python simulations/bench/dp_throughput.py --grid full
"""

from __future__ import annotations

import sys

from fedrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
