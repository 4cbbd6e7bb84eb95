"""The causal sequence encoder: causality, left padding, no NaN, exact per-row gradients with Opacus."""

from __future__ import annotations

import torch
from opacus import GradSampleModule

from fedrec.model.sequence import SequenceEncoder

D, T = 16, 6


def _encoder() -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(D, max_len=T, layers=2, heads=2, dropout=0.0).eval()


def test_a_position_sees_only_itself_and_earlier_items() -> None:
    enc = _encoder()
    x, mask = torch.randn(1, T, D), torch.ones(1, T, dtype=torch.bool)
    y = x.clone()
    y[0, 4:] = torch.randn(2, D)  # change the future of position 3
    a, b = enc(x, mask), enc(y, mask)
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-6)
    assert not torch.allclose(a[0, 4:], b[0, 4:], atol=1e-3)


def test_padding_and_what_it_holds_do_not_change_the_real_positions() -> None:
    enc = _encoder()
    x = torch.randn(2, T, D)
    mask = torch.tensor([[False, False, True, True, True, True]] * 2)
    x[1, 2:] = x[0, 2:]
    x[1, :2] = 100 * torch.randn(2, D)  # garbage under the padding
    out = enc(x, mask)
    assert torch.allclose(out[0, 2:], out[1, 2:], atol=1e-5)
    assert torch.equal(out[:, :2], torch.zeros(2, 2, D))
    short = enc(x[:1, 2:], mask[:1, 2:])  # the same items in a shorter window
    assert torch.allclose(short[0], out[0, 2:], atol=1e-5)


def test_an_all_padding_row_is_zero_not_nan() -> None:
    out = _encoder()(torch.randn(2, T, D), torch.tensor([[False] * T, [True] * T]))
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(T, D))


def test_opacus_per_row_gradients_equal_a_row_at_a_time() -> None:
    enc = _encoder().train()
    x, mask = torch.randn(3, T, D), torch.ones(3, T, dtype=torch.bool)
    mask[0, :3] = False
    target = torch.randn(3, D)

    def losses(model: torch.nn.Module, xb: torch.Tensor, mb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        return ((model(xb, mb)[:, -1] - tb) ** 2).sum(-1)

    gsm = GradSampleModule(enc, batch_first=True, loss_reduction="sum")
    losses(gsm, x, mask, target).sum().backward()
    per_row = {n: p.grad_sample.clone() for n, p in gsm.named_parameters() if p.requires_grad}
    gsm._close()
    for i in range(3):
        enc.zero_grad()
        losses(enc, x[i : i + 1], mask[i : i + 1], target[i : i + 1]).sum().backward()
        for n, p in enc.named_parameters():
            assert torch.allclose(per_row[f"_module.{n}"][i], p.grad, atol=1e-5), n


def test_a_set_encoder_ignores_the_order() -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(D, max_len=T, layers=2, heads=2, dropout=0.0, causal=False).eval()
    x, mask = torch.randn(1, T, D), torch.tensor([[False, True, True, True, True, True]])
    perm = torch.tensor([0, 3, 5, 1, 4, 2])
    a, b = enc(x, mask), enc(x[:, perm], mask)
    assert torch.allclose(a[0, perm], b[0], atol=1e-5)
    causal = _encoder()
    assert causal(x, mask, causal=False).shape == causal(x, mask).shape  # one set of weights, both modes
