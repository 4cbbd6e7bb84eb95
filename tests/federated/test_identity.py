"""Identity: a reply counts for the client its sender's node is bound to (federation.nodes, else first contact)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedrec.config import compose_config
from fedrec.federated.aggregate import fedavg
from fedrec.federated.identity import NodeRegistry
from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.rounds import initial_adapter
from fedrec.federated.server import Coordinator
from server.app import FedrecStrategy
from tests.conftest import REPO_ROOT
from tests.federated.test_server import _perturbed, _reply

CLIENTS = ["video", "ecommerce", "social"]


def _registry(nodes: dict[str, str] | None = None) -> tuple[NodeRegistry, list[str]]:
    logs: list[str] = []
    return NodeRegistry(nodes or {}, CLIENTS, lambda lvl, m: logs.append(m)), logs


def _u(node: str, client: str) -> ClientUpdate:
    return ClientUpdate(node, client, None, 1)


def test_first_contact_binds_and_refuses_later_claimants_unknown_names_and_duplicates() -> None:
    reg, logs = _registry()
    admitted, refused = reg.screen(
        "round 1",
        [_u("1", "video"), _u("2", "ecommerce"), _u("9", "video"), _u("7", "tiktok"), _u("2", "ecommerce")],
    )
    assert [(u.node, u.name) for u in admitted] == [("1", "video"), ("2", "ecommerce")]
    reasons = [why for _, why in refused]
    assert reasons == [
        "'video' is bound to node 1; node 9 claims it too",
        "the reply claims 'tiktok', which is not one of this run's clients ['video', 'ecommerce', 'social']",
        "a second reply for 'ecommerce' in this step",
    ]
    assert "round 1: refused the reply of node 9 (claims 'video'): 'video' is bound to node 1" in logs[-3]
    # the impostor and the stranger get nothing more; the bound nodes do, and social is still free
    assert [reg.admits(n) for n in ("1", "2", "9", "7", "5")] == [True, True, False, False, True]
    (late,), _ = reg.screen("round 2", [_u("5", "social")])
    assert late.node == "5" and reg.bound == {"video": "1", "ecommerce": "2", "social": "5"}
    # a bound node claiming another client is refused (its own client stays bound to it)
    _, ((_, why),) = reg.screen("round 2", [_u("1", "social")])
    assert why == "node 1 is bound to 'video' but its reply claims 'social'" and reg.admits("1")


def test_registered_nodes_only_and_an_error_reply_counts_for_its_nodes_client() -> None:
    reg, _ = _registry({"11": "video", "12": "ecommerce"})
    assert [reg.admits(n) for n in ("11", "12", "13")] == [True, True, False]
    error = ClientUpdate("12", "", None, 0, problem="client error: boom")  # no content: no claim
    admitted, refused = reg.screen("round 1", [error, _u("13", "social"), _u("11", "video")])
    assert [u.name for u in admitted] == ["ecommerce", "video"] and error.platform == "ecommerce"
    ((_, why),) = refused
    assert why == "node 13 is not registered in federation.nodes" and not reg.admits("13")
    # first contact: an error reply from a node bound to nothing is refused (with the error), not blocked
    free, _ = _registry()
    _, ((_, why),) = free.screen("round 1", [ClientUpdate("4", "", None, 0, problem="client error: boom")])
    assert why == "the reply names no client and node 4 is bound to none: client error: boom" and free.admits("4")


def test_a_bad_registry_is_refused() -> None:
    with pytest.raises(ValueError, match="binds node 1 to 'tiktok', which is not one of"):
        NodeRegistry({"1": "tiktok"}, CLIENTS, lambda lvl, m: None)
    with pytest.raises(ValueError, match="binds 'video' to two nodes: 1 and 2"):
        NodeRegistry({"1": "video", "2": "video"}, CLIENTS, lambda lvl, m: None)


def test_through_the_server_app_an_impostor_is_refused_and_its_update_never_aggregated(tmp_path: Path) -> None:
    """Replies as the grid delivers them (``src_node_id`` in the metadata): the node decides, not the claim."""
    cfg = compose_config(["model=tiny", f"platform=[{','.join(CLIENTS)}]"], config_dir=REPO_ROOT / "conf")
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    co = Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m)))
    strategy = FedrecStrategy(co)
    honest = {p: _perturbed(initial, i) for i, p in enumerate(CLIENTS)}
    poison = {k: v + 100.0 for k, v in initial.items()}
    replies = [_reply(10 + i, p, honest[p]) for i, p in enumerate(CLIENTS)]
    arrays, _ = strategy.aggregate_train(1, [*replies, _reply(66, "video", poison)])
    assert arrays is not None
    expected = fedavg(list(honest.values()), [100, 100, 100])
    for k, v in arrays.items():
        np.testing.assert_allclose(v.numpy(), expected[k], rtol=1e-6)
    (refused,) = co.pending["rejected"]
    assert refused["node"] == "66" and refused["reason"] == "'video' is bound to node 10; node 66 claims it too"
    assert not co.identity.admits("66") and co.identity.admits("10")
    # its evaluation reply is not used either: the cross-platform loss has only the bound nodes' results
    good = {"loss": 3.0, "HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "users": 10}
    evals = [ClientEvaluation(str(10 + i), p, good) for i, p in enumerate(CLIENTS)]
    entry = co.end_round(1, [*evals, ClientEvaluation("66", "video", {**good, "loss": 0.0})], 0, 1.0)
    assert entry["cross_platform_loss"] == pytest.approx(3.0)
    assert any(lvl == logging.WARNING and "refused the reply of node 66" in m for lvl, m in logs)


def test_registered_nodes_through_the_config(tmp_path: Path) -> None:
    cfg = compose_config(
        ["model=tiny", "platform=[video,social]", "++federation.nodes={6512794135: video, 8120443906: social}"],
        config_dir=REPO_ROOT / "conf",
    )
    initial, backbone = initial_adapter(cfg)
    co = Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: None)
    assert co.identity.bound == {"video": "6512794135", "social": "8120443906"}
    new = co.aggregate_train(
        1,
        [
            ClientUpdate("8120443906", "video", _perturbed(initial, 1), 10),  # social's node claims video
            ClientUpdate("6512794135", "video", _perturbed(initial, 2), 10),
            ClientUpdate("42", "social", _perturbed(initial, 3), 10),  # unregistered
        ],
    )
    assert new is not None and list(co.pending["train"]) == ["video"]
    assert {r["node"] for r in co.pending["rejected"]} == {"8120443906", "42"}
