"""Deployment on loopback over TLS with SuperNode authentication (the documented default, docs/DEPLOY.md).

One real deployment serves two checks (each costs Flower's process start-ups, so it runs once per module):
a SuperLink with TLS and ``--enable-supernode-auth``, the platforms' keys registered with ``flwr supernode
register``, one real SuperNode per platform holding its private key, ``flwr run`` with ``root-certificates``
and the registered node ids as ``federation.nodes``, three rounds. While it trains round 2 the video node is
killed (its process group, SIGKILL); round 2 goes on with the other two (quorum 2) once the SuperLink reports
the node offline (two missed heartbeats, well before ``round_timeout``); the node is restarted with the same
key (so the same node id) until the SuperLink takes it back, and trains again in round 3. Then
``test_tls_and_node_authenticated_superlink_and_one_supernode_per_platform`` checks what a plain deployment
must show (every platform trains in the rounds its node is up, is scored on its whole test split, keeps
its caches and local state on its node) and
``test_a_supernode_killed_in_round_2_leaves_the_run_going_and_rejoins_when_restarted`` what the fault must
show. Small on purpose (tiny model, a fifth of ecommerce's users, two local steps); what it costs is
Flower's: a fresh ClientApp process per message (~20-26 s on 2 busy cores, most of it imports) and the
~60 s a dead node stays listed online (two missed 30 s heartbeats). Beside it, a SuperNode whose key was
never registered is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.federated.deployment import PLATFORMS, Deployment, Stream, free_ports

ROUNDS = 3  # the kill in round 2, the rejoin in round 3
ROUND_TIMEOUT = 180  # far above an honest message (~26 s on 2 busy cores); the dead node costs Flower's ~60 s
OVERRIDES = (
    "model=tiny train=smoke model.hybrid=true platforms.ecommerce.user_fraction=0.2 "
    f"federation.rounds={ROUNDS} federation.local_steps=2 federation.eval_max_users=100 train.num_negatives=32 "
    f"federation.min_clients=2 federation.wait_timeout=60 federation.round_timeout={ROUND_TIMEOUT}"
)
pytestmark = pytest.mark.slow


def _supervise(
    start: Callable[[str], subprocess.Popen[bytes]], stop: threading.Event
) -> tuple[list[str], threading.Thread]:
    """Start a node, and again whenever it exits, until ``stop`` (what systemd's ``Restart=`` does).

    Returns the restarts' log names and the supervising thread. A node restarted within ~60 s of its
    death is refused activation (the SuperLink still lists its id online until two heartbeats are
    missed) and exits: the next start succeeds.
    """
    names: list[str] = []

    def loop() -> None:
        proc = None
        while not stop.is_set():
            if proc is None or proc.poll() is not None:
                names.append(f"supernode_video_{len(names) + 2}")
                proc = start(names[-1])
            stop.wait(2.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return names, thread


@dataclass
class Run:
    """What the deployment left: its folder, the results document, the run's streamed output, the logs."""

    tmp: Path
    out: Path
    doc: dict[str, Any]
    stdout: str
    ids: dict[str, int]
    round2_train: float  # from the kill to the server's "no training reply" for round 2
    restarts: list[str]  # the restarted video node's log names
    logs: dict[str, str]


@pytest.fixture(scope="module")
def deployment(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """DEPLOY.md's commands, three SuperNodes, video's SIGKILLed in round 2 and restarted; every process stopped."""
    tmp_path = tmp_path_factory.mktemp("deploy")
    link_port, *node_ports = free_ports(1 + len(PLATFORMS))
    stop = threading.Event()
    supervisor: threading.Thread | None = None
    stream: Stream | None = None
    with pytest.MonkeyPatch.context() as mp:
        for var in ("NO_PROXY", "no_proxy"):  # the Flower CLI talks HTTP to 127.0.0.1: keep any proxy out
            mp.setenv(var, "127.0.0.1,localhost")
        dep = Deployment(tmp_path)
        try:
            dep.start_superlink(link_port)
            ids = dep.register(PLATFORMS)
            nodes = ",".join(f"{ids[p]}:{p}" for p in PLATFORMS)  # the registered identities (no spaces: shlex)
            procs = {
                p: dep.start_supernode(p, port, dep.creds / f"node-{p}.key", data_root)
                for p, port in zip(PLATFORMS, node_ports, strict=True)
            }
            out = tmp_path / "out"
            run_config = f'overrides="{OVERRIDES} ++federation.nodes={{{nodes}}}" out-dir="{out}"'
            run = dep.flwr("run", str(REPO_ROOT), "fedrec-test", "--stream", "--run-config", run_config)
            stream = Stream(run)
            deadline = time.monotonic() + 400
            while not (out / "history.json").is_file():  # written as round 1 ends, just before round 2's messages
                assert time.monotonic() < deadline and run.poll() is None, stream.text[-3000:]
                time.sleep(0.05)
            while dep.log("supernode_video").count("Receiving: train message") < 2:  # round 2's, being trained
                assert time.monotonic() < deadline and run.poll() is None, stream.text[-3000:]
                time.sleep(0.05)
            os.killpg(procs["video"].pid, signal.SIGKILL)  # the node and its ClientApp process, mid-round 2
            procs["video"].wait(timeout=30)
            killed = time.monotonic()
            stream.wait_for("round 2: no training reply", timeout=ROUND_TIMEOUT + 120)
            round2_train = time.monotonic() - killed
            # restarted once the SuperLink has found it offline, with its key (so its registered node id)
            key = dep.creds / "node-video.key"
            restarts, supervisor = _supervise(
                lambda name: dep.start_supernode("video", node_ports[0], key, data_root, name), stop
            )
            run.wait(timeout=600)
            stream.thread.join(timeout=10)
            assert (out / "results.json").is_file(), stream.text[-3000:]
        finally:
            if stream is not None:
                (tmp_path / "run.log").write_text(stream.text)  # the ServerApp's log, streamed
            stop.set()
            if supervisor is not None:
                supervisor.join(timeout=10)  # it starts nothing more
            dep.stop()
    names = ["superlink", *(f"supernode_{p}" for p in PLATFORMS), *restarts]
    yield Run(
        tmp=tmp_path,
        out=out,
        doc=json.loads((out / "results.json").read_text()),
        stdout=stream.text,
        ids=ids,
        round2_train=round2_train,
        restarts=restarts,
        logs={n: dep.log(n) for n in names},
    )


def test_tls_and_node_authenticated_superlink_and_one_supernode_per_platform(deployment: Run) -> None:
    doc, out = deployment.doc, deployment.out
    assert doc["command"] == "deploy" and doc["config"]["model"]["backbone"] == "tiny"
    hist = doc["federation"]["history"]
    assert [h["round"] for h in hist] == [1, 2, 3] and all(h["rejected"] == [] for h in hist)
    for h in hist:
        assert set(h["platforms"]) == set(PLATFORMS)
        up = PLATFORMS if h["round"] != 2 else ("ecommerce", "social")  # video's node is dead in round 2
        assert all(h["platforms"][p]["train"]["num_examples"] > 0 for p in up)
    for h in (hist[0], hist[2]):  # every node up: every platform validated
        assert h["cross_platform_loss"] is not None
    assert set(doc["platforms"]) == set(PLATFORMS)
    assert doc["platforms"]["social"]["test"]["users"] == 1883  # the final test covers all users
    assert "round 3/3 | xloss" in deployment.stdout  # streamed progress
    link_log = deployment.logs["superlink"]
    assert "Uvicorn running on https://127.0.0.1" in link_log  # TLS
    assert "SuperNode authentication is disabled" not in link_log
    for platform in PLATFORMS:
        cache = deployment.tmp / f"cache_{platform}"
        # the frozen lower layers are cached on the node's disk, reused by later rounds
        assert list((cache / "lower").glob("lower-*.pt"))
        # the platform-local item-ID embeddings persist on the node, one file per round it trained (video's
        # node, killed in round 2 and restarted, keeps round 1's and adds round 3's); never on the server
        states = sorted(p.name for p in (cache / "client_state").rglob("local-r*.pt"))
        trained = (
            ["local-r00001.pt", "local-r00003.pt"]
            if platform == "video"
            else ["local-r00001.pt", "local-r00002.pt", "local-r00003.pt"]
        )
        assert states == trained, (platform, states)
    assert not list(out.rglob("local-r*.pt"))


def test_a_supernode_killed_in_round_2_leaves_the_run_going_and_rejoins_when_restarted(deployment: Run) -> None:
    doc, stdout = deployment.doc, deployment.stdout
    hist = doc["federation"]["history"]
    trained = [sorted(p for p, v in h["platforms"].items() if v["train"]) for h in hist]
    everyone = sorted(PLATFORMS)
    assert trained == [everyone, ["ecommerce", "social"], everyone], trained
    assert len(hist) == ROUNDS and hist[1]["platforms"]["video"]["valid"] is None
    assert hist[1]["cross_platform_loss"] is None and hist[-1]["cross_platform_loss"] is not None
    assert all(h["rejected"] == [] for h in hist)
    assert set(doc["platforms"]) == set(PLATFORMS)  # all scored at the end
    assert f"round 2: no training reply from node(s) [{deployment.ids['video']}]" in stdout
    # the SuperLink answered for the dead node once it missed two heartbeats: no need to wait round_timeout
    assert "no reply from node" in stdout and deployment.round2_train < 90 < ROUND_TIMEOUT
    restarts = deployment.restarts
    assert restarts and any("Exit Code" not in deployment.logs[n] for n in restarts)  # one restart stayed up
    assert "Uvicorn running on https://127.0.0.1" in deployment.logs["superlink"]  # TLS, node authentication on
    assert "SuperNode authentication is disabled" not in deployment.logs["superlink"]


def test_a_supernode_with_an_unregistered_key_is_refused(data_root: Path, tmp_path: Path) -> None:
    link_port, social_port = free_ports(2)
    dep = Deployment(tmp_path)
    try:
        dep.start_superlink(link_port)
        rogue = dep.start_supernode("social", social_port, dep.creds / "node-social.key", data_root)
        dep.register(("video",))  # while the rogue starts; social's key is never registered
        assert rogue.wait(timeout=120) != 0  # the node gives up: it never gets a message
        node_log = dep.log("supernode_social")
        # Flower's exit code 305: the SuperNode could not connect (the process itself then exits with 1)
        assert "Exit Code: 305" in node_log and "Failed to activate SuperNode" in node_log
        assert "No SuperNode found with the given public key" in dep.log("superlink")
        listing = dep.flwr("supernode", "list", "fedrec-test", "--format", "json")
        out, _ = listing.communicate(timeout=60)
        nodes = json.loads(out[out.index("{") :])["nodes"]
        assert len(nodes) == 1 and nodes[0]["status"] == "registered"  # only video's key; the rogue never joined
        # what docs/DEPLOY.md warns about: the Control API has no user authentication, so anyone who reaches
        # the port (with nothing but the CA certificate) can register a key; the port must be restricted
        anyone = dep.flwr("supernode", "register", str(dep.creds / "node-social.pub"), "fedrec-test")
        assert "registered successfully" in anyone.communicate(timeout=60)[0]
    finally:
        dep.stop()


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Flower CLI talks HTTP to 127.0.0.1: keep any proxy settings out of it."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
