"""The DP trainer: weights move (opacus#820), frozen ones do not, empty batches, budget refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec.privacy import DPPlan, PrivacyLedger, count_users, plan_private, train_private
from fedrec.task import PlatformTask
from fedrec.train import fit
from tests.privacy.conftest import make_task

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def snapshot(task: PlatformTask) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    trainable = {n: p.detach().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in task.model.named_parameters() if not p.requires_grad}
    return trainable, frozen


def test_lora_and_head_move_under_dp_and_the_frozen_backbone_does_not() -> None:
    task = make_task(perturb_lora_b=False)  # LoRA B starts at zero, as in real training
    before, frozen = snapshot(task)
    adapter_before = task.encoder.adapter_state()
    plan = plan_private(count_users(task), 8, steps_per_round=3, noise_multiplier=0.5, max_grad_norm=1.0)
    result = train_private(task, plan, lr=1e-2, num_negatives=-1, progress=False)
    assert result.steps == 3 and result.refused is None and result.sampled_examples > 0
    after, frozen_after = snapshot(task)
    for name in before:
        assert torch.isfinite(after[name]).all(), f"{name} is not finite"
        assert not torch.equal(before[name], after[name]), f"{name} did not move"
    for name in frozen:
        assert torch.equal(frozen[name], frozen_after[name]), f"frozen {name} changed"
    # what crosses the wire is what was trained (no stale copy, opacus#820)
    adapter_after = task.encoder.adapter_state()
    assert all(not torch.equal(adapter_before[n], adapter_after[n]) for n in adapter_before)
    # Opacus is gone afterwards: no hooks, no per-sample attributes, plain training works
    assert not hasattr(task.model, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") for p in task.model.parameters())
    fit([task], epochs=1, batch_size=8, num_negatives=-1, max_steps=1, progress=False)
    assert not any(hasattr(p, "grad_sample") for p in task.model.parameters())


def test_without_noise_or_clipping_a_dp_run_is_exactly_the_non_private_run() -> None:
    """sigma=0, no effective clipping, every user every step, one example per user: DP-SGD must
    reproduce ``fit`` with a full batch step for step (same mean gradient, same AdamW), which
    pins down the per-sample summation, the expected-batch scaling and the index refreshes."""
    private = make_task(num_users=48, examples_per_user=1, perturb_lora_b=False)
    plain = make_task(num_users=48, examples_per_user=1, perturb_lora_b=False)
    n = count_users(private)
    assert n == len(private.examples) == 48
    plan = plan_private(n, n, steps_per_round=5, noise_multiplier=0.0, max_grad_norm=1e9)
    assert plan.sample_rate == 1.0
    kw = dict(lr=5e-3, num_negatives=-1, index_refresh_steps=3, progress=False)
    initial, _ = snapshot(private)
    result = train_private(private, plan, **kw)
    fit([plain], epochs=5, batch_size=n, **kw)
    assert result.epsilon == float("inf") and result.clipped_fraction == 0.0 and result.sampled_examples == 5 * n
    trained = dict(plain.model.named_parameters())
    for name, p in private.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, trained[name], rtol=0, atol=1e-5)
            assert float((p.detach() - initial[name]).abs().max()) > 1e-2  # both moved far more than the tolerance


def test_same_seed_same_update_and_secure_mode_runs() -> None:
    task = make_task()
    initial = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    plan = plan_private(count_users(task), 6, steps_per_round=2, noise_multiplier=1.0)
    secure = plan_private(count_users(task), 6, steps_per_round=2, noise_multiplier=1.0, secure_mode=True)
    states = []
    for p in (plan, plan, secure):
        task.model.load_state_dict(initial)
        train_private(task, p, seed=3, num_negatives=-1, progress=False)
        states.append(task.encoder.adapter_state())
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])
    assert not any(torch.equal(states[0][n], states[2][n]) for n in states[0])  # OS entropy, not the seed


def empty_plan(task: PlatformTask, sigma: float, steps: int = 4) -> DPPlan:
    """A plan whose Poisson batches are (all but surely) empty."""
    n = count_users(task)
    return DPPlan(
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        sample_rate=1e-12,
        expected_batch_size=1e-12 * n,
        num_users=n,
        steps_per_round=steps,
    )


def test_empty_poisson_batches_skip_the_forward_but_still_take_a_noisy_step() -> None:
    task = make_task()
    calls = []
    handle = task.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        before, _ = snapshot(task)
        result = train_private(task, empty_plan(task, sigma=0.0), num_negatives=-1, progress=False)
        assert result.empty_steps == 4 and result.sampled_examples == 0 and not calls
        after, _ = snapshot(task)
        assert all(torch.equal(before[n], after[n]) for n in before)  # zero sum, no noise: no change
        ledger = PrivacyLedger()
        result = train_private(task, empty_plan(task, sigma=1.0), ledger, num_negatives=-1, progress=False)
        assert result.empty_steps == 4 and not calls
        noisy, _ = snapshot(task)
        assert all(not torch.equal(after[n], noisy[n]) for n in after)  # noise-only steps were taken
        assert ledger.steps == 4  # and accounted
    finally:
        handle.remove()


def test_a_round_over_budget_is_refused_with_a_reason_and_nothing_trains(tmp_path: Path) -> None:
    task = make_task()
    plan = plan_private(count_users(task), 6, steps_per_round=3, rounds=2, target_epsilon=3.0)
    ledger = PrivacyLedger(budget=3.0, path=tmp_path / "ledger.json")
    for r in (1, 2):
        result = train_private(task, plan, ledger, num_negatives=-1, progress=False, round_id=r)
        assert result.refused is None
    assert result.epsilon <= 3.0
    saved = PrivacyLedger.read(tmp_path / "ledger.json") or {}
    assert [x["round"] for x in saved["rounds"]] == [1, 2] and saved["epsilon"] == pytest.approx(result.epsilon)
    before, _ = snapshot(task)
    refused = train_private(task, plan, ledger, num_negatives=-1, progress=False, round_id=3)
    assert refused.refused is not None and "budget" in refused.refused and "not trained" in refused.refused
    assert refused.steps == 0 and refused.epsilon == pytest.approx(result.epsilon)
    assert refused.public_metrics()["refused"] == refused.refused
    after, _ = snapshot(task)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert ledger.steps == 6 and len((PrivacyLedger.read(tmp_path / "ledger.json") or {})["rounds"]) == 2
    with pytest.raises(ValueError, match="budget"):
        ledger.charge(plan.noise_multiplier, plan.sample_rate, 3)


def test_public_metrics_hold_no_raw_data_statistics() -> None:
    task = make_task()
    plan = plan_private(count_users(task), 6, steps_per_round=2, noise_multiplier=1.0)
    result = train_private(task, plan, num_negatives=-1, progress=False)
    public = result.public_metrics()
    assert public["num-examples"] == round(2 * plan.expected_batch_size)  # expected, not the sampled count
    assert "loss" not in public and "sampled_examples" not in public
    assert public["epsilon"] == pytest.approx(plan.epsilon()) and public["accountant"] == "rdp"
    assert np.isfinite(result.loss[task.name])  # the private loss stays available locally
