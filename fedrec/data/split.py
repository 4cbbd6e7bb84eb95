"""Leave-one-out splitting shared by the time-ordered loaders."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TypeVar

import numpy as np

from fedrec.data.types import PlatformData

# raw ids must be orderable (users are sorted, item ids break timestamp ties)
UserId = TypeVar("UserId", int, str)
ItemId = TypeVar("ItemId", int, str)


def leave_one_out_by_time(
    name: str,
    events: Iterable[tuple[UserId, ItemId, float]],
    item_texts: Mapping[ItemId, str],
    min_interactions: int = 3,
) -> PlatformData:
    """Split ``(user, item, timestamp)`` events per user by (timestamp, item id).

    The last interaction is the test item, the second last the valid item, the rest
    train. Users with fewer than ``min_interactions`` are not evaluated and dropped.

    Parameters
    ----------
    name : str
        Platform name.
    events : iterable of (user, item, timestamp)
        Raw interactions; user and item ids are raw identifiers.
    item_texts : mapping
        Raw item id to catalogue text; defines the catalogue (ascending id order).
    min_interactions : int, default 3
        Users with fewer interactions are dropped.
    """
    per_user: dict[UserId, list[tuple[float, ItemId]]] = defaultdict(list)
    for user, item, ts in events:
        per_user[user].append((ts, item))
    raw_items = sorted(item_texts)
    index = {raw: i for i, raw in enumerate(raw_items)}
    users, train, valid, test = [], [], [], []
    for user in sorted(per_user):
        seq = [index[i] for _, i in sorted(per_user[user], key=lambda e: (e[0], e[1]))]
        if len(seq) < min_interactions:
            continue
        users.append(str(user))
        train.append(np.array(seq[:-2], dtype=np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    return PlatformData(
        name=name,
        item_ids=[str(r) for r in raw_items],
        item_texts=[item_texts[r] for r in raw_items],
        user_ids=users,
        train=train,
        valid=np.array(valid, dtype=np.int64),
        test=np.array(test, dtype=np.int64),
        sequential=True,
    )
