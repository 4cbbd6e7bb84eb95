"""The round of a secure aggregation (SecAgg+): the server takes a mean it never saw the parts of.

The Flower side (the protocol's four stages) is ``server/secagg.py``; this is what the
:class:`~fedrec.federated.server.Coordinator` does with its result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec.federated.aggregate import check_update
from fedrec.federated.messages import ClientUpdate
from fedrec.federated.robust import update_norm

if TYPE_CHECKING:
    from fedrec.federated.server import Coordinator


def train_entry(u: ClientUpdate) -> dict[str, Any]:
    """What the round's history records of a client's training reply."""
    metrics = {k: float(v) for k, v in u.metrics.items()}
    return {"num_examples": int(u.num_examples), "bytes_up": u.nbytes, **metrics}  # type: ignore[call-overload]


def aggregate_sum(
    co: Coordinator,
    server_round: int,
    merged: dict[str, np.ndarray] | None,
    contributors: Sequence[ClientUpdate],
    dropped: Sequence[dict[str, Any]],
) -> dict[str, np.ndarray] | None:
    """Take an aggregate formed without the server seeing any update (secure aggregation) as the round's.

    ``merged`` is the example-weighted mean of the contributors' adapters, unmasked by
    the protocol (None: it halted); ``contributors`` carry no arrays, only what each
    client sent in the clear (example count, metrics). Nothing per update can be
    checked: the round is discarded (the global adapter unchanged) when a contributor
    is not the client its node is registered as (its share cannot be taken out of the
    sum) or the mean itself is mis-shaped or not finite. The server optimiser steps on
    the mean as on any aggregate.

    Parameters
    ----------
    co : Coordinator
        The run's coordinator; its round bookkeeping (``pending``) and global adapter are updated.
    server_round : int
        The round.
    merged : dict or None
        The unmasked mean (None: the protocol halted).
    contributors : sequence of ClientUpdate
        What each contributing client sent in the clear.
    dropped : sequence of dict
        The sampled clients that dropped out of the protocol.

    Returns
    -------
    dict or None
        The new global adapter, or None if the round was discarded.
    """
    started = time.perf_counter()
    kept, impostors = co.identity.screen(f"round {server_round}", contributors)
    rejected = [{**co.who(u), "node": u.node, "reason": why} for u, why in impostors]
    secure: dict[str, Any] = {"clients": sorted(u.name for u in kept), "dropped": list(dropped)}
    co.pending = {"train": {u.name: train_entry(u) for u in kept}, "rejected": rejected}
    problem = "the protocol halted (too few clients answered)" if merged is None else None
    if problem is None and impostors:
        problem = "an unregistered node's update is in the sum"
    if problem is None:
        assert merged is not None
        problem = check_update(merged, co.expected)
    if problem is not None:
        secure["discarded"] = problem
        co.pending |= {"secure_aggregation": secure, "aggregate_seconds": time.perf_counter() - started}
        co.log(logging.WARNING, f"round {server_round}: secure aggregate discarded: {problem}")
        return None
    assert merged is not None
    merged = {k: v.astype(co.global_state[k].dtype) for k, v in merged.items()}
    secure["aggregate_norm"] = update_norm(merged, co.global_state)  # the mean's change: all the server sees
    co.global_state = co.server_opt.step(server_round, co.global_state, merged)
    co.pending |= {"secure_aggregation": secure, "aggregate_seconds": time.perf_counter() - started}
    return co.global_state
