"""The ledger's key: the users' train data, nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedrec.privacy import training_fingerprint
from tests.synthetic import synthetic_platform


def test_fingerprint_covers_the_train_data_only() -> None:
    data = synthetic_platform(num_users=12)
    fp = training_fingerprint(data)
    assert len(fp) == 64 and fp == training_fingerprint(synthetic_platform(num_users=12))  # reloaded: same
    # the users numbered in another order: same data, same key
    order = np.arange(data.num_users)[::-1]
    renumbered = dataclasses.replace(
        data,
        user_ids=[data.user_ids[i] for i in order],
        train=[data.train[i] for i in order],
        valid=data.valid[order],
        test=data.test[order],
    )
    assert training_fingerprint(renumbered) == fp
    # valid/test items and the public catalogue text are not what DP training reads
    assert training_fingerprint(dataclasses.replace(data, valid=data.test, test=data.valid)) == fp
    assert training_fingerprint(dataclasses.replace(data, item_texts=["x"] * data.num_items)) == fp
    # one train interaction more, a different history order, or one user fewer: other data
    longer = [t.copy() for t in data.train]
    longer[3] = np.append(longer[3], longer[3][0])
    assert training_fingerprint(dataclasses.replace(data, train=longer)) != fp
    swapped = [t.copy() for t in data.train]
    swapped[0] = swapped[0][::-1]
    assert training_fingerprint(dataclasses.replace(data, train=swapped)) != fp
    fewer = dataclasses.replace(
        data, user_ids=data.user_ids[1:], train=data.train[1:], valid=data.valid[1:], test=data.test[1:]
    )
    assert training_fingerprint(fewer) != fp
