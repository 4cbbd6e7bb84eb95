"""Deployment on loopback over TLS with SuperNode authentication (the documented default, docs/DEPLOY.md).

A real SuperLink (``--ssl-*``, ``--enable-supernode-auth``), the platforms' keys registered with
``flwr supernode register``, one real SuperNode per platform holding its private key, ``flwr run``
with ``root-certificates``, two rounds; and a SuperNode whose key was never registered is refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from fedrec.cli.deploy import write_credentials
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
PLATFORMS = ("video", "ecommerce", "social")
OVERRIDES = (
    "model=tiny train=smoke model.hybrid=true federation.rounds=2 federation.local_steps=3 "
    "federation.eval_max_users=200 train.num_negatives=64"
)
pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], ca: Path, timeout: float = 120.0) -> None:
    """Wait until the SuperLink answers on its HTTPS API (its certificate checked against our CA)."""
    context = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "flower-superlink exited"
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=1, context=context)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the SuperLink did not answer on port {port} within {timeout}s")


class Deployment:
    """Processes of a deployment on 127.0.0.1 (each leads its own process group), their logs, the flwr config."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.creds = tmp_path / "creds"
        write_credentials(self.creds, ["127.0.0.1"], PLATFORMS)  # what `fedrec deploy credentials` writes
        self.ca = self.creds / "ca.crt"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # Flower spawns flower-superexec by name
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }
        self.procs: list[subprocess.Popen[Any]] = []
        self.logs: list[IO[bytes]] = []
        self.port = 0
        self.user = tmp_path / "user"

    def start(self, name: str, args: list[str], home: Path) -> subprocess.Popen[bytes]:
        home.mkdir(parents=True, exist_ok=True)
        log = open(self.tmp / f"{name}.log", "wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            args, env={**self.env, "FLWR_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def start_superlink(self, port: int) -> None:
        """TLS (the CA, the server certificate and key) and SuperNode authentication, bound to loopback."""
        self.port = port
        c = self.creds
        link = self.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(c / "ca.crt")]
            + ["--ssl-certfile", str(c / "server.pem"), "--ssl-keyfile", str(c / "server.key")]
            + ["--enable-supernode-auth", "--database", str(self.tmp / "link" / "state.db")]
            + ["--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
            self.tmp / "link",
        )
        self.user.mkdir()
        (self.user / "config.toml").write_text(
            f'[superlink]\ndefault = "fedrec-test"\n\n[superlink.fedrec-test]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{self.ca}"\n'
        )
        _wait_healthy(port, link, self.ca)

    def flwr(self, *args: str) -> subprocess.Popen[str]:
        """``flwr <args>`` against the SuperLink, as the operator (its config names the CA); stopped by stop()."""
        proc = subprocess.Popen(
            [str(BIN / "flwr"), *args],
            env={**self.env, "FLWR_HOME": str(self.user)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def register(self, platforms: tuple[str, ...]) -> dict[str, int]:
        """``flwr supernode register node-<platform>.pub`` for each platform (at once: each CLI takes seconds).

        Returns each platform's node id, as the SuperLink assigned it.
        """
        procs = {
            p: self.flwr("supernode", "register", str(self.creds / f"node-{p}.pub"), "fedrec-test", "--name", p)
            for p in platforms
        }
        ids = {}
        for p, proc in procs.items():
            out, _ = proc.communicate(timeout=60)
            found = re.search(r"SuperNode (\d+) registered successfully", out)
            assert proc.returncode == 0 and found, f"{p}: {out}"
            ids[p] = int(found.group(1))
        return ids

    def start_supernode(
        self, platform: str, port: int, key: Path, data_root: Path, name: str = ""
    ) -> subprocess.Popen[bytes]:
        """A SuperNode serving ``platform`` with ``key``; its log: ``<name>.log`` (``supernode_<platform>``)."""
        node_config = f"platform='{platform}' data-root='{data_root}' cache-dir='{self.tmp / f'cache_{platform}'}'"
        return self.start(
            name or f"supernode_{platform}",
            [
                str(BIN / "flower-supernode"),
                "--root-certificates",
                str(self.ca),
                "--auth-supernode-private-key",
                str(key),
            ]
            + ["--superlink", f"127.0.0.1:{self.port}", "--port", str(port), "--node-config", node_config],
            self.tmp / f"node_{platform}",
        )

    def stop(self) -> None:
        """Stop every process we started (each leads its own process group: its children go with it)."""
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
        for log in self.logs:
            log.close()
        assert all(p.poll() is not None for p in self.procs)


def test_tls_and_node_authenticated_superlink_and_one_supernode_per_platform(data_root: Path, tmp_path: Path) -> None:
    link_port, *node_ports = _free_ports(1 + len(PLATFORMS))
    dep = Deployment(tmp_path)
    try:
        dep.start_superlink(link_port)
        out = tmp_path / "out"
        run_config = f'overrides="{OVERRIDES}" out-dir="{out}"'
        # launched first: packaging the app and starting the ServerApp overlap the nodes' registration and
        # start-up (the ServerApp waits until every platform's node is connected)
        run = dep.flwr("run", str(REPO_ROOT), "fedrec-test", "--stream", "--run-config", run_config)
        dep.register(PLATFORMS)
        for platform, port in zip(PLATFORMS, node_ports, strict=True):
            dep.start_supernode(platform, port, dep.creds / f"node-{platform}.key", data_root)
        stdout, _ = run.communicate(timeout=900)
        assert (out / "results.json").is_file(), stdout[-3000:]
        doc = json.loads((out / "results.json").read_text())
        assert doc["command"] == "deploy" and doc["config"]["model"]["backbone"] == "tiny"
        hist = doc["federation"]["history"]
        assert [h["round"] for h in hist] == [1, 2] and all(h["rejected"] == [] for h in hist)
        for h in hist:
            assert set(h["platforms"]) == set(PLATFORMS) and h["cross_platform_loss"] is not None
            assert all(v["train"]["num_examples"] > 0 for v in h["platforms"].values())
        assert set(doc["platforms"]) == set(PLATFORMS)
        assert doc["platforms"]["social"]["test"]["users"] == 1883  # the final test covers all users
        assert "round 2/2 | xloss" in stdout  # streamed progress
        link_log = dep.log("superlink")
        assert "Uvicorn running on https://127.0.0.1" in link_log  # TLS
        assert "SuperNode authentication is disabled" not in link_log
        for platform in PLATFORMS:
            cache = tmp_path / f"cache_{platform}"
            # the frozen lower layers are cached on the node's disk, reused by later rounds
            assert list((cache / "lower").glob("lower-*.pt"))
            # the platform-local item-ID embeddings persist on the node, one file per round; never on the server
            states = sorted(p.name for p in (cache / "client_state").rglob("local-r*.pt"))
            assert states == ["local-r00001.pt", "local-r00002.pt"], states
        assert not list(out.rglob("local-r*.pt"))
    finally:
        dep.stop()


def test_a_supernode_with_an_unregistered_key_is_refused(data_root: Path, tmp_path: Path) -> None:
    link_port, social_port = _free_ports(2)
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
