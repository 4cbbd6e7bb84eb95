"""A tiny sequence-model task on the synthetic platform (random tiny BERT, real code paths)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedrec.data import PlatformData
from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.seqrec.model import SharedSequenceModel
from fedrec.seqrec.task import SeqTask
from fedrec.seqrec.text import ItemText
from fedrec.task import Catalogue
from tests.synthetic import synthetic_platform


def make_seq_task(data: PlatformData | None = None, adapter: bool = False, seed: int = 0) -> SeqTask:
    """A SeqTask on a tiny random BERT (the synthetic platform by default)."""
    data = data or synthetic_platform()
    bert, tok = load_backbone("tiny", tiny_layers=2, tiny_hidden=32)
    enc = LoraEncoder(bert, r=4, alpha=8.0, lora_layers=1, init_seed=seed)
    catalogue = Catalogue.build(data, TextInputs(data, tok, item_max_tokens=16), enc, progress=False)
    torch.manual_seed(seed)
    shared = SharedSequenceModel(32, dim=16, max_len=8, layers=1, heads=2, dropout=0.0)
    return SeqTask(data, ItemText(catalogue, enc, adapter=adapter), shared, fresh_items=16, refresh_steps=2)


@pytest.fixture
def make_task() -> Callable[..., SeqTask]:
    """``make_task(data=None, adapter=False, seed=0)``: :func:`make_seq_task`."""
    return make_seq_task
