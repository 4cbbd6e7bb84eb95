"""The baselines of PROTOCOL.md as score functions for :func:`fedrec.evaluate.evaluate_rankings`.

- :class:`MostPop` (:mod:`.mostpop`): items scored by their number of train interactions.
- :class:`ItemKNN` (:mod:`.itemknn`): cosine item kNN on the binary train matrix, all neighbours.
- :class:`FrozenText` (:mod:`.frozen_text`): all-MiniLM-L6-v2 as shipped, mean of the last 20
  history item vectors, dot product.
- :class:`EASE` (:mod:`.ease`): Steck's closed form, λ chosen on the valid split.
- :class:`SASRec` (:mod:`.sasrec`): ID-only causal transformer, full softmax, early stopping on
  valid NDCG@10.

Every scorer is called as ``score_fn(user_indices, split) -> [len(user_indices), n_items]``
and uses only ``data.history(u, split)`` (train items; for test also the valid item).
:func:`run_baselines` (:mod:`.run`) runs any of them on several platforms.
"""

from fedrec.baselines.ease import EASE, EASE_LAMBDAS, SOCIAL_LAMBDAS, fit_ease
from fedrec.baselines.frozen_text import (
    FROZEN_TEXT_LAST_N,
    FROZEN_TEXT_MAX_TOKENS,
    FrozenText,
    encode_items,
    item_vectors_cache_path,
    texts_sha256,
)
from fedrec.baselines.itemknn import ItemKNN
from fedrec.baselines.matrix import history_matrix, train_matrix
from fedrec.baselines.mostpop import MostPop
from fedrec.baselines.run import BASELINES, FITTED, baseline_label, ease_grid, options_from_config, run_baselines
from fedrec.baselines.sasrec import SASRec, SASRecModel, fit_sasrec

__all__ = [
    "BASELINES",
    "EASE",
    "EASE_LAMBDAS",
    "FITTED",
    "FROZEN_TEXT_LAST_N",
    "FROZEN_TEXT_MAX_TOKENS",
    "SOCIAL_LAMBDAS",
    "FrozenText",
    "ItemKNN",
    "MostPop",
    "SASRec",
    "SASRecModel",
    "baseline_label",
    "ease_grid",
    "encode_items",
    "fit_ease",
    "fit_sasrec",
    "history_matrix",
    "item_vectors_cache_path",
    "options_from_config",
    "run_baselines",
    "texts_sha256",
    "train_matrix",
]
