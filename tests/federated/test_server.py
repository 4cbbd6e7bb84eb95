"""Server side without the simulation engine: the strategy's validation, the coordinator's memory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.error import Error
from omegaconf import DictConfig

from fedrec.federated.aggregate import fedavg
from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.rounds import initial_adapter, prepare_run_config, run_rounds
from fedrec.federated.server import Coordinator
from server.app import FedrecStrategy
from tests.conftest import compose_test_config


def _cfg(*overrides: str) -> DictConfig:
    return compose_test_config("platform=[video,ecommerce,social]", *overrides, smoke=False)


def _coordinator(tmp_path: Path, *overrides: str) -> tuple[Coordinator, list[tuple[int, str]]]:
    cfg = _cfg(*overrides)
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    return Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m))), logs


def _meta(node: int, message_type: str) -> Metadata:
    """The metadata of a reply from ``node`` to the server."""
    return Metadata(
        run_id=1,
        message_id="",
        src_node_id=node,
        dst_node_id=1,
        reply_to_message_id="m",
        group_id="",
        created_at=0.0,
        ttl=60.0,
        message_type=message_type,
    )


def _reply(node: int, platform: str, state: dict[str, np.ndarray] | None, n: object = 100) -> Message:
    """A reply from ``node`` as the grid hands it to the strategy."""
    meta = _meta(node, "train")
    if state is None:
        return Message(error=Error(code=0, reason="ValueError: boom"), metadata=meta)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in state.items()}),
            "metrics": MetricRecord({"num-examples": n, "train-loss": 1.5}),
            "info": ConfigRecord({"platform": platform}),
        }
    )
    return Message(content=content, metadata=meta)


def _perturbed(state: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(size=v.shape)).astype(v.dtype) for k, v in state.items()}


def test_bad_updates_are_rejected_with_a_reason_and_the_round_goes_on(tmp_path: Path) -> None:
    cfg = _cfg("++federation.nodes={1: video, 2: ecommerce, 3: social}")  # the registered node ids
    initial, backbone = initial_adapter(cfg)
    good_video, good_social = _perturbed(initial, 1), _perturbed(initial, 2)
    first = next(iter(good_video))
    misshaped = {**_perturbed(initial, 3), first: np.zeros((3, 3), np.float32)}
    nonfinite = _perturbed(initial, 4)
    nonfinite[first][0, 0] = np.nan
    bad = {  # ecommerce's reply (node 2), and the reason it is rejected for
        "has shape (3, 3)": _reply(2, "ecommerce", misshaped),
        "non-finite": _reply(2, "ecommerce", nonfinite),
        "client error: ValueError: boom": _reply(2, "ecommerce", None),  # the client raised
        "num-examples is 0": _reply(2, "ecommerce", _perturbed(initial, 5), n=0),  # no examples
    }
    expected = fedavg([good_social, good_video], [100, 300])
    for i, (why, reply) in enumerate(bad.items()):
        logs: list[tuple[int, str]] = []
        co = Coordinator(cfg, tmp_path / str(i), initial, backbone, log=lambda lvl, m, out=logs: out.append((lvl, m)))
        replies = [_reply(1, "video", good_video, 300), reply, _reply(3, "social", good_social, 100)]
        arrays, metrics = FedrecStrategy(co).aggregate_train(1, replies)
        assert arrays is not None and metrics is not None
        for k, v in arrays.items():
            np.testing.assert_allclose(v.numpy(), expected[k], rtol=1e-6)
        assert metrics["num-examples"] == 400
        (rejected,) = co.pending["rejected"]
        assert rejected["node"] == "2" and why in rejected["reason"], rejected
        (warning,) = [m for lvl, m in logs if lvl == logging.WARNING]
        # an error reply names no platform: it is taken for the one its node is bound to
        assert warning.startswith("round 1: rejected the update of ecommerce (node 2): ") and why in warning


def test_all_rejected_keeps_the_global_adapter(tmp_path: Path) -> None:
    co, _ = _coordinator(tmp_path)
    before = {k: v.copy() for k, v in co.global_state.items()}
    arrays, _ = FedrecStrategy(co).aggregate_train(1, [_reply(1, "video", None)])
    assert arrays is None
    for k, v in before.items():
        np.testing.assert_array_equal(co.global_state[k], v)


def test_ffa_adapter_is_b_only_and_half_the_bytes(tmp_path: Path) -> None:
    full, _ = initial_adapter(_cfg())
    b_only, _ = initial_adapter(_cfg("federation.aggregation=ffa"))
    assert set(b_only) == {k for k in full if "lora_B" in k}
    assert sum(v.nbytes for v in b_only.values()) * 2 == sum(v.nbytes for v in full.values())


NODE = {"video": "1", "ecommerce": "2", "social": "3"}  # one node per platform


def _evals(losses: dict[str, float]) -> list[ClientEvaluation]:
    return [
        ClientEvaluation(NODE[p], p, {"loss": x, "HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "users": 10})
        for p, x in losses.items()
    ]


def test_best_round_checkpoint_and_resume(tmp_path: Path) -> None:
    co, _ = _coordinator(tmp_path, "eval.loss_weights=uniform")
    s1 = _perturbed(co.global_state, 1)
    co.aggregate_train(1, [ClientUpdate("1", "video", s1, 10)])
    e1 = co.end_round(1, _evals({"video": 3.0, "ecommerce": 5.0, "social": 7.0}), bytes_down=10, seconds=1.0)
    assert e1["cross_platform_loss"] == pytest.approx(5.0) and co.best_round == 1
    co.aggregate_train(2, [ClientUpdate("1", "video", _perturbed(co.global_state, 2), 10)])
    co.end_round(2, _evals({"video": 4.0, "ecommerce": 5.0, "social": 7.0}), bytes_down=10, seconds=1.0)
    assert co.best_round == 1 and co.round == 2  # worse round: best stays
    co.end_round(3, _evals({"video": 0.1, "social": 0.1}), bytes_down=10, seconds=1.0)
    assert co.history[-1]["cross_platform_loss"] is None and co.best_round == 1  # incomplete round never best

    again, logs = _coordinator(tmp_path, "federation.resume=true", "federation.rounds=9")
    assert again.resume() == 3 and again.best_round == 1 and len(again.history) == 3
    assert again.run_key == co.run_key and any("resuming after round 3" in m for _, m in logs)
    for k in s1:
        np.testing.assert_array_equal(again.best_state[k], s1[k])
        np.testing.assert_array_equal(again.global_state[k], co.global_state[k])

    other, _ = _coordinator(tmp_path, "federation.resume=true", "federation.aggregation=svd")
    with pytest.raises(ValueError, match="different aggregation"):
        other.resume()
    fresh, _ = _coordinator(tmp_path, "federation.resume=false")
    assert fresh.resume() == 0


class _ScriptedTransport:
    """Clients in name only: every platform sends a perturbed adapter; the validation loss is 9 - round."""

    def __init__(self) -> None:
        self.evaluations: list[tuple[int, str, bool]] = []  # (round, split, the initial adapter was sent)

    def train_round(self, server_round: int, co: Coordinator) -> int:
        co.aggregate_train(
            server_round, [ClientUpdate("1", p, _perturbed(co.global_state, server_round), 10) for p in co.platforms]
        )
        return 0

    def evaluate_round(
        self, server_round: int, co: Coordinator, state: dict[str, np.ndarray], split: str
    ) -> tuple[list[ClientEvaluation], int]:
        self.evaluations.append((server_round, split, state is co.initial_state))
        return _evals({p: 9.0 - server_round for p in co.platforms}), 0


def test_round_zero_scores_the_initial_adapter_once(tmp_path: Path) -> None:
    co, logs = _coordinator(tmp_path, "federation.evaluate_initial=true", "federation.rounds=2")
    first = _ScriptedTransport()
    doc = run_rounds(co, first, "simulate")
    assert first.evaluations == [(0, "valid", True), (1, "valid", False), (2, "valid", False), (2, "test", False)]
    initial = doc["federation"]["initial"]
    assert initial["round"] == 0 and initial["cross_platform_loss"] == pytest.approx(9.0)
    assert set(initial["platforms"]) == {"video", "ecommerce", "social"}
    assert [h["round"] for h in doc["federation"]["history"]] == [1, 2] and doc["federation"]["best_round"] == 2
    assert any("round 0 (initial adapter" in m for _, m in logs)

    # a resumed run keeps the checkpoint's round 0 instead of scoring the (no longer current) start again
    again, _ = _coordinator(
        tmp_path, "federation.evaluate_initial=true", "federation.rounds=3", "federation.resume=true"
    )
    second = _ScriptedTransport()
    assert run_rounds(again, second, "simulate")["federation"]["initial"] == initial
    assert [r for r, _, _ in second.evaluations] == [3, 3]

    off, _ = _coordinator(tmp_path / "off", "federation.rounds=1")
    third = _ScriptedTransport()
    assert run_rounds(off, third, "simulate")["federation"]["initial"] is None
    assert [r for r, _, _ in third.evaluations] == [1, 1]


def test_private_federation_with_client_sampling_is_refused(tmp_path: Path) -> None:
    """Each platform's DP plan covers every round: sampled participation would break its accounting."""
    cfg = _cfg("privacy=dp", "command=simulate", "federation.fraction_train=0.5")
    with pytest.raises(ValueError, match="privacy.enabled=true needs federation.fraction_train=1.0"):
        prepare_run_config(cfg, tmp_path)
    with pytest.raises(ValueError, match="needs federation.fraction_train=1.0"):
        Coordinator(cfg, tmp_path, {}, 0)
    prepare_run_config(_cfg("privacy=dp", "command=simulate"), tmp_path)  # full participation: fine


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
def test_weighting_examples_or_uniform(tmp_path: Path, weighting: str) -> None:
    co, _ = _coordinator(tmp_path, f"federation.weighting={weighting}")
    big, small = _perturbed(co.global_state, 1), _perturbed(co.global_state, 2)
    new = co.aggregate_train(1, [ClientUpdate("1", "ecommerce", big, 900), ClientUpdate("2", "video", small, 100)])
    assert new is not None
    expected = fedavg([big, small], [900, 100] if weighting == "examples" else [1, 1])
    for k in big:
        np.testing.assert_allclose(new[k], expected[k], rtol=1e-6)
    by_examples, alike = fedavg([big, small], [900, 100]), fedavg([big, small], [1, 1])
    assert not all(np.allclose(by_examples[k], alike[k]) for k in big)  # the two weightings differ here


