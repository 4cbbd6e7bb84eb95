"""A data-poor platform: a seeded share of the users, all of their data, none of the others'."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.shard import sample_users
from tests.synthetic import synthetic_platform


def test_a_fraction_keeps_whole_users_and_is_seeded() -> None:
    data = synthetic_platform(num_users=40)
    a, b, c = sample_users(data, 0.25, 0), sample_users(data, 0.25, 0), sample_users(data, 0.25, 1)
    assert a.num_users == 10 and a.user_ids == b.user_ids and a.user_ids != c.user_ids
    assert a.num_items == data.num_items  # the catalogue is public and stays whole
    for i, uid in enumerate(a.user_ids):
        u = data.user_ids.index(uid)
        np.testing.assert_array_equal(a.train[i], data.train[u])
        assert (a.valid[i], a.test[i]) == (data.valid[u], data.test[u])
    assert sample_users(data, 1.0, 0) is data


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_bad_fraction_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        sample_users(synthetic_platform(), bad, 0)
