"""A SuperNode SIGKILLed in round 2 of a TLS + node-authenticated deployment: the run finishes, the node rejoins.

Real processes on 127.0.0.1 (the helpers of ``test_deploy.py``): a SuperLink with TLS and
``--enable-supernode-auth``, two registered SuperNodes, ``flwr run`` with the registered node ids
as ``federation.nodes``. While it trains round 2 the video node is killed (its process group,
SIGKILL); round 2 goes on with ecommerce alone (quorum 1) once the SuperLink reports the node
offline (two missed heartbeats, well before ``round_timeout``); the node is restarted
with the same key (so the same node id) until the SuperLink takes it back, and trains again in
round 3. Small on purpose (tiny model, a fifth of ecommerce's users, two local steps); what it
costs is Flower's: a fresh ClientApp process per message (~20-26 s on 2 busy cores, most of it
imports) and the ~60 s a dead node stays listed online (two missed 30 s heartbeats).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.federated.test_deploy import Deployment, _free_ports
from tests.federated.test_deploy import _no_proxy_for_loopback as _no_proxy_for_loopback  # autouse fixture

pytestmark = pytest.mark.slow

PLATFORMS = ("video", "ecommerce")
ROUNDS = 3
ROUND_TIMEOUT = 180  # far above an honest message (~26 s on 2 busy cores); the dead node costs Flower's ~60 s


class Stream:
    """The lines of a process's stdout as they come (read by a thread), and a wait for one of them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0 and self.thread.is_alive(), f"no {text!r} in the run's output:\n{self.text[-3000:]}"
                self.changed.wait(left)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _supervise(start: Callable[[str], subprocess.Popen[bytes]], stop: threading.Event) -> list[str]:
    """Start a node, and again whenever it exits, until ``stop`` (what systemd's ``Restart=`` does); its log names.

    A node restarted within ~60 s of its death is refused activation (the SuperLink still
    lists its id online until two heartbeats are missed) and exits: the next start succeeds.
    """
    names: list[str] = []

    def loop() -> None:
        proc = None
        while not stop.is_set():
            if proc is None or proc.poll() is not None:
                names.append(f"supernode_video_{len(names) + 2}")
                proc = start(names[-1])
            stop.wait(2.0)

    threading.Thread(target=loop, daemon=True).start()
    return names


def test_a_supernode_killed_in_round_2_leaves_the_run_going_and_rejoins_when_restarted(
    data_root: Path, tmp_path: Path
) -> None:
    link_port, *node_ports = _free_ports(3)
    dep = Deployment(tmp_path)
    stop = threading.Event()
    try:
        dep.start_superlink(link_port)
        ids = dep.register(PLATFORMS)
        nodes = ",".join(f"{ids[p]}:{p}" for p in PLATFORMS)  # the registered identities (no spaces: shlex)
        overrides = (
            f"model=tiny train=smoke platform=[{','.join(PLATFORMS)}] platforms.ecommerce.user_fraction=0.2 "
            f"federation.rounds={ROUNDS} federation.local_steps=2 federation.eval_max_users=100 train.num_negatives=32 "
            f"federation.min_clients=1 federation.wait_timeout=60 federation.round_timeout={ROUND_TIMEOUT} "
            f"++federation.nodes={{{nodes}}}"
        )
        out = tmp_path / "out"
        run = dep.flwr(
            "run", str(REPO_ROOT), "fedrec-test", "--stream", "--run-config", f'overrides="{overrides}" out-dir="{out}"'
        )
        stream = Stream(run)
        procs = {
            p: dep.start_supernode(p, port, dep.creds / f"node-{p}.key", data_root)
            for p, port in zip(PLATFORMS, node_ports, strict=True)
        }
        deadline = time.monotonic() + 300
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
        restarts = _supervise(lambda name: dep.start_supernode("video", node_ports[0], key, data_root, name), stop)
        run.wait(timeout=400)
        stop.set()
        stream.thread.join(timeout=10)
        assert (out / "results.json").is_file(), stream.text[-3000:]
        doc = json.loads((out / "results.json").read_text())
        hist = doc["federation"]["history"]
        trained = [sorted(p for p, v in h["platforms"].items() if v["train"]) for h in hist]
        assert trained == [["ecommerce", "video"], ["ecommerce"], ["ecommerce", "video"]], trained
        assert len(hist) == ROUNDS and hist[1]["platforms"]["video"]["valid"] is None
        assert hist[1]["cross_platform_loss"] is None and hist[-1]["cross_platform_loss"] is not None
        assert all(h["rejected"] == [] for h in hist)
        assert set(doc["platforms"]) == set(PLATFORMS)  # both scored at the end
        assert f"round 2: no training reply from node(s) [{ids['video']}]" in stream.text
        # the SuperLink answered for the dead node once it missed two heartbeats: no need to wait round_timeout
        assert "no reply from node" in stream.text and round2_train < 90 < ROUND_TIMEOUT
        assert restarts and any("Exit Code" not in dep.log(n) for n in restarts)  # one restart stayed up
        assert "Uvicorn running on https://127.0.0.1" in dep.log("superlink")  # TLS, node authentication on
        assert "SuperNode authentication is disabled" not in dep.log("superlink")
    finally:
        if "stream" in locals():
            (tmp_path / "run.log").write_text(stream.text)  # the ServerApp's log, streamed
        stop.set()
        time.sleep(0.5)  # the supervisor starts nothing more
        dep.stop()
