"""Per-sample gradients equal one-example-at-a-time gradients on the real model shape.

The model shape: one shared LoRA encoder used by both towers (user text and the positive
item, ``item_tower="shared"``), the hybrid ID head on, catalogue negatives. The per-sample
gradients come from :class:`fedrec.privacy.PerSampleGradients`, what the DP trainer uses
(Opacus hooks for the LoRA linears, the exact sparse collector for the ID embeddings); the
reference is ``torch.autograd.grad`` of each example's loss alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.privacy import EmbeddingGradCollector, FP32DPOptimizer, PerSampleGradients
from fedrec.task import PlatformTask
from tests.privacy.conftest import make_task, one_row_per_user, trainable

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def per_sample_vs_loop(task: PlatformTask, rows: np.ndarray, negatives: np.ndarray) -> float:
    """Max over rows and parameters of ``|g_opacus - g_loop| / |g_loop|``; asserts every gradient is non-zero."""
    task.model.train()
    params = trainable(task)
    per_sample = PerSampleGradients(task.model)
    try:
        per_sample(**task.batch(rows, negatives)).sum().backward()
        dense = per_sample.dense([p for _, p in params], len(rows))
        opacus = {n: g.detach().clone() for (n, _), g in zip(params, dense, strict=True)}
    finally:
        per_sample.close()
    for _, p in params:
        p.grad = None
    worst = 0.0
    for i, r in enumerate(rows):
        loss = task.model(**task.batch(np.array([r]), negatives))
        grads = torch.autograd.grad(loss.sum(), [p for _, p in params])
        for (name, _), g in zip(params, grads, strict=True):
            assert float(g.norm()) > 0, f"{name} has a zero gradient for row {r}: the test would be vacuous"
            worst = max(worst, float((opacus[name][i] - g).norm() / g.norm()))
    return worst


def test_per_sample_gradients_match_the_loop_tiny(tiny_task: PlatformTask) -> None:
    rows = one_row_per_user(tiny_task, 6)
    negatives = np.random.default_rng(0).choice(tiny_task.data.num_items, 12, replace=False)
    names = [n for n, _ in trainable(tiny_task)]
    assert any("lora_A" in n for n in names) and any("head.item_id" in n for n in names)
    err = per_sample_vs_loop(tiny_task, rows, negatives)
    print(f"tiny per-sample gradient max relative error: {err:.2e}")
    assert err < 1e-4


def test_per_sample_gradients_match_the_loop_minilm() -> None:
    task = make_task(backbone="minilm", num_users=8, lora_layers=2, bf16=False, examples_per_user=1)
    rows = np.arange(4)
    negatives = np.arange(task.data.num_items)
    assert task.encoder.hidden_size == 384
    err = per_sample_vs_loop(task, rows, negatives)
    print(f"minilm per-sample gradient max relative error: {err:.2e}")
    assert err < 1e-4


def test_bf16_per_sample_gradients_are_fp32_and_clipped_to_the_norm() -> None:
    task = make_task(bf16=True)
    task.model.train()
    params = [p for _, p in trainable(task)]
    per_sample = PerSampleGradients(task.model)
    clip = 1e-3  # far below every row's norm: every row is clipped
    opt = FP32DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        embeddings=per_sample.embeddings,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=1,
        loss_reduction="sum",
    )
    try:
        rows = one_row_per_user(task, 1)
        per_sample(**task.batch(rows, np.arange(task.data.num_items))).sum().backward()
        assert all(p.grad_sample.dtype == torch.float32 for p in opt.dense_params)
        opt.step()
        assert opt.last_norms is not None and float(opt.last_norms[0]) > 100 * clip
        total = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in params))
        assert float(total) <= clip * (1 + 1e-6)
        assert float(total) > clip * (1 - 1e-3)
    finally:
        per_sample.close()


def test_dp_optimizer_step_is_the_clipped_sum_over_the_expected_batch(tiny_task: PlatformTask) -> None:
    """Without noise, the update direction is sum_i min(1, C/|g_i|) g_i / expected batch size."""
    task = tiny_task
    task.model.train()
    named = trainable(task)
    params = [p for _, p in named]
    rows = one_row_per_user(task, 5)
    negatives = np.arange(task.data.num_items)
    grads = []
    for r in rows:
        loss = task.model(**task.batch(np.array([r]), negatives)).sum()
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    norms = torch.stack([g.norm() for g in grads])
    clip = float(norms.median())  # some rows clipped, some not
    expected = sum(g * min(1.0, clip / (float(n) + 1e-6)) for g, n in zip(grads, norms, strict=True)) / 8.0
    per_sample = PerSampleGradients(task.model)
    opt = FP32DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        embeddings=per_sample.embeddings,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=8,
        loss_reduction="mean",
    )
    try:
        per_sample(**task.batch(rows, negatives)).sum().backward()
        opt.step()
        got = torch.cat([p.grad.flatten() for p in params])
        torch.testing.assert_close(opt.last_norms, norms, rtol=1e-4, atol=1e-7)
    finally:
        per_sample.close()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_collector_is_exact_with_repeated_ids(padding_idx: int | None) -> None:
    """Repeated ids within a row, across lookups, shared ids across rows and a padding row."""
    torch.manual_seed(0)
    table = torch.nn.Embedding(7, 3, padding_idx=padding_idx)
    collector = EmbeddingGradCollector([table])
    a = torch.tensor([[1, 1, 0], [2, 5, 0], [6, 6, 6]])  # per-row ids, repeats and the padding id
    b = torch.tensor([[1, 3, 4]]).expand(3, -1)  # the same ids in every row (catalogue negatives)
    w = torch.randn(3, 6, 3)

    def losses(rows: torch.Tensor) -> torch.Tensor:
        out = torch.cat([table(a[rows]), table(b[rows])], dim=1)
        return (out * w[rows]).pow(2).sum((1, 2))

    table.train()
    reference = []
    for r in range(3):
        (g,) = torch.autograd.grad(losses(torch.tensor([r])).sum(), [table.weight])
        reference.append(g)
    ref = torch.stack(reference)
    collector.clear()
    losses(torch.arange(3)).sum().backward()
    assert [tuple(ids.shape) for ids, _ in collector.calls[id(table.weight)]] == [(3, 3), (3, 3)]
    torch.testing.assert_close(collector.dense(table.weight, 3), ref)
    torch.testing.assert_close(collector.squared_norms(3), ref.pow(2).sum((1, 2)))
    factor = torch.tensor([0.5, 1.0, 0.25])
    torch.testing.assert_close(collector.clipped_sum(table.weight, factor), torch.einsum("i,ind->nd", factor, ref))
    if padding_idx is not None:
        assert float(ref[:, padding_idx].abs().sum()) == 0.0
    collector.remove()
    table(a).sum().backward()
    assert all(not calls for calls in collector.calls.values())  # hooks are gone


def test_a_trainable_embedding_without_batch_dimension_is_refused() -> None:
    table = torch.nn.Embedding(5, 2)
    collector = EmbeddingGradCollector([table])
    table.train()
    ids = torch.arange(3)[None, :]  # [1, L], broadcast over the batch later (like position ids)
    (table(ids) * torch.ones(4, 3, 2)).sum().backward()
    with pytest.raises(ValueError, match="opacus#841"):
        collector.squared_norms(4)
