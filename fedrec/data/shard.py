"""User shards: one platform's users split into disjoint subsets, each a platform of its own.

A simulation can run several clients per platform (``federation.shards_per_platform``):
client ``s`` of a platform split into ``n`` shards holds the users whose internal index
``u`` has ``u % n == s`` (users are numbered in the order of their sorted raw ids, so the
split is deterministic and balanced to within one user). A shard keeps everything of its
users (train histories, validation and test items) and nothing of the others; the item
catalogue is public and stays whole. Friend links to users outside the shard are dropped
(the friends' histories belong to another client).
"""

from __future__ import annotations

import numpy as np

from fedrec.data.types import PlatformData


def shard_user_indices(num_users: int, shards: int, shard: int) -> np.ndarray:
    """Internal indices of the users of shard ``shard`` out of ``shards`` (ascending).

    Raises
    ------
    ValueError
        If ``shards < 1``, ``shard`` is not in ``[0, shards)`` or a shard would have no user.
    """
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")
    if shards > num_users:
        raise ValueError(f"{num_users} users cannot be split into {shards} non-empty shards")
    return np.arange(shard, num_users, shards, dtype=np.int64)


def shard_users(data: PlatformData, shards: int, shard: int) -> PlatformData:
    """The platform restricted to the users of one shard (``data`` itself when ``shards == 1``).

    Parameters
    ----------
    data : PlatformData
        The whole platform.
    shards : int
        Number of shards the users are split into.
    shard : int
        Which one (``0 <= shard < shards``).

    Returns
    -------
    PlatformData
        Same name and catalogue; the shard's users renumbered ``0..m-1`` in their
        original order, with their train histories, validation and test items.

    Raises
    ------
    ValueError
        See :func:`shard_user_indices`.
    """
    users = shard_user_indices(data.num_users, shards, shard)
    if shards == 1:
        return data
    return subset_users(data, users)


def subset_users(data: PlatformData, users: np.ndarray) -> PlatformData:
    """The platform restricted to ``users`` (internal indices, ascending), renumbered ``0..m-1``.

    Friend links to users outside the subset are dropped.
    """
    friends = None
    if data.friends is not None:
        new = {int(u): i for i, u in enumerate(users)}
        friends = {new[u]: [new[f] for f in fs if f in new] for u, fs in data.friends.items() if u in new}
    return PlatformData(
        name=data.name,
        item_ids=data.item_ids,
        item_texts=data.item_texts,
        user_ids=[data.user_ids[u] for u in users],
        train=[data.train[u] for u in users],
        valid=data.valid[users],
        test=data.test[users],
        sequential=data.sequential,
        friends=friends,
    )


def sample_users(data: PlatformData, fraction: float, seed: int) -> PlatformData:
    """A seeded random ``fraction`` of the platform's users (at least one; ``data`` itself at 1).

    The data-poor platform of an experiment: everything of the kept users (train, valid,
    test), nothing of the others; the catalogue stays whole.

    Raises
    ------
    ValueError
        If ``fraction`` is not in ``(0, 1]``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a user fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return data
    n = max(1, round(fraction * data.num_users))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    return subset_users(data, np.sort(rng.choice(data.num_users, n, replace=False)))
