"""A small synthetic platform for fast unit tests (the real data is used elsewhere), and adapters that matter."""

from __future__ import annotations

import numpy as np
import torch

from fedrec.data.types import PlatformData

TOPICS = ["red apple fruit", "blue ocean water", "green forest tree", "yellow sun light"]


def synthetic_platform(
    num_users: int = 24, items_per_topic: int = 6, seed: int = 0, name: str = "synthetic"
) -> PlatformData:
    """Users each stick to one topic; items are ``"<topic> number <k>"``."""
    rng = np.random.default_rng(seed)
    texts = [f"{t} number {k}" for t in TOPICS for k in range(items_per_topic)]
    users, train, valid, test = [], [], [], []
    for u in range(num_users):
        topic = u % len(TOPICS)
        items = rng.permutation(np.arange(topic * items_per_topic, (topic + 1) * items_per_topic))[:5]
        users.append(str(u))
        train.append(items[:3].astype(np.int64))
        valid.append(int(items[3]))
        test.append(int(items[4]))
    return PlatformData(
        name=name,
        item_ids=[str(i) for i in range(len(texts))],
        item_texts=texts,
        user_ids=users,
        train=train,
        valid=np.array(valid),
        test=np.array(test),
    )


def perturb_adapters(module: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    """Add seeded noise to every trainable parameter (LoRA B starts at zero: make the adapters matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def platform_from_histories(name: str, num_items: int, histories: list[list[int]]) -> PlatformData:
    """A platform whose users' whole histories are given: the newest item is test, the one before valid."""
    return PlatformData(
        name=name,
        item_ids=[str(i) for i in range(num_items)],
        item_texts=[f"item {i}" for i in range(num_items)],
        user_ids=[f"u{u}" for u in range(len(histories))],
        train=[np.asarray(h[:-2], dtype=np.int64) for h in histories],
        valid=np.array([h[-2] for h in histories], dtype=np.int64),
        test=np.array([h[-1] for h in histories], dtype=np.int64),
    )
