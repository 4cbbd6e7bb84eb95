"""Small tasks for the privacy tests: the tiny random BERT on the synthetic platform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.model.two_tower import PlatformHead
from fedrec.task import PlatformTask
from tests.synthetic import synthetic_platform


def make_task(
    backbone: str = "tiny",
    num_users: int = 24,
    hybrid: bool = True,
    item_tower: str = "shared",
    lora_layers: int = 1,
    bf16: bool = False,
    examples_per_user: int = 2,
    perturb_lora_b: bool = True,
) -> PlatformTask:
    """A two-tower task whose encoder serves both towers, with the hybrid ID head.

    ``perturb_lora_b`` sets the LoRA B matrices (zero at init) to small random values so
    that the A matrices get non-zero gradients and every parameter is actually tested.
    """
    torch.manual_seed(0)
    data = synthetic_platform(num_users=num_users)
    bert, tok = load_backbone(backbone)
    encoder = LoraEncoder(bert, r=4, lora_layers=lora_layers, bf16=bf16)
    if perturb_lora_b:
        with torch.no_grad():
            for name, p in encoder.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
    head = PlatformHead(data.num_items, 8, init_std=0.1) if hybrid else None
    task = PlatformTask(
        data,
        TextInputs(data, tok, 16, 32, 8),
        encoder,
        head=head,
        item_tower=item_tower,
        examples_per_user=examples_per_user,
        progress=False,
    )
    task.refresh_index()
    return task


def trainable(task: PlatformTask) -> list[tuple[str, torch.nn.Parameter]]:
    """The task model's trainable parameters by name (LoRA and head)."""
    return [(n, p) for n, p in task.model.named_parameters() if p.requires_grad]


def one_row_per_user(task: PlatformTask, users: int) -> np.ndarray:
    """The first example row of each of the first ``users`` users."""
    ex_users = task.examples.users
    return np.array([int(np.flatnonzero(ex_users == u)[0]) for u in range(users)])


@pytest.fixture
def tiny_task() -> PlatformTask:
    """Tiny backbone, hybrid head, shared item tower, fp32."""
    return make_task()
