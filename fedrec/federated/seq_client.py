"""A federated client's rounds with the sequence model (``model.kind=seqrec``).

:class:`~fedrec.federated.client.PlatformClient` delegates here when its platform runs the
sequence model (:class:`~fedrec.seqrec.platform.SeqPlatform`):

* **train**: load the global shared state and the platform's own state of the previous round
  (local parts, the optimiser, so Adam continues across rounds), train the shared part on the
  text-path loss, save the platform's state, send the shared state;
* **train under DP**: the same round as user-level DP-SGD with whole-user rows
  (:func:`fedrec.seqrec.private.train_shared_private`), charged to the node's ledger;
* **evaluate**: on ``valid`` each round the shared part alone (what was federated); on
  ``test`` with the best round's state, the platform first fits what it serves
  (:func:`fedrec.seqrec.serving.fit_serving`: its personal model, the shared part plus item-ID
  embeddings on its data only, and its prior), saves the personal model with its local state,
  and reports the served model's metrics with the parts' beside them (``shared-<metric>``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedrec.federated.client import PlatformClient, TrainOutcome
    from fedrec.privacy import PrivacyLedger
    from fedrec.privacy.dpsgd import PrivateFitResult

log = logging.getLogger("fedrec.federated")


def load(client: PlatformClient, global_state: dict[str, np.ndarray], local_round: int) -> None:
    """Load the global shared state, then the platform's own state of the latest round ``<= local_round``."""
    assert client.seq is not None
    client.seq.load_shared(global_state)
    found = client.store.load(local_round)
    client.seq.load_local_state(found[1] if found is not None else None)


def train(client: PlatformClient, server_round: int, seed: int) -> TrainOutcome:
    """One non-private local round of the shared part (the state is loaded already)."""
    from fedrec.federated.client import TrainOutcome

    assert client.seq is not None
    seq = client.cfg.model.seq
    stats = client.seq.train(float(client.cfg.federation.local_epochs), int(seq.batch_size), seed)
    client.store.save(server_round, client.seq.local_state())
    return TrainOutcome(
        state=client.seq.shared_state(),
        num_examples=stats.rows,
        loss=stats.loss,
        steps=stats.steps,
        seconds=stats.seconds,
    )


def train_private(client: PlatformClient, ledger: PrivacyLedger, server_round: int, seed: int) -> PrivateFitResult:
    """One user-level DP-SGD round of the shared part, charged to ``ledger`` (its result; the client replies)."""
    from fedrec.privacy import plan_from_config
    from fedrec.seqrec.private import train_shared_private

    assert client.seq is not None
    task = client.seq.task
    plan = plan_from_config(client.cfg, len(task.trainable_users), federated=True)
    one = str(client.cfg.privacy.get("rows", "whole")) == "one"
    return train_shared_private(task, plan, client.seq.optimizer, ledger, seed, server_round, one_target=one)


def evaluate(client: PlatformClient, split: str, local_round: int, users: list[int] | None) -> dict[str, float]:
    """Metrics on ``split``: the shared part on ``valid``; on ``test`` the served model, fitted first."""
    from fedrec.seqrec.serving import fit_serving, served_metrics

    assert client.seq is not None
    batch = int(client.cfg.train.eval_batch_size)
    if split != "test":
        return client.seq.task.evaluate(split, "shared", users=users, batch_size=batch)
    had = client.seq.task.personal is not None
    fit_serving(client.seq, client.cfg, int(client.cfg.seed) + local_round)
    if not had and client.seq.task.personal is not None:
        client.store.save(local_round, client.seq.local_state())  # the personal model, on the platform's disk
    return served_metrics(client.seq, split, users, batch)
