"""The names of the ranking metrics, the one place every writer and reader of results takes them from.

:mod:`fedrec.evaluate` computes them (PROTOCOL.md); ``results.json``, the terminal tables and
the reports key each platform's numbers by these names.
"""

from __future__ import annotations

#: the protocol's ranking metrics, in table order
METRICS = ("HR@10", "NDCG@10", "MRR")
#: reported beside them when present (catalogue coverage of the top-10 lists)
EXTRA_METRICS = ("coverage@10",)
