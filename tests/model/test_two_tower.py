"""Two-tower loss: per-example, no in-batch coupling, straight-through positive."""

from __future__ import annotations

import numpy as np
import torch

from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.model.two_tower import PlatformHead
from fedrec.task import PlatformTask, build_examples
from tests.synthetic import synthetic_platform


def _task(hybrid: bool = True, item_tower: str = "frozen") -> PlatformTask:
    data = synthetic_platform()
    bert, tok = load_backbone("tiny")
    encoder = LoraEncoder(bert, r=4, lora_layers=1)
    head = PlatformHead(data.num_items, 8) if hybrid else None
    inputs = TextInputs(data, tok, 16, 32, 8)
    return PlatformTask(data, inputs, encoder, head=head, item_tower=item_tower, progress=False)


def test_examples_follow_the_history_order() -> None:
    data = synthetic_platform()
    ex = build_examples(data, per_user=2)
    for u, t, h in zip(ex.users, ex.targets, ex.histories, strict=True):
        seq = data.train[u].tolist()
        pos = seq.index(t)
        assert pos >= 1 and h.tolist() == seq[:pos]


def test_loss_of_a_row_does_not_depend_on_the_other_rows() -> None:
    task = _task()
    task.refresh_index()
    negatives = np.arange(task.data.num_items)
    rows = np.arange(6)
    together = task.model(**task.batch(rows, negatives))
    for r in rows:
        alone = task.model(**task.batch(np.array([r]), negatives))
        torch.testing.assert_close(alone[0], together[r], atol=1e-5, rtol=1e-5)


def test_positive_is_scored_with_the_index_value_but_trains_the_item_tower() -> None:
    task = _task(hybrid=False, item_tower="shared")
    task.refresh_index()
    batch = task.batch(np.arange(4), np.arange(task.data.num_items))
    stale = batch["pos_index"] + torch.randn_like(batch["pos_index"])  # another forward value
    loss_a = task.model(**batch)
    loss_b = task.model(**{**batch, "pos_index": stale})
    assert not torch.allclose(loss_a, loss_b)  # the value comes from pos_index
    loss_a.sum().backward()
    grads = [p.grad for n, p in task.encoder.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_history_and_positive_never_count_as_negatives() -> None:
    task = _task()
    task.refresh_index()
    rows = np.arange(3)
    batch = task.batch(rows, np.arange(task.data.num_items))
    for i, r in enumerate(rows):
        banned = set(task.examples.histories[r].tolist()) | {int(task.examples.targets[r])}
        allowed = set(np.flatnonzero(batch["neg_valid"][i].numpy()).tolist())
        assert allowed == set(range(task.data.num_items)) - banned


def test_frozen_item_tower_ignores_the_adapters() -> None:
    task = _task(hybrid=False, item_tower="frozen")
    first = task.refresh_index()
    before = first.clone()
    with torch.no_grad():
        for p in task.encoder.parameters():
            if p.requires_grad:
                p.add_(0.1)
    assert task.refresh_index() is first  # the static index is reused, not re-encoded
    task.index = None  # force a real re-encode with the changed adapters
    torch.testing.assert_close(task.refresh_index(), before)  # items: plain backbone
    shared = _task(hybrid=False, item_tower="shared")
    shared.encoder.load_adapter_state(task.encoder.adapter_state())
    assert not torch.allclose(shared.refresh_index(), before)  # shared: adapters change items
    # and the user tower does use the adapters in both modes
    rows = np.arange(3)
    b = task.batch(rows, np.arange(task.data.num_items))
    u_adapted, _ = task.model.user_vectors(b["user_hidden"], b["user_mask"], b["hist_ids"], b["hist_mask"])
    with task.encoder.peft.disable_adapter():
        u_plain, _ = task.model.user_vectors(b["user_hidden"], b["user_mask"], b["hist_ids"], b["hist_mask"])
    assert not torch.allclose(u_adapted, u_plain)
