"""A secure-aggregation round's bookkeeping (:func:`fedrec.federated.secure_sum.aggregate_sum`): the mean is
taken when it can be, and the round is discarded (global adapter unchanged, logged) when it cannot."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedrec.federated.messages import ClientUpdate
from fedrec.federated.secure_sum import aggregate_sum
from fedrec.federated.server import Coordinator
from tests.federated.test_server import _coordinator


def _clear(node: str, platform: str, n: int = 100) -> ClientUpdate:
    """What a SecAgg+ contributor sends in the clear: no arrays, its example count and metrics."""
    return ClientUpdate(node, platform, None, n, {"train_loss": 1.5}, nbytes=10)


def _mean(co: Coordinator, shift: float) -> dict[str, np.ndarray]:
    return {k: v + np.asarray(shift, dtype=v.dtype) for k, v in co.global_state.items()}


def test_the_mean_becomes_the_global_adapter_and_only_what_was_sent_in_the_clear_is_recorded(
    tmp_path: Path,
) -> None:
    co, _ = _coordinator(tmp_path)
    mean = _mean(co, 0.01)
    new = aggregate_sum(co, 1, mean, [_clear("1", "video"), _clear("2", "ecommerce", 300)], [])
    assert new is not None
    for k in mean:
        np.testing.assert_array_equal(co.global_state[k], mean[k])
    train = co.pending["train"]
    assert set(train) == {"video", "ecommerce"} and train["ecommerce"]["num_examples"] == 300
    assert all("update_norm" not in t for t in train.values())  # no update was ever seen
    secure = co.pending["secure_aggregation"]
    assert secure["clients"] == ["ecommerce", "video"] and "discarded" not in secure
    assert secure["aggregate_norm"] > 0


@pytest.mark.parametrize(
    ("merged", "why"),
    [
        (None, "the protocol halted"),
        ("nan", "non-finite"),
        ("shape", "shape"),
    ],
)
def test_an_unusable_mean_discards_the_round_and_keeps_the_global_adapter(
    tmp_path: Path, merged: str | None, why: str
) -> None:
    co, logs = _coordinator(tmp_path)
    before = {k: v.copy() for k, v in co.global_state.items()}
    mean = None
    if merged is not None:
        mean = _mean(co, 0.01)
        name = next(iter(mean))
        mean[name] = np.full_like(mean[name], np.nan) if merged == "nan" else mean[name][..., :1]
    assert aggregate_sum(co, 1, mean, [_clear("1", "video"), _clear("2", "ecommerce")], []) is None
    for k in before:
        np.testing.assert_array_equal(co.global_state[k], before[k])
    assert why in co.pending["secure_aggregation"]["discarded"]
    assert any(lvl == logging.WARNING and "secure aggregate discarded" in m for lvl, m in logs)


def test_an_impostor_in_the_sum_discards_the_round(tmp_path: Path) -> None:
    """Its share cannot be taken out of a sum the server never saw the parts of: the whole round goes."""
    co, logs = _coordinator(tmp_path)
    assert aggregate_sum(co, 1, _mean(co, 0.01), [_clear("1", "video"), _clear("2", "ecommerce")], []) is not None
    before = {k: v.copy() for k, v in co.global_state.items()}
    # node 3 claims video, bound to node 1 since round 1
    assert aggregate_sum(co, 2, _mean(co, 0.02), [_clear("3", "video"), _clear("2", "ecommerce")], []) is None
    for k in before:
        np.testing.assert_array_equal(co.global_state[k], before[k])
    assert "unregistered node" in co.pending["secure_aggregation"]["discarded"]
    assert co.pending["rejected"] and co.pending["rejected"][0]["node"] == "3"
    assert any("refused the reply of node 3" in m for _, m in logs)
