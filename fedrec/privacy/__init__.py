"""User-level differential privacy for local training (DP-SGD with Opacus).

The guarantee: the adapter (and platform-local head) a platform trains, over all the
rounds it takes part in, is (epsilon, delta)-DP with respect to adding or removing any
one of its users -- the user's whole history is the unit (PROTOCOL.md). See
:mod:`fedrec.privacy.dpsgd` for how a step works, :mod:`fedrec.privacy.accounting` for
the cumulative ledger, :mod:`fedrec.privacy.ledgers` for where a node keeps it (keyed by
the training data: :mod:`fedrec.privacy.fingerprint`) and :mod:`fedrec.privacy.node_caps`
for the limits a node sets itself. The threat model: docs/PRIVACY.md.

Importing the package does not import Opacus (~3.5 s, what a ClientApp process without DP would pay
on every message): the accountant and the per-sample gradient machinery import it where they are
used, and the per-sample names below are loaded on first access.
"""

from typing import TYPE_CHECKING, Any

from fedrec.privacy.accounting import (
    ACCOUNTANTS,
    PrivacyLedger,
    calibrate_noise,
    epsilon_of,
    merge_history,
)
from fedrec.privacy.dpsgd import (
    DPPlan,
    PrivateFitResult,
    check_user_level,
    count_users,
    dp_steps,
    ledger_from_config,
    plan_from_config,
    plan_private,
    train_private,
    train_private_from_config,
)
from fedrec.privacy.fingerprint import training_fingerprint
from fedrec.privacy.ledgers import LedgerError, LedgerStore
from fedrec.privacy.node_caps import NodeCaps
from fedrec.privacy.sampling import UserSampler

if TYPE_CHECKING:  # for the type checker; at run time loaded on first access (__getattr__ below)
    from fedrec.privacy.per_sample import (
        EmbeddingGradCollector,
        FP32DPOptimizer,
        FP32GradSampleModule,
        PerSampleGradients,
    )

__all__ = [
    "ACCOUNTANTS",
    "DPPlan",
    "EmbeddingGradCollector",
    "FP32DPOptimizer",
    "FP32GradSampleModule",
    "LedgerError",
    "LedgerStore",
    "NodeCaps",
    "PerSampleGradients",
    "PrivacyLedger",
    "PrivateFitResult",
    "UserSampler",
    "calibrate_noise",
    "check_user_level",
    "count_users",
    "dp_steps",
    "epsilon_of",
    "ledger_from_config",
    "merge_history",
    "plan_from_config",
    "plan_private",
    "train_private",
    "train_private_from_config",
    "training_fingerprint",
]


#: names of :mod:`fedrec.privacy.per_sample` (which subclasses Opacus's classes), loaded on first access
_PER_SAMPLE = ("EmbeddingGradCollector", "FP32DPOptimizer", "FP32GradSampleModule", "PerSampleGradients")


def __getattr__(name: str) -> Any:
    if name in _PER_SAMPLE:
        from fedrec.privacy import per_sample

        return getattr(per_sample, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
