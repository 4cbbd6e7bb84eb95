"""DP-SGD of the shared part: exact per-user gradients that no other user's data reaches, real accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.privacy.accounting import PrivacyLedger
from fedrec.privacy.dpsgd import plan_private
from fedrec.privacy.per_sample import PerSampleGradients
from fedrec.seqrec.model import SharedSequenceModel
from fedrec.seqrec.private import PerRowLoss, train_shared_private
from fedrec.seqrec.rows import holdout_rows, sequential_rows

N, H = 15, 8


def _shared() -> SharedSequenceModel:
    torch.manual_seed(0)
    return SharedSequenceModel(H, dim=8, max_len=6, layers=1, heads=2, dropout=0.0)


def _rows(causal: bool, histories: list[np.ndarray]):
    if causal:
        return sequential_rows(histories, 6)
    return holdout_rows(histories, 6, 0.3, [(0, u) for u in range(len(histories))])


@pytest.mark.parametrize("causal", [True, False])
def test_the_per_row_form_is_the_models_loss(causal: bool) -> None:
    text, shared = torch.randn(N, H), _shared()
    rows = _rows(causal, [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])])
    assert torch.allclose(PerRowLoss(shared)(text, rows), shared.loss(text, rows), atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_per_user_gradients_are_exact_and_blind_to_other_users(causal: bool) -> None:
    text = torch.randn(N, H)
    hist = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8]), np.array([9, 10, 11, 12])]
    changed = [hist[0], np.array([13, 14, 0, 2, 7, 9]), np.array([3])]  # every other user's data changed

    def per_row(histories: list[np.ndarray]) -> list[torch.Tensor]:
        shared = _shared()
        ps = PerSampleGradients(PerRowLoss(shared))
        ps(text, _rows(causal, histories)).sum().backward()
        params = [p for p in shared.parameters() if p.requires_grad]
        out = ps.dense(params, len(histories))
        ps.close()
        return [g[0] for g in out]

    got = per_row(hist)
    shared = _shared()  # the first user's gradient, computed alone
    shared.loss(text, _rows(causal, hist[:1]))[0].backward()
    alone = [torch.zeros_like(p) if p.grad is None else p.grad for p in shared.parameters() if p.requires_grad]
    for g, a in zip(got, alone, strict=True):
        assert torch.allclose(g, a, atol=1e-5)
    for g, c in zip(got, per_row(changed), strict=True):
        assert torch.allclose(g, c, atol=1e-5)


class _Task:
    """The parts of a SeqTask that DP training reads."""

    def __init__(self) -> None:
        from fedrec.seqrec.task import SeqTask

        self.name = "toy"
        self.shared = _shared()
        self.text = type("T", (), {"adapter": False, "index": staticmethod(lambda: torch.randn(N, H))})()
        hist = [np.random.default_rng(u).choice(N, 5, replace=False) for u in range(40)]
        self.trainable_users = np.arange(40)
        self.rows = lambda users, rng: sequential_rows([hist[u] for u in users], 6)
        assert SeqTask  # the real task provides the same members


def test_a_round_is_charged_to_the_ledger_and_moves_the_shared_part() -> None:
    task = _Task()
    plan = plan_private(num_users=40, expected_batch_size=10, steps_per_round=5, noise_multiplier=1.0)
    ledger = PrivacyLedger(delta=1e-5)
    before = [p.detach().clone() for p in task.shared.parameters()]
    opt = torch.optim.Adam(task.shared.parameters(), lr=1e-2)
    res = train_shared_private(task, plan, opt, ledger, seed=0)
    assert res.steps == 5 and res.refused is None
    assert ledger.steps == 5 and res.epsilon == pytest.approx(ledger.epsilon()) and res.epsilon > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, task.shared.parameters(), strict=True))
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in task.shared.parameters())


def test_one_target_rows_give_each_sampled_user_one_target(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    forward = PerRowLoss.forward

    def spy(self: PerRowLoss, text: torch.Tensor, rows):  # type: ignore[no-untyped-def]
        seen.append(rows.num_targets.clone())
        return forward(self, text, rows)

    monkeypatch.setattr(PerRowLoss, "forward", spy)
    plan = plan_private(num_users=40, expected_batch_size=10, steps_per_round=3, noise_multiplier=1.0)
    for one in (False, True):
        seen.clear()
        task = _Task()
        opt = torch.optim.Adam(task.shared.parameters(), lr=1e-2)
        assert train_shared_private(task, plan, opt, seed=0, one_target=one).steps == 3
        counts = torch.cat(seen)
        assert bool((counts == 1).all()) if one else bool((counts == 4).all())  # 5 items: 4 targets
