"""The ClientApp on a deployed node, called with real Flower messages: node caps and what a DP reply carries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from omegaconf import OmegaConf

from clients.app import evaluate, train
from fedrec.config import compose_config
from fedrec.federated.replies import PUBLIC_TRAIN_KEYS, WITHHELD, LocalReport
from fedrec.federated.rounds import initial_adapter
from fedrec.privacy import epsilon_of
from server.app import to_record

pytestmark = pytest.mark.slow

SIGMA = 0.8
Q = 16 / 943  # train=smoke on video
STEPS = round(0.05 / Q)


def _message(kind: str, arrays, config: dict) -> Message:
    """An instruction as the SuperLink delivers it (the server's content, the link's metadata)."""
    meta = Metadata(
        run_id=1,
        message_id=f"{kind}-{time.monotonic_ns()}",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=kind,
    )
    return Message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), metadata=meta)


def test_a_capped_node_refuses_what_the_server_asks_past_its_caps_and_withholds_evaluation(
    data_root: Path, tmp_path: Path
) -> None:
    one, two = (epsilon_of([(SIGMA, Q, r * STEPS)], 1e-5) for r in (1, 2))
    node_config = {
        "platform": "video",
        "data-root": str(data_root),
        "cache-dir": str(tmp_path / "cache"),
        "state-dir": str(tmp_path / "state"),
        "max-epsilon": (one + two) / 2,  # room for one round
        "min-noise-multiplier": 0.5,
    }
    context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    overrides = ["command=simulate", "model=tiny", "train=smoke", "platform=video", "federation.local_epochs=0.05"]
    # the server asks for DP with no budget at all: the node's cap is what stops it
    cfg = compose_config([*overrides, "privacy=dp", f"privacy.noise_multiplier={SIGMA}", "privacy.budget=null"])
    arrays = to_record(initial_adapter(cfg)[0])
    conf = {"fedrec-config": OmegaConf.to_yaml(cfg, resolve=True), "run-key": "run1", "split": "valid"}

    reply = train(_message("train", arrays, {**conf, "server-round": 1, "local-round": -1}), context)
    metrics = dict(reply.content["metrics"])
    assert set(metrics) <= set(PUBLIC_TRAIN_KEYS)  # no train loss, no timings
    assert metrics["epsilon"] == pytest.approx(one) and metrics["noise_multiplier"] == SIGMA
    assert metrics["num-examples"] == round(STEPS * 16) and "arrays" in reply.content.array_records
    # the evaluation reply carries nothing but "withheld"; the metrics stay in the node's report
    reply = evaluate(_message("evaluate", arrays, {**conf, "local-round": 1}), context)
    assert dict(reply.content["metrics"]) == {WITHHELD: 1}
    assert dict(reply.content["info"]) == {"platform": "video", "client": "video"}
    (report,) = (tmp_path / "state" / "run1").glob("*/evaluation.json")
    assert LocalReport(report.parent).read()["valid"]["1"]["users"] == 943

    reply = train(_message("train", arrays, {**conf, "server-round": 2, "local-round": -1}), context)
    refused = str(reply.content["info"]["refused"])
    assert "node cap" in refused and "max-epsilon" in refused and not reply.content.array_records
    assert dict(reply.content["metrics"])["epsilon"] == pytest.approx(one)  # the refused round was not charged

    # the server turns privacy off: the node still trains only under DP, and still withholds evaluation
    plain = compose_config(overrides)
    conf_plain = {**conf, "fedrec-config": OmegaConf.to_yaml(plain, resolve=True), "run-key": "run2"}
    reply = train(_message("train", arrays, {**conf_plain, "server-round": 1, "local-round": -1}), context)
    assert "trains only under differential privacy" in str(reply.content["info"]["refused"])
    assert not reply.content.array_records and set(dict(reply.content["metrics"])) <= set(PUBLIC_TRAIN_KEYS)
    reply = evaluate(_message("evaluate", arrays, {**conf_plain, "local-round": 0}), context)
    assert dict(reply.content["metrics"]) == {WITHHELD: 1}