def test_resume_refuses_a_checkpoint_with_other_weighting(tmp_path: Path) -> None:
    co, _ = _coordinator(tmp_path)
    co.aggregate_train(1, [ClientUpdate("1", "video", _perturbed(co.global_state, 1), 10)])
    co.end_round(1, _evals({"video": 3.0, "ecommerce": 5.0, "social": 7.0}), bytes_down=10, seconds=1.0)
    other, _ = _coordinator(tmp_path, "federation.resume=true", "federation.weighting=uniform")
    with pytest.raises(ValueError, match="different weighting"):
        other.resume()
    same, _ = _coordinator(tmp_path, "federation.resume=true", "federation.weighting=examples")
    assert same.resume() == 1


def test_unknown_weighting_is_refused() -> None:
    with pytest.raises(ValueError, match="federation.weighting"):
        _cfg("federation.weighting=equal")


def _eval_reply(node: int, platform: str, metrics: dict[str, float]) -> Message:
    """An evaluation reply from ``node`` as the grid hands it to the strategy."""
    meta = _meta(node, "evaluate")
    content = RecordDict({"metrics": MetricRecord(metrics), "info": ConfigRecord({"platform": platform})})
    return Message(content=content, metadata=meta)


def test_unusable_evaluations_are_ignored_with_a_reason_and_never_make_the_best_round(tmp_path: Path) -> None:
    co, logs = _coordinator(tmp_path)
    strategy = FedrecStrategy(co)
    good = {"loss": 3.0, "HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "users": 10}
    # round 1: video's loss is NaN, ecommerce scored nobody, social sent no loss: the strategy does not crash
    replies = [
        _eval_reply(1, "video", {**good, "loss": float("nan")}),
        _eval_reply(2, "ecommerce", {**good, "users": 0}),
        _eval_reply(3, "social", {k: v for k, v in good.items() if k != "loss"}),
    ]
    assert strategy.aggregate_evaluate(1, replies) is None and strategy.evaluations == []
    warnings = [m for lvl, m in logs if lvl == logging.WARNING]
    assert warnings == [
        "round 1: ignored the evaluation of video (node 1): metric 'loss' is nan",
        "round 1: ignored the evaluation of ecommerce (node 2): it scored 0 users",
        "round 1: ignored the evaluation of social (node 3): metric 'loss' is missing",
    ]
    co.aggregate_train(1, [ClientUpdate("1", "video", _perturbed(co.global_state, 1), 10)])
    bad = [ClientEvaluation("1", "video", {**good, "loss": float("nan")}), *_evals({"ecommerce": 5.0, "social": 7.0})]
    entry = co.end_round(1, bad, bytes_down=10, seconds=1.0)
    assert entry["cross_platform_loss"] is None and co.best_round is None and co.best_loss is None
    assert "round 1: ignored the evaluation of video (node 1): metric 'loss' is nan" in [m for _, m in logs[3:]]
    # round 2: every reply usable, a finite cross-platform loss: the best round
    co.aggregate_train(2, [ClientUpdate("1", "video", _perturbed(co.global_state, 2), 10)])
    entry = co.end_round(2, _evals({"video": 3.0, "ecommerce": 5.0, "social": 7.0}), bytes_down=10, seconds=1.0)
    assert entry["cross_platform_loss"] == pytest.approx(5.0) and co.best_round == 2 and co.best_loss == 5.0
    # the final test: an unusable reply is left out of the results, with its reason
    doc = co.finish("simulate", [*_evals({"video": 3.0}), ClientEvaluation("3", "social", {**good, "MRR": -1.0})])
    assert set(doc["platforms"]) == {"video"}
    assert logs[-1][1] == "test: ignored the evaluation of social (node 3): metric 'MRR' is -1.0, outside [0, 1]"


def test_finite_poison_in_replies_is_rejected_and_capped(tmp_path: Path) -> None:
    """Through the strategy's decoding: a reply scaled by 1e30 is rejected, one claiming 1e12 examples capped."""
    co, logs = _coordinator(tmp_path, "federation.update_norm_bound=1.0", "federation.max_weight_share=0.5")
    strategy = FedrecStrategy(co)
    rng = np.random.default_rng(7)
    step = {k: (0.01 * rng.normal(size=v.shape)).astype(v.dtype) for k, v in co.global_state.items()}
    ecommerce = {k: v + step[k] for k, v in co.global_state.items()}
    social = {k: v - step[k] for k, v in co.global_state.items()}
    video = {k: (1e30 * (v + step[k])).astype(v.dtype) for k, v in co.global_state.items()}
    arrays, _ = strategy.aggregate_train(
        1, [_reply(1, "video", video, 100), _reply(2, "ecommerce", ecommerce, 10**12), _reply(3, "social", social, 100)]
    )
    assert arrays is not None
    (rejected,) = co.pending["rejected"]
    assert rejected["node"] == "1" and "exceeds federation.update_norm_bound=1" in rejected["reason"]
    # ecommerce's share is capped at 0.5: the two opposite steps cancel, the global adapter is unchanged
    expected = fedavg([ecommerce, social], [1, 1])
    for k, v in arrays.items():
        np.testing.assert_allclose(v.numpy(), expected[k], atol=1e-6)
        np.testing.assert_allclose(v.numpy(), co.initial_state[k], atol=1e-6)
    capped = "ecommerce (node 2): aggregation weight share 1 capped to 0.5 (federation.max_weight_share=0.5, "
    assert any(capped + "1000000000000 examples reported)" in m for _, m in logs)
