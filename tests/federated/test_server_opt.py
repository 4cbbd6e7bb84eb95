"""Server optimisers (federation.server_optimizer): Flower's FedAvgM and FedAdam on the same aggregates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from fedrec.federated.server_opt import ServerOptimizer
from tests.federated.test_byzantine import SHAPES, _replies, _states


def _flower_rounds(strategy: FedAvg, initial: dict[str, np.ndarray], rounds: list[list[dict[str, np.ndarray]]]):
    """Flower's global state after each round's training replies (its own FedAvg, then its server step)."""
    current = ArrayRecord({k: Array(v.copy()) for k, v in initial.items()})
    out = []
    for t, states in enumerate(rounds, start=1):
        _keep_track(strategy, current)  # what configure_train records (it also builds messages, which need a run)
        arrays, _ = strategy.aggregate_train(t, _replies(states))
        assert arrays is not None
        current = arrays
        out.append({k: v.numpy() for k, v in arrays.items()})
    return out


def _keep_track(strategy: FedAvg, current: ArrayRecord) -> None:
    """The arrays a strategy's ``configure_train`` records as the ones it sent (flwr 1.41's code, without messages)."""
    if isinstance(strategy, FedAvgM):
        if strategy.current_arrays is None:
            strategy.current_arrays = current
    else:
        strategy.current_arrays = {k: a.numpy() for k, a in current.items()}  # type: ignore[attr-defined]


def _ours(opt: ServerOptimizer, initial: dict[str, np.ndarray], rounds: list[list[dict[str, np.ndarray]]]):
    from fedrec.federated.aggregate import fedavg

    current, out = {k: v.copy() for k, v in initial.items()}, []
    for t, states in enumerate(rounds, start=1):
        merged = fedavg(states, [10.0 * (i + 1) for i in range(len(states))])  # _replies' example counts
        current = opt.step(t, current, merged)
        out.append(current)
    return out


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ServerOptimizer("fedavgm", lr=0.7, momentum=0.9), FedAvgM(server_learning_rate=0.7, server_momentum=0.9)),
        (ServerOptimizer("fedavgm", lr=1.0, momentum=0.0), FedAvgM()),
        (ServerOptimizer("fedadam", lr=0.1, tau=1e-3), FedAdam(eta=0.1, tau=1e-3)),
        (
            ServerOptimizer("fedadam", lr=0.03, beta_1=0.5, beta_2=0.9, tau=1e-2),
            FedAdam(eta=0.03, beta_1=0.5, beta_2=0.9, tau=1e-2),
        ),
    ],
)
def test_each_server_optimizer_moves_the_state_as_flowers_strategy(ours: ServerOptimizer, theirs: FedAvg) -> None:
    initial = _states(1, seed=99)[0]
    rounds = [_states(3, seed=t) for t in range(4)]
    for a, b in zip(_ours(ours, initial, rounds), _flower_rounds(theirs, initial, rounds), strict=True):
        assert a.keys() == b.keys() == SHAPES.keys()
        for k in a:
            assert a[k].dtype == np.float32
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_none_is_the_aggregate_and_bad_settings_are_refused() -> None:
    cur, agg = _states(1, seed=1)[0], _states(1, seed=2)[0]
    out = ServerOptimizer("none").step(1, cur, agg)
    assert all(np.array_equal(out[k], agg[k]) for k in agg)
    with pytest.raises(ValueError, match="unknown server optimizer"):
        ServerOptimizer("fedsgd")
    with pytest.raises(ValueError, match="out of range"):
        ServerOptimizer("fedavgm", momentum=1.0)
    with pytest.raises(ValueError, match="tensors and shapes"):
        ServerOptimizer("fedadam").step(1, cur, {k: v[..., :1] for k, v in agg.items()})


def test_the_state_survives_a_checkpoint(tmp_path: Path) -> None:
    initial = _states(1, seed=5)[0]
    rounds = [_states(3, seed=t) for t in range(4)]
    straight = _ours(ServerOptimizer("fedadam", lr=0.1), initial, rounds)
    first = ServerOptimizer("fedadam", lr=0.1)
    mid = _ours(first, initial, rounds[:2])[-1]
    resumed = ServerOptimizer("fedadam", lr=0.1)
    resumed.load_state_dict(first.state_dict())
    from fedrec.federated.aggregate import fedavg

    current = mid
    for t, states in enumerate(rounds[2:], start=3):
        current = resumed.step(t, current, fedavg(states, [10.0 * (i + 1) for i in range(len(states))]))
    for k in current:
        np.testing.assert_array_equal(current[k], straight[-1][k])
    with pytest.raises(ValueError, match="server optimizer is 'fedadam'"):
        ServerOptimizer("fedavgm").load_state_dict(first.state_dict())


def test_the_coordinator_steps_with_it_and_a_resumed_run_continues_its_state(tmp_path: Path) -> None:
    from fedrec.federated.aggregate import fedavg
    from fedrec.federated.messages import ClientUpdate
    from tests.federated.test_server import _coordinator, _evals, _perturbed

    opt = ("federation.server_optimizer=fedadam", "federation.server_lr=0.05")
    updates = {
        t: [ClientUpdate("1", "video", _perturbed(_coordinator(tmp_path / "x")[0].global_state, t), 10)] for t in (1, 2)
    }
    evals = _evals({"video": 3.0, "ecommerce": 5.0, "social": 7.0})

    straight, _ = _coordinator(tmp_path / "a", *opt)
    start = {k: v.copy() for k, v in straight.global_state.items()}
    for t in (1, 2):
        straight.aggregate_train(t, updates[t])
        straight.end_round(t, evals, bytes_down=10, seconds=1.0)
    ref = ServerOptimizer("fedadam", lr=0.05)
    want = start
    for t in (1, 2):
        want = ref.step(t, want, fedavg([u.state for u in updates[t]], [10.0]))
    for k in want:
        np.testing.assert_allclose(straight.global_state[k], want[k], rtol=1e-6)
        assert not np.allclose(straight.global_state[k], updates[2][0].state[k])  # not FedAvg's

    first, _ = _coordinator(tmp_path / "b", *opt)
    first.aggregate_train(1, updates[1])
    first.end_round(1, evals, bytes_down=10, seconds=1.0)
    resumed, _ = _coordinator(tmp_path / "b", *opt, "federation.resume=true")
    assert resumed.resume() == 1 and resumed.server_opt.m  # the moments came back with the checkpoint
    resumed.aggregate_train(2, updates[2])
    for k in want:
        np.testing.assert_array_equal(resumed.global_state[k], straight.global_state[k])
    other, _ = _coordinator(tmp_path / "b", "federation.resume=true")
    with pytest.raises(ValueError, match="different server_optimizer"):
        other.resume()


def test_a_server_optimizer_with_svd_aggregation_is_refused(tmp_path: Path) -> None:
    from tests.federated.test_server import _coordinator

    with pytest.raises(ValueError, match="server_optimizer=fedavgm"):
        _coordinator(tmp_path, "federation.server_optimizer=fedavgm", "federation.aggregation=svd")
    with pytest.raises(ValueError, match="federation.server_"):
        _coordinator(tmp_path, "federation.server_optimizer=fedadam", "federation.server_tau=0")
