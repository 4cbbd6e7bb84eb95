"""Aggregation of LoRA adapter states and validation of incoming updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.federated.aggregate import (
    aggregate,
    check_update,
    check_weight,
    fedavg,
    ffa,
    lora_pairs,
    product,
    svd_merge,
)
from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder

A = "layer.0.query.lora_A.default.weight"
B = "layer.0.query.lora_B.default.weight"
A2 = "layer.0.value.lora_A.default.weight"
B2 = "layer.0.value.lora_B.default.weight"
MODULES = ("layer.0.query", "layer.0.value")


def _client(rng: np.random.Generator, r: int = 4, d_in: int = 12, d_out: int = 10, b_rank: int | None = None):
    """A random two-module adapter state; ``b_rank`` limits the rank of B (hence of B @ A)."""

    def b() -> np.ndarray:
        m = rng.normal(size=(d_out, r))
        if b_rank is not None:
            m[:, b_rank:] = 0.0
        return m.astype(np.float32)

    return {
        A: rng.normal(size=(r, d_in)).astype(np.float32),
        B: b(),
        A2: rng.normal(size=(r, d_in)).astype(np.float32),
        B2: b(),
    }


def _weighted_product(states, weights, module):
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    return sum(wk * product(s, module) for wk, s in zip(w, states, strict=True))


def test_fedavg_is_the_weighted_mean_of_each_tensor() -> None:
    rng = np.random.default_rng(0)
    states, weights = [_client(rng) for _ in range(3)], [10, 30, 60]
    out = fedavg(states, weights)
    for name in states[0]:
        expected = 0.1 * states[0][name] + 0.3 * states[1][name] + 0.6 * states[2][name]
        np.testing.assert_allclose(out[name], expected, rtol=1e-6, atol=1e-6)
        assert out[name].dtype == np.float32


def test_fedavg_of_factors_differs_from_the_average_product() -> None:
    rng = np.random.default_rng(1)
    states, weights = [_client(rng) for _ in range(2)], [1, 1]
    avg = fedavg(states, weights)
    for m in MODULES:
        target = _weighted_product(states, weights, m)
        rel = np.linalg.norm(product(avg, m) - target) / np.linalg.norm(target)
        assert rel > 0.3, f"fedavg should be inexact on random factors, got relative error {rel}"


def test_svd_merge_is_exact_when_the_average_product_has_rank_at_most_r() -> None:
    rng = np.random.default_rng(2)
    # two clients whose products have rank 2 each: the average has rank <= 4 = r
    states, weights = [_client(rng, r=4, b_rank=2) for _ in range(2)], [3, 7]
    merged = svd_merge(states, weights)
    for m in MODULES:
        np.testing.assert_allclose(product(merged, m), _weighted_product(states, weights, m), rtol=1e-5, atol=1e-5)
    # the sqrt(S) split: A A^T = B^T B = diag(S) (balanced factors)
    a, b = merged[A].astype(np.float64), merged[B].astype(np.float64)
    np.testing.assert_allclose(a @ a.T, b.T @ b, atol=1e-4)
    assert merged[A].shape == states[0][A].shape and merged[B].dtype == np.float32


def test_svd_merge_is_the_best_rank_r_approximation_otherwise() -> None:
    rng = np.random.default_rng(3)
    states, weights = [_client(rng, r=4) for _ in range(3)], [1, 2, 3]  # average product has rank 10 > 4
    merged = svd_merge(states, weights)
    for m in MODULES:
        target = _weighted_product(states, weights, m)
        s = np.linalg.svd(target, compute_uv=False)
        err = np.linalg.norm(product(merged, m) - target)
        np.testing.assert_allclose(err, np.sqrt((s[4:] ** 2).sum()), rtol=1e-4)  # Eckart-Young
        assert err < np.linalg.norm(product(fedavg(states, weights), m) - target)


def test_svd_merge_keeps_zero_components_trainable() -> None:
    rng = np.random.default_rng(4)
    states = [_client(rng, r=4) for _ in range(2)]
    for s in states:  # fresh LoRA: B = 0, so every product is 0
        s[B][:] = 0.0
        s[B2][:] = 0.0
    merged = svd_merge(states, [1, 1])
    assert np.all(merged[B] == 0.0) and np.all(product(merged, MODULES[0]) == 0.0)
    assert np.linalg.norm(merged[A], axis=1).min() > 0.1  # A rows are not zero: B can get gradients


def test_ffa_averages_b_only_and_is_exact_for_a_shared_a() -> None:
    rng = np.random.default_rng(5)
    shared_a = rng.normal(size=(4, 12))
    full = [_client(rng) for _ in range(3)]
    for s in full:
        s[A], s[A2] = shared_a.astype(np.float32), shared_a.astype(np.float32)
    weights = [5, 1, 4]
    b_only = [{B: s[B], B2: s[B2]} for s in full]
    out = ffa(b_only, weights)
    assert set(out) == {B, B2}
    np.testing.assert_allclose(out[B], fedavg(b_only, weights)[B])
    with_a = {**out, A: shared_a.astype(np.float32), A2: shared_a.astype(np.float32)}
    for m in MODULES:
        np.testing.assert_allclose(product(with_a, m), _weighted_product(full, weights, m), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="B matrices only"):
        ffa(full, weights)


def test_aggregate_dispatch_and_errors() -> None:
    rng = np.random.default_rng(6)
    states = [_client(rng) for _ in range(2)]
    np.testing.assert_allclose(aggregate("fedavg", states, [1, 1])[A], fedavg(states, [1, 1])[A])
    with pytest.raises(ValueError, match="must be one of"):
        aggregate("median", states, [1, 1])
    with pytest.raises(ValueError, match="no accepted update"):
        aggregate("fedavg", [], [])
    with pytest.raises(ValueError, match="weights"):
        fedavg(states, [1, 0])
    with pytest.raises(ValueError, match="no matching lora_B"):
        lora_pairs([A])


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda s: s.update({B: np.zeros((10, 5), np.float32)}), "has shape (10, 5), expected (10, 4)"),
        (lambda s: s[A].__setitem__((0, 0), np.nan), "1 non-finite value"),
        (lambda s: s[B2].__setitem__((1, 1), np.inf), "non-finite"),
        (lambda s: s.pop(A2), "1 missing tensor(s), e.g. layer.0.value.lora_A"),
        (lambda s: s.update({"x.lora_A.default.weight": np.zeros((4, 12), np.float32)}), "1 unexpected tensor(s)"),
        (lambda s: s.update({A: s[A].astype(np.int64)}), "expected a floating type"),
    ],
)
def test_check_update_names_the_reason(corrupt, reason: str) -> None:
    rng = np.random.default_rng(7)
    good = _client(rng)
    expected = {k: v.shape for k, v in good.items()}
    assert check_update(good, expected) is None
    bad = {k: v.copy() for k, v in good.items()}
    corrupt(bad)
    problem = check_update(bad, expected)
    assert problem is not None and reason in problem


def test_check_weight() -> None:
    assert check_weight(128) is None and check_weight(3.0) is None
    for bad in (0, -3, float("nan"), float("inf"), "12", None, True):
        assert check_weight(bad) is not None


def test_freeze_lora_a_leaves_only_b_in_the_adapter_state() -> None:
    bert, tok = load_backbone("tiny", tiny_layers=2, tiny_hidden=32)
    enc = LoraEncoder(bert, r=4, lora_layers=1, init_seed=3)
    full = enc.adapter_state()
    a_init = {k: v for k, v in full.items() if "lora_A" in k}
    enc.freeze_lora_a()
    b_only = enc.adapter_state()
    assert set(b_only) == {n for n in full if "lora_B" in n} and len(b_only) == len(full) // 2
    with enc.peft.disable_adapter():  # peft re-enables requires_grad on adapter parameters afterwards
        pass
    assert set(enc.adapter_state()) == set(b_only)
    # A stays at the seeded init (the same for every party with the same seed) and still acts in forward
    buffers = dict(enc.named_buffers())
    for k, v in a_init.items():
        torch.testing.assert_close(buffers[k], v)
    x = tok(["red apple"], return_tensors="pt")
    enc.load_adapter_state({k: torch.ones_like(v) for k, v in b_only.items()})
    with_b = enc(x["input_ids"], x["attention_mask"])
    enc.load_adapter_state({k: torch.zeros_like(v) for k, v in b_only.items()})
    assert not torch.allclose(with_b, enc(x["input_ids"], x["attention_mask"]))
