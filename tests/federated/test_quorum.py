"""The quorum and the wait deadline: a round goes on without a dead node, which rejoins; too few nodes stop the run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.supercore.task_identity import TaskIdentity

from fedrec.config import compose_config
from fedrec.federated.quorum import QuorumError, wait_for_quorum
from fedrec.federated.rounds import initial_adapter, run_rounds
from fedrec.federated.server import Coordinator
from server.app import FedrecStrategy, FlowerTransport
from tests.conftest import REPO_ROOT
from tests.federated.test_server import _meta

PLATFORMS = {1: "video", 2: "ecommerce", 3: "social"}
SUPERLINK = 99  # the node id of the SuperLink's own error replies (Flower's SUPERLINK_NODE_ID)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _wait(connected: Callable[[], Iterable[str]], minimum: int, timeout: float = 10.0) -> tuple[list[str], list[str]]:
    clock, logs = FakeClock(), []
    nodes = wait_for_quorum(
        connected, 3, minimum, timeout, "round 2", lambda lvl, m: logs.append(m), 1.0, clock, clock.sleep
    )
    return nodes, logs


def test_wait_returns_as_soon_as_every_node_is_there_and_goes_on_with_a_quorum_at_the_deadline() -> None:
    arrivals = iter([["a"], ["a", "b"], ["a", "b", "c"]])
    nodes, logs = _wait(lambda: next(arrivals), 3)
    assert nodes == ["a", "b", "c"] and logs == ["round 2: waiting up to 10s for nodes: 1 of 3 connected"]
    nodes, logs = _wait(lambda: ["b", "a"], 2)
    assert nodes == ["a", "b"]
    assert logs[-1] == "round 2: going on with 2 of 3 nodes after 10s (quorum federation.min_clients=2)"


def test_below_the_quorum_at_the_deadline_is_a_quorum_error_naming_the_counts() -> None:
    with pytest.raises(QuorumError, match=r"round 2: 1 node\(s\) connected after waiting 10s .* 3 needed"):
        _wait(lambda: ["a"], 3)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("federation.wait_timeout=0", "federation.wait_timeout must be a finite number of seconds > 0, got 0"),
        ("federation.round_timeout=inf", "federation.round_timeout must be a finite number of seconds > 0, got inf"),
        ("federation.round_timeout=-5", "federation.round_timeout must be a finite number of seconds > 0"),
    ],
)
def test_timeouts_must_be_finite_and_positive(override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compose_config(["model=tiny", override], config_dir=REPO_ROOT / "conf")


@pytest.fixture
def server_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a ServerApp process has set when it creates messages (the run, its node and task ids)."""
    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


class FakeGrid:
    """A grid whose nodes come and go by round: ``connected(round)`` lists them, ``silent(round)`` never answer."""

    def __init__(self, connected: Callable[[int], set[int]], silent: Callable[[int], set[int]]) -> None:
        self.connected, self.silent = connected, silent
        self.round = 1
        self.sent: list[tuple[int, str, list[int]]] = []  # (round, message type, destination nodes)

    def get_node_ids(self) -> list[int]:
        return sorted(self.connected(self.round))

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Message]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        self.sent.append((self.round, kind, [m.metadata.dst_node_id for m in messages]))
        replies = []
        for i, m in enumerate(messages):
            node = m.metadata.dst_node_id
            m.metadata.__dict__["_message_id"] = f"r{self.round}-{kind}-{i}"  # as the SuperLink's push sets it
            if node in self.silent(self.round):  # its message expires: the SuperLink answers in its place
                meta = _meta(SUPERLINK, kind)
                meta.__dict__["_reply_to_message_id"] = m.metadata.message_id
                replies.append(Message(error=Error(code=3, reason="Message unavailable"), metadata=meta))
                continue
            info = ConfigRecord({"platform": PLATFORMS[node]})
            if kind == "train":
                content = RecordDict(
                    {
                        "arrays": m.content["arrays"],
                        "metrics": MetricRecord({"num-examples": 10, "train-loss": 1.0}),
                        "info": info,
                    }
                )
            else:
                metrics = {"loss": 2.0 + node, "HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "users": 10}
                content = RecordDict({"metrics": MetricRecord(metrics), "info": info})
            replies.append(Message(content=content, metadata=_meta(node, kind)))
        if kind == "evaluate":
            self.round += 1
        return replies


def _run(tmp_path: Path, grid: FakeGrid, *overrides: str) -> tuple[dict, list[tuple[int, str]]]:
    cfg = compose_config(
        ["model=tiny", "platform=[video,ecommerce,social]", "federation.rounds=4", "federation.wait_timeout=0.2"]
        + list(overrides),
        config_dir=REPO_ROOT / "conf",
    )
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    co = Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m)))
    transport = FlowerTransport(grid, FedrecStrategy(co), timeout=5.0)  # type: ignore[arg-type]
    return run_rounds(co, transport, "deploy"), logs


