"""A platform's side of the sequence model in a federation: what it sends, keeps, trains and serves.

:class:`SeqPlatform` wraps a :class:`~fedrec.seqrec.task.SeqTask` with the federation's view:

* **shared state** (sent every round): every tensor of the shared part, and the LoRA adapter
  when it is trained. Tensors named in ``local_parts`` (e.g. the text adaptor) are sent too
  (the server's average of them serves a platform that has none, such as an unseen one), but
  the platform keeps training its own copy: loading a global state leaves them alone.
* **local state** (never sent, on the platform's disk each round): its own copies of the local
  parts, the optimiser's state (so training continues across rounds instead of restarting),
  the personal model and the weight of its prior.
* **finalize**: after the last round the platform fits its personal model
  (:meth:`SeqTask.personalize`), choosing the epoch on its own validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedrec.federated.arrays import to_numpy, to_torch
from fedrec.metrics import NDCG
from fedrec.seqrec.model import PersonalModel
from fedrec.seqrec.prior import Prior
from fedrec.seqrec.task import SeqTask
from fedrec.steps import StepStats


class SeqPlatform:
    """The sequence model of one platform (or user shard) as a federated client holds it.

    Parameters
    ----------
    task : SeqTask
        The platform's task.
    lr : float, default 1e-3
        Adam learning rate of the shared part (and of the adapter when it is trained).
    adapter_lr : float, default 1e-4
        Adam learning rate of the LoRA adapter (when it is trained).
    local_parts : sequence of str, default ()
        Prefixes of shared-model tensors the platform keeps its own copy of (``"adaptor"``).
    """

    def __init__(
        self, task: SeqTask, lr: float = 1e-3, adapter_lr: float = 1e-4, local_parts: Sequence[str] = ()
    ) -> None:
        self.task, self.local_parts = task, tuple(local_parts)
        groups: list[dict[str, Any]] = [{"params": list(task.shared.parameters()), "lr": lr}]
        if task.text.adapter:
            groups.append({"params": self.adapter_parameters(), "lr": adapter_lr})
        self.optimizer = torch.optim.Adam(groups)
        self._initial_optimizer = {k: v for k, v in self.optimizer.state_dict().items()}

    @property
    def name(self) -> str:
        """Platform name."""
        return self.task.name

    # -- what is sent ---------------------------------------------------------------------
    def adapter_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA adapter's trainable tensors (empty when the adapter is frozen)."""
        enc = self.task.text.encoder
        return [p for p in enc.parameters() if p.requires_grad] if self.task.text.adapter else []

    def _named(self) -> dict[str, torch.nn.Parameter]:
        out = {f"shared.{k}": v for k, v in self.task.shared.named_parameters()}
        if self.task.text.adapter:
            out.update({f"adapter.{k}": v for k, v in self.task.text.encoder.named_parameters() if v.requires_grad})
        return out

    def is_local(self, name: str) -> bool:
        """Whether tensor ``name`` of the shared state is one of the platform's local parts."""
        return any(name.startswith(f"shared.{p}.") for p in self.local_parts)

    def shared_state(self) -> dict[str, np.ndarray]:
        """Every tensor the platform sends (names ``shared.*`` and ``adapter.*``): a snapshot, not a view."""
        return to_numpy({k: v.detach().clone() for k, v in self._named().items()})

    def load_shared(self, state: dict[str, np.ndarray], include_local: bool = False) -> None:
        """Load a global state; the local parts keep the platform's own values unless ``include_local``.

        Raises
        ------
        ValueError
            On a missing, unexpected or mis-shaped tensor.
        """
        named = self._named()
        missing, unexpected = set(named) - set(state), set(state) - set(named)
        if missing or unexpected:
            raise ValueError(
                f"shared state mismatch: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        tensors = to_torch(state)
        with torch.no_grad():
            for k, p in named.items():
                if include_local or not self.is_local(k):
                    if tuple(tensors[k].shape) != tuple(p.shape):
                        raise ValueError(f"tensor {k} has shape {tuple(tensors[k].shape)}, expected {tuple(p.shape)}")
                    p.copy_(tensors[k])
        if self.task.text.adapter:
            self.task.text.refresh()

    # -- what stays -----------------------------------------------------------------------
    def local_state(self) -> dict[str, Any]:
        """The platform's own state: local parts, optimiser, personal model, prior weight."""
        named = self._named()
        out: dict[str, Any] = {
            "local": {k: v.detach().clone() for k, v in named.items() if self.is_local(k)},
            "optimizer": self.optimizer.state_dict(),
        }
        if self.task.personal is not None:
            out["personal"] = {k: v.detach().clone() for k, v in self.task.personal.state_dict().items()}
        return out

    def load_local_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`local_state` (None: the platform's initial state)."""
        if not state:
            self.optimizer.load_state_dict(self._initial_optimizer)
            self.task.personal = None
            return
        named = self._named()
        with torch.no_grad():
            for k, v in state.get("local", {}).items():
                named[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        if "personal" in state:
            self.task.personal = PersonalModel(self.task.shared, self.task.data.num_items)
            self.task.personal.load_state_dict(state["personal"])
        else:
            self.task.personal = None

    # -- training -------------------------------------------------------------------------
    def train(self, epochs: float, batch_size: int, seed: int) -> StepStats:
        """A round of local training of the shared part (text-path loss)."""
        return self.task.train_shared(self.optimizer, epochs, batch_size, np.random.default_rng(seed))

    def finalize(
        self,
        epochs: int,
        batch_size: int,
        lr: float,
        seed: int,
        eval_every: int = 5,
        max_users: int = -1,
        patience: int = 0,
    ) -> dict[str, Any]:
        """Fit the personal model, keeping the epoch with the best validation NDCG@10 (the platform's own split).

        ``patience`` > 0 stops after that many validations in a row without a better NDCG@10
        (early stopping; the best validated epoch is kept either way).

        Returns
        -------
        dict
            ``epochs`` (the chosen one), ``valid`` (its validation NDCG@10), ``trained`` (epochs
            run), ``seconds``.
        """
        rng = np.random.default_rng(seed)
        users = None
        if 0 < max_users < self.task.data.num_users:
            users = sorted(rng.choice(self.task.data.num_users, max_users, replace=False).tolist())
        best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)
        done, seconds, stale = 0, 0.0, 0
        self.task.personal = None
        while done < epochs and not (patience > 0 and stale >= patience):
            step = min(eval_every, epochs - done)
            stats = self.task.personalize(step, batch_size, lr, rng, resume=done > 0)
            done += step
            seconds += stats.seconds
            ndcg = self.task.evaluate("valid", "personal", users=users)[NDCG]
            stale += 1
            if ndcg > best[0]:
                assert self.task.personal is not None
                best = (ndcg, done, {k: v.detach().clone() for k, v in self.task.personal.state_dict().items()})
                stale = 0
        assert self.task.personal is not None and best[2] is not None
        self.task.personal.load_state_dict(best[2])
        return {"epochs": best[1], "valid": best[0], "trained": done, "seconds": seconds}

    def fit_prior(self, prior: Prior, weights: Sequence[float], batch_size: int = 256) -> Prior:
        """Attach ``prior`` with the blend weight of the best validation NDCG@10 (ties: the smaller weight)."""
        self.task.prior = prior
        res = self.task.evaluate_blends("valid", list(weights), "personal", batch_size=batch_size)
        prior.weight = float(max(weights, key=lambda w: (res[w][NDCG], -w)))
        prior.info[f"valid_{NDCG}"] = {f"{w:g}": res[w][NDCG] for w in weights}
        return prior
