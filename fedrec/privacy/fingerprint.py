"""What a privacy ledger is keyed by: a fingerprint of the training data the DP mechanism reads.

DP-SGD on a platform reads its users' train histories (the examples and the user texts
are built from them) and the public catalogue. The guarantee is about those users, so a
platform's ledger is keyed by the users' train data, not by the run, the model or the
configuration: a second run on the same data, with any model, adds to the same ledger.
Data that differs in one interaction is other data (its own ledger; a node cap still
counts both: :class:`fedrec.privacy.node_caps.NodeCaps`).
"""

from __future__ import annotations

import hashlib
import json

from fedrec.data.types import PlatformData

#: bumped if what the fingerprint covers ever changes (a new version = new ledgers)
FINGERPRINT_VERSION = b"fedrec-train-data-v1\n"


def training_fingerprint(data: PlatformData) -> str:
    """The sha256 of a platform's train data: every user's raw id with its train items' raw ids, in order.

    Independent of the order users and items were numbered in (users are sorted by raw
    id; items are named by raw id); the history order within a user counts (it is what
    training reads). The catalogue text is public and not covered, nor are the valid
    and test items (DP training never reads them).

    Parameters
    ----------
    data : PlatformData
        The platform (or the user shard) a client trains on.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256(FINGERPRINT_VERSION)
    rows = sorted(zip(data.user_ids, data.train, strict=True), key=lambda r: r[0])
    for user, items in rows:
        h.update(json.dumps([str(user), [data.item_ids[int(i)] for i in items]]).encode())
        h.update(b"\n")
    return h.hexdigest()