def test_a_dead_node_costs_its_rounds_only_and_takes_part_again_once_back(tmp_path: Path, server_task: None) -> None:
    # node 3 dies in round 2 (still listed: its heartbeat has not expired), is gone in round 3, back in round 4
    grid = FakeGrid(lambda r: {1, 2} if r == 3 else {1, 2, 3}, lambda r: {3} if r in (2, 3) else set())
    doc, logs = _run(tmp_path, grid, "federation.min_clients=2")
    # the SuperLink's error reply for its expired message is the node's silence, not a reply of node 99
    assert not any("node 99" in m for _, m in logs)
    hist = doc["federation"]["history"]
    trained = [sorted(p for p, v in h["platforms"].items() if v["train"]) for h in hist]
    assert trained == [["ecommerce", "social", "video"], ["ecommerce", "video"], ["ecommerce", "video"]] + [
        ["ecommerce", "social", "video"]
    ]
    # no second wait at evaluation: the node silent in round 2's training is not asked to evaluate
    sent = {(r, kind): nodes for r, kind, nodes in grid.sent}
    assert sent[(2, "train")] == [1, 2, 3] and sent[(2, "evaluate")] == [1, 2]
    assert sent[(3, "train")] == [1, 2] and sent[(4, "train")] == [1, 2, 3] and sent[(4, "evaluate")] == [1, 2, 3]
    assert hist[1]["cross_platform_loss"] is None and hist[3]["cross_platform_loss"] is not None
    assert doc["federation"]["rounds"] == 4 and set(doc["platforms"]) == {"video", "ecommerce", "social"}


def test_below_the_quorum_the_run_stops_with_a_quorum_error(tmp_path: Path, server_task: None) -> None:
    grid = FakeGrid(lambda r: {1, 2} if r >= 2 else {1, 2, 3}, lambda r: set())
    with pytest.raises(QuorumError, match=r"round 2: 2 node\(s\) connected after waiting 0.2s .* 3 needed"):
        _run(tmp_path, grid)  # min_clients=0: every client


def test_an_impostor_node_gets_no_more_messages(tmp_path: Path, server_task: None) -> None:
    PLATFORMS[4] = "video"  # node 4 claims video, which node 1 answered for first
    try:
        grid = FakeGrid(lambda r: {1, 2, 3, 4}, lambda r: set())
        doc, logs = _run(tmp_path, grid, "federation.rounds=2")
    finally:
        del PLATFORMS[4]
    sent = {(r, kind): nodes for r, kind, nodes in grid.sent}
    assert sent[(1, "train")] == [1, 2, 3, 4] and sent[(1, "evaluate")] == [1, 2, 3] and sent[(2, "train")] == [1, 2, 3]
    (refused,) = doc["federation"]["history"][0]["rejected"]
    assert refused["node"] == "4" and "'video' is bound to node 1; node 4 claims it too" == refused["reason"]
    assert any(lvl == logging.WARNING and "refused the reply of node 4 (claims 'video')" in m for lvl, m in logs)
