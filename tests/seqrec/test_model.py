"""The shared and personal sequence models: exact row losses, rows independent of each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.seqrec.model import PersonalModel, SharedSequenceModel, query_loss, row_loss, shared_scores
from fedrec.seqrec.rows import holdout_rows, left_pad, sequential_rows

N, H = 12, 8


def _model() -> SharedSequenceModel:
    torch.manual_seed(0)
    return SharedSequenceModel(H, dim=8, max_len=6, layers=1, heads=2, dropout=0.0).eval()


def test_row_loss_is_the_mean_cross_entropy_of_each_rows_targets() -> None:
    rows = sequential_rows([np.array([1, 2, 3, 4]), np.array([5, 6])], max_len=6)
    logits = torch.randn(2, rows.ids.shape[1], N)
    got = row_loss(logits, rows)
    for r in range(2):
        m = rows.mask[r]
        want = F.cross_entropy(logits[r][m], rows.targets[r, :, 0][m])
        assert torch.allclose(got[r], want, atol=1e-6)


def test_query_loss_scores_real_positions_only_and_equals_the_full_row_loss() -> None:
    torch.manual_seed(1)
    rows = sequential_rows([np.array([1, 2, 3, 4, 5, 6]), np.array([5, 6]), np.array([7])], max_len=6)
    table = torch.randn(N, H, requires_grad=True)
    queries = torch.randn(3, rows.ids.shape[1], H, requires_grad=True)
    got = query_loss(queries, table, rows)
    want = row_loss(queries @ table.T, rows)
    assert torch.allclose(got, want, atol=1e-5)
    g_got = torch.autograd.grad(got.sum(), [queries, table])
    g_want = torch.autograd.grad(row_loss(queries @ table.T, rows).sum(), [queries, table])
    for a, b in zip(g_got, g_want, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert float(got[2].detach()) == 0.0  # a one-item history has no target: zero loss, not NaN
    # the padding positions are never scored: poisoning their queries changes nothing
    poisoned = queries.detach().clone()
    poisoned[~rows.target_mask[..., 0]] = float("nan")
    assert torch.isnan(row_loss(poisoned @ table.T, rows)).any()
    assert torch.equal(query_loss(poisoned, table, rows), got.detach())


def test_a_rows_loss_and_gradient_ignore_the_other_rows() -> None:
    text = torch.randn(N, H)
    model = _model()
    hist = [np.array([1, 2, 3, 4]), np.array([5, 6, 7])]
    changed = [np.array([1, 2, 3, 4]), np.array([9, 10, 11, 0, 2])]

    def grad_of_row0(h: list[np.ndarray]) -> list[torch.Tensor]:
        model.zero_grad()
        model.loss(text, sequential_rows(h, 6))[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grad_of_row0(hist), grad_of_row0(changed), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_losses_in_length_groups_are_the_whole_batchs_losses_and_gradients(causal: bool) -> None:
    text = torch.randn(N, H)
    hist = [np.arange(1, n + 2) % N for n in (5, 1, 3, 2, 5, 4, 1)]
    rows = sequential_rows(hist, 6) if causal else holdout_rows(hist, 6, 0.4, [(0, u) for u in range(7)])
    shared = _model()
    personal = PersonalModel(shared, N)
    for model in (shared, personal):
        got = {}
        for groups in (1, 3):
            for m in (shared, personal.shared):
                m.length_groups = groups
            model.zero_grad()
            loss = model.loss(text, rows)
            loss.sum().backward()
            grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
            got[groups] = (loss.detach(), grads)
        assert torch.allclose(got[1][0], got[3][0], atol=1e-5)
        for a, b in zip(got[1][1], got[3][1], strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_the_set_model_ignores_the_order_of_a_history() -> None:
    text, model = torch.randn(N, H), _model()
    a = shared_scores(model, text, *left_pad([np.array([1, 5, 7])], 6), causal=False)
    b = shared_scores(model, text, *left_pad([np.array([7, 1, 5])], 6), causal=False)
    assert torch.allclose(a, b, atol=1e-5)
    rows = holdout_rows([np.arange(6)], 6, 0.5, [(0, 0)])
    assert model.loss(text, rows).shape == (1,)


def test_the_personal_model_starts_as_the_shared_part_plus_its_id_embeddings() -> None:
    text, shared = torch.randn(N, H), _model()
    personal = PersonalModel(shared, N).eval()
    ids, mask = left_pad([np.array([1, 2, 3])], 6)
    with torch.no_grad():
        personal.id_in.weight.zero_()
        personal.id_out.weight.zero_()
    assert torch.allclose(
        personal.scores(text, ids, mask, True), shared_scores(shared, text, ids, mask, True), atol=1e-6
    )
    with torch.no_grad():
        personal.shared.adaptor.weight.add_(1.0)  # a copy: training it leaves the shared part alone
    assert not torch.allclose(personal.shared.adaptor.weight, shared.adaptor.weight)
