"""The one step loop: its order and counts, and every trainer on it bitwise where it was before.

``REFERENCE`` holds, per trainer, the sha256 of the trained parameters and the reported loss
after a few seeded steps, recorded by running :func:`tests.steps_reference.trained` against the trainers' own loops
as they were before :mod:`fedrec.steps` (commit 33b69d2, each trainer with its own loop). The
refactored trainers must reproduce them bit for bit. Floating-point kernels differ between
CPU instruction sets and torch builds, so the comparison runs where the reference was
recorded (the fingerprint) and is skipped, naming the reason, elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedrec.steps import Step, StepHooks, run_steps
from tests.steps_reference import TRAINERS, fingerprint

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


#: recorded from the loops before fedrec.steps (33b69d2) on the machine of REFERENCE_FINGERPRINT
REFERENCE_FINGERPRINT = "torch 2.13.0+cpu, cpu AVX2, threads 2"
REFERENCE: dict[str, tuple[str, float]] = {
    "fit": ("e766673ccfb6dcc13acfa6e4da688a96ff1d227ae488d647a06c0f57e4cc5314", 1.4021121433803014),
    "train_private": ("e9e8727e9868fd997e8c7c3bff76a090a21ed5dd01b3e489e8bb83c0ef6a6d64", 1.4107344150543213),
    "train_shared": ("34f4ed7bbd405d5229446d1e6d65c735062218e2fd7c8adcb0f7778a1e4cd66f", 3.150469970703125),
    "train_shared adapter": ("8bc16519728783f101f678c67638452359cfb14c7e1fca144a8b9bfdf3f23d62", 3.1514600276947022),
    "personalize": ("784054b1e46c66d91edcf430b5f82e7eb828561f1443aac7e23c7ec55848fb9c", 2.99318265914917),
    "train_shared_private": ("d6bdff072d0025e9ae42129803e53bd9f0d04d76ea31c5046e1c42d2d40513c5", 3.1434382438659667),
}


@pytest.fixture
def reference_threads() -> Iterator[None]:
    """Torch's thread count of the reference (other tests and benchmarks in the session change it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_trainer_is_bitwise_what_its_own_loop_was(name: str, reference_threads: None) -> None:
    if fingerprint() != REFERENCE_FINGERPRINT:
        pytest.skip(f"reference recorded on {REFERENCE_FINGERPRINT!r}, this is {fingerprint()!r}")
    got = TRAINERS[name]()
    assert got[0] == REFERENCE[name][0], f"{name}: parameters differ from the pre-refactor loop"
    assert got[1] == REFERENCE[name][1]


def test_the_loop_runs_its_hooks_in_order_and_counts() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    calls: list[str] = []

    def forward(item: int) -> Step:
        calls.append(f"forward {item}")
        if item == 2:  # an empty step: no backward, the optimiser still steps
            return Step(None)
        return Step((w * item).pow(2), targets=3)

    hooks = StepHooks[int](
        before=lambda s, i: calls.append(f"before {s}"),
        after_backward=lambda r: calls.append(f"grad {None if w.grad is None else w.grad.tolist()}"),
        after=lambda s, i, r: calls.append(f"after {s}"),
    )
    stats = run_steps([1, 2], forward, opt, hooks, reduction="sum")
    assert calls == [
        "before 0",
        "forward 1",
        "grad [2.0, -4.0]",
        "after 0",
        "before 1",
        "forward 2",
        "grad None",
        "after 1",
    ]
    assert w.tolist() == [0.0, 0.0]  # one step of 0.5 * d/dw sum(w^2) = w - w
    assert (stats.steps, stats.rows, stats.targets, stats.loss_sum) == (2, 2, 3, 5.0)
    assert stats.loss == 2.5


def test_mean_reduction_backpropagates_the_mean() -> None:
    w = torch.nn.Parameter(torch.tensor([2.0]))
    run_steps([0], lambda _: Step(torch.cat([w, 3 * w])), torch.optim.SGD([w], lr=1.0))
    assert w.tolist() == [0.0]  # d/dw mean(w, 3w) = 2
