"""Node caps: parsed from the node config only, checked against the whole history of the platform."""

from __future__ import annotations

import pytest

from fedrec.privacy import NodeCaps, PrivacyLedger, epsilon_of


def test_caps_from_node_config() -> None:
    assert NodeCaps.from_node_config({"platform": "video"}) is None
    caps = NodeCaps.from_node_config({"max-epsilon": "4", "min-noise-multiplier": 0.5})
    assert caps == NodeCaps(max_epsilon=4.0, min_noise_multiplier=0.5, delta=1e-5)
    assert NodeCaps.from_node_config({"max-epsilon": 8, "privacy-delta": 1e-6}) == NodeCaps(8.0, None, 1e-6)
    with pytest.raises(ValueError, match="max-epsilon='eight' is not a number"):
        NodeCaps.from_node_config({"max-epsilon": "eight"})
    with pytest.raises(ValueError, match="max-epsilon must be > 0"):
        NodeCaps.from_node_config({"max-epsilon": 0})
    with pytest.raises(ValueError, match="privacy-delta is set but neither"):
        NodeCaps.from_node_config({"privacy-delta": 1e-6})
    with pytest.raises(ValueError, match="privacy-delta must be in"):
        NodeCaps.from_node_config({"min-noise-multiplier": 1, "privacy-delta": 2})


def test_min_noise_refuses_a_noisier_looking_run_than_it_is() -> None:
    ledger = PrivacyLedger(budget=None, caps=NodeCaps(min_noise_multiplier=0.8))
    assert "below this node's min-noise-multiplier=0.8" in (ledger.check(0.5, 0.01, 10) or "")
    assert "below" in (ledger.check(0.0, 0.01, 10) or "")  # clipping only, no noise: refused
    assert ledger.check(0.8, 0.01, 10) is None


def test_max_epsilon_is_measured_at_the_nodes_delta_whatever_the_run_says() -> None:
    entry = (0.8, 0.05, 50)
    at_node = epsilon_of([entry], 1e-5)
    loose = epsilon_of([entry], 0.1)  # a server asking for delta 0.1 sees a small epsilon
    assert loose < at_node
    ledger = PrivacyLedger(delta=0.1, budget=None, caps=NodeCaps(max_epsilon=(loose + at_node) / 2))
    reason = ledger.check(*entry)
    assert reason is not None and f"to {at_node:.4g}" in reason and "delta=1e-05" in reason
