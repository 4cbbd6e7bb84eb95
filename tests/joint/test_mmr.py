"""MMR re-ranking on vectors small enough to follow by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.joint.mmr import mmr


def _sim() -> np.ndarray:
    # items 0 and 1 are near-duplicates; item 2 is different; item 3 is like item 2
    v = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


def test_lambda_one_is_the_plain_top_k() -> None:
    rel = np.array([0.9, 0.8, 0.5, 0.1])
    assert mmr(rel, _sim(), 3, 1.0) == [0, 1, 2]


def test_lower_lambda_skips_the_near_duplicate() -> None:
    rel = np.array([0.9, 0.8, 0.5, 0.1])
    # after item 0, item 1 (cosine 0.99 to it) loses to the unlike item 2
    assert mmr(rel, _sim(), 3, 0.5) == [0, 2, 1]
    assert mmr(rel, _sim(), 2, 0.0)[1] in (2, 3)  # pure diversity: anything unlike item 0


def test_k_larger_than_the_pool_and_bad_lambda() -> None:
    assert sorted(mmr(np.array([0.2, 0.1]), np.eye(2), 5, 0.7)) == [0, 1]
    with pytest.raises(ValueError, match="mmr_lambda"):
        mmr(np.array([1.0]), np.eye(1), 1, 1.5)
    with pytest.raises(ValueError, match="similarity has shape"):
        mmr(np.array([1.0, 2.0]), np.eye(3), 1, 0.5)
