"""The names of the ranking metrics, the one place every writer and reader of results takes them from.

:mod:`fedrec.evaluate` computes them (PROTOCOL.md); ``results.json``, the terminal tables and
the reports key each platform's numbers by these names. Code that picks one metric (model
selection on NDCG@10, a report column) uses the constants below, never a typed string.
"""

from __future__ import annotations

#: the protocol's cut-off of HR, NDCG and coverage
K = 10


def metric_names(k: int = K) -> tuple[str, str, str, str]:
    """``(HR@k, NDCG@k, MRR, coverage@k)``: the keys :mod:`fedrec.evaluate` reports at cut-off ``k``."""
    return f"HR@{k}", f"NDCG@{k}", "MRR", f"coverage@{k}"


#: the keys at the protocol's cut-off: hit rate, NDCG, mean reciprocal rank, catalogue coverage
HR, NDCG, MRR, COVERAGE = metric_names()
#: the protocol's ranking metrics, in table order
METRICS = (HR, NDCG, MRR)
#: reported beside them when present (catalogue coverage of the top-10 lists)
EXTRA_METRICS = (COVERAGE,)
