"""The sequence model's parts from a resolved config (``model.kind=seqrec``).

Every platform and the server build the shared part from the same seed, so the federation
starts from one initial state; :func:`initial_state` is what the server sends in round 1.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from fedrec.data.types import PlatformData
from fedrec.federated.arrays import to_numpy
from fedrec.model.encoder import LoraEncoder
from fedrec.seqrec.model import SharedSequenceModel
from fedrec.seqrec.platform import SeqPlatform
from fedrec.seqrec.task import SeqTask
from fedrec.seqrec.text import ItemText
from fedrec.task import Catalogue


def is_seqrec(cfg: DictConfig) -> bool:
    """Whether the run's model is the sequence model."""
    return str(cfg.model.get("kind", "two_tower")) == "seqrec"


def build_shared(cfg: DictConfig, text_dim: int) -> SharedSequenceModel:
    """The shared part, initialised from ``cfg.seed`` (identical on every platform and the server)."""
    seq = cfg.model.seq
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(cfg.seed))
    try:
        model = SharedSequenceModel(
            text_dim,
            int(seq.dim),
            int(seq.max_history),
            int(seq.layers),
            int(seq.heads),
            float(seq.dropout),
            length_groups=int(seq.length_groups),
        )
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def build_platform(cfg: DictConfig, data: PlatformData, encoder: LoraEncoder, catalogue: Catalogue) -> SeqPlatform:
    """One platform's :class:`SeqPlatform` (its task, shared part and optimiser)."""
    seq = cfg.model.seq
    text = ItemText(catalogue, encoder, adapter=bool(seq.train_adapter), batch_size=int(cfg.train.eval_batch_size))
    task = SeqTask(
        data,
        text,
        build_shared(cfg, text.dim),
        holdout=float(seq.holdout),
        fresh_items=int(seq.fresh_items),
        refresh_steps=int(seq.refresh_steps),
    )
    return SeqPlatform(task, lr=shared_lr(cfg), adapter_lr=float(seq.adapter_lr), local_parts=list(seq.local_parts))


def shared_lr(cfg: DictConfig) -> float:
    """The shared part's learning rate: ``privacy.lr`` in a DP run when it is set, else ``model.seq.lr``."""
    priv = cfg.get("privacy")
    if priv is not None and priv.enabled and float(priv.get("lr", 0.0)) > 0:
        return float(priv.lr)
    return float(cfg.model.seq.lr)


def initial_state(cfg: DictConfig, encoder: LoraEncoder) -> dict[str, np.ndarray]:
    """The federation's initial shared state (names as :meth:`SeqPlatform.shared_state`)."""
    shared = build_shared(cfg, int(encoder.hidden_size))
    out = {f"shared.{k}": v.detach() for k, v in shared.named_parameters()}
    if cfg.model.seq.train_adapter:
        out.update({f"adapter.{k}": v.detach() for k, v in encoder.named_parameters() if v.requires_grad})
    return to_numpy(out)
