"""The local trainer: adapters move, the backbone does not, the model learns."""

from __future__ import annotations

import pytest
import torch

from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.model.two_tower import PlatformHead
from fedrec.task import PlatformTask
from fedrec.train import fit
from tests.synthetic import synthetic_platform


def _task(lora_layers: int = 1) -> PlatformTask:
    torch.manual_seed(0)
    data = synthetic_platform(num_users=48)
    bert, tok = load_backbone("tiny", tiny_layers=2, tiny_hidden=32)
    encoder = LoraEncoder(bert, r=4, lora_layers=lora_layers)
    head = PlatformHead(data.num_items, 8)
    return PlatformTask(data, TextInputs(data, tok, 16, 32, 8), encoder, head=head, examples_per_user=2, progress=False)


def test_lora_weights_change_and_frozen_backbone_does_not() -> None:
    task = _task()
    frozen = {n: p.detach().clone() for n, p in task.encoder.named_parameters() if not p.requires_grad}
    before = task.encoder.adapter_state()
    result = fit([task], epochs=1, batch_size=8, num_negatives=-1, progress=False)
    after = task.encoder.adapter_state()
    assert result.steps == 12 and result.num_examples == {"synthetic": 96}
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not move"
    for name, p in task.encoder.named_parameters():
        if not p.requires_grad:
            assert torch.equal(frozen[name], p), f"frozen {name} changed"


def test_training_improves_validation_on_a_learnable_platform() -> None:
    task = _task()
    before = task.evaluate("valid")
    fit(
        [task], epochs=15, batch_size=16, lr=5e-3, head_lr=1e-2, num_negatives=-1, index_refresh_steps=2, progress=False
    )
    after = task.evaluate("valid")
    assert after["loss"] < before["loss"] - 0.3
    assert after["NDCG@10"] > before["NDCG@10"]


def test_cached_evaluation_states_score_like_a_full_forward(tmp_path) -> None:
    """Evaluation reads the lower layers of the split's user texts from a cache: same scores as raw texts."""
    task = _task(lora_layers=1)
    fit([task], epochs=1, batch_size=8, num_negatives=-1, progress=False)  # non-zero adapter and head
    task.cache_dir = str(tmp_path)
    users = [0, 5, 17, 47]
    for split in ("valid", "test"):
        cached = task.score_users(users, split)
        u_text, u_id = task.user_vectors([task.data.history(u, split) for u in users], users)
        raw = task.model.scores(u_text, u_id, task.index)
        torch.testing.assert_close(cached, raw, rtol=1e-5, atol=1e-5)
    assert len(list(tmp_path.glob("lower-*.pt"))) == 2  # one disk cache per split


def test_a_validation_subset_computes_only_its_users_and_scores_like_all(tmp_path) -> None:
    """``evaluate(users=...)`` runs the lower layers for those users only; their scores match the full states."""
    from fedrec.evaluate import validation_users

    task = _task(lora_layers=1)
    fit([task], epochs=1, batch_size=8, num_negatives=-1, progress=False)
    task.cache_dir = str(tmp_path)
    users = validation_users(task.data.num_users, 10, seed=0)
    assert users == validation_users(task.data.num_users, 10, seed=0) and len(set(users)) == 10
    sub = task.evaluate("valid", users=users)
    rows, _, hidden = task.eval_states("valid", users)
    assert hidden.shape[0] == 10 and sorted(int(r) for r in rows[users]) == list(range(10))
    assert int((rows >= 0).sum()) == 10  # no other user's texts went through the lower layers
    with pytest.raises(ValueError, match="outside the evaluated subset"):
        task.score_users([u for u in range(task.data.num_users) if u not in users][:1], "valid", users)
    subset_scores = task.score_users(users, "valid", users)
    full_scores = task.score_users(users, "valid")  # every user's states, computed now
    torch.testing.assert_close(subset_scores, full_scores, rtol=1e-5, atol=1e-5)
    assert sub["users"] == 10 and task.evaluate("valid", users=users) == sub


def test_the_frozen_item_index_is_cached_on_disk_and_equals_a_fresh_one(tmp_path) -> None:
    """The frozen tower's index depends on the backbone and the catalogue only: computed once, then read."""
    task = _task()
    task.cache_dir = str(tmp_path)
    computed = task.refresh_index().clone()
    (path,) = tmp_path.glob("index-*.pt")
    fit([task], epochs=1, batch_size=8, num_negatives=-1, progress=False)  # adapters move: the frozen index must not
    other = _task()  # another process's task: reads the file
    other.cache_dir = str(tmp_path)
    torch.testing.assert_close(other.refresh_index(), computed)
    torch.save(torch.full_like(computed, 3.0), path)  # proof that it is read, not recomputed
    third = _task()
    third.cache_dir = str(tmp_path)
    assert bool((third.refresh_index() == 3.0).all())
    path.write_bytes(b"corrupt")  # a corrupt or mis-shaped file is recomputed and rewritten
    fourth = _task()
    fourth.cache_dir = str(tmp_path)
    torch.testing.assert_close(fourth.refresh_index(), computed)
    torch.testing.assert_close(torch.load(path, weights_only=True), computed)
