"""Deployment on loopback: a real SuperLink, one real SuperNode per platform, `flwr run`, two rounds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop every process we started (each leads its own process group: its children go with it)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=15)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until the SuperLink answers on its HTTP API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "flower-superlink exited"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the SuperLink did not answer on port {port} within {timeout}s")


def test_superlink_and_one_supernode_per_platform(data_root: Path, tmp_path: Path) -> None:
    link_port, *node_ports = _free_ports(1 + len(PLATFORMS))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # Flower spawns flower-superexec by name
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str, args: list[str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        procs.append(
            subprocess.Popen(
                args, env={**env, "FLWR_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    try:
        start(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--database", str(tmp_path / "link" / "state.db")]
            + ["--host", "127.0.0.1", "--port", str(link_port), "--disable-runtime-dependency-installation"],
            tmp_path / "link",
        )
        _wait_healthy(link_port, procs[0])
        for platform, port in zip(PLATFORMS, node_ports, strict=True):
            node_config = f"platform='{platform}' data-root='{data_root}' cache-dir='{tmp_path / f'cache_{platform}'}'"
            start(
                f"supernode_{platform}",
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}"]
                + ["--port", str(port), "--node-config", node_config],
                tmp_path / f"node_{platform}",
            )
        user = tmp_path / "user"
        user.mkdir()
        (user / "config.toml").write_text(
            f'[superlink]\ndefault = "fedrec-test"\n\n[superlink.fedrec-test]\n'
            f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
        )
        out = tmp_path / "out"
        run_config = f'overrides="{OVERRIDES}" out-dir="{out}"'
        proc = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO_ROOT), "fedrec-test", "--stream", "--run-config", run_config],
            env={**env, "FLWR_HOME": str(user)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert (out / "results.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
        doc = json.loads((out / "results.json").read_text())
        assert doc["command"] == "deploy" and doc["config"]["model"]["backbone"] == "tiny"
        hist = doc["federation"]["history"]
        assert [h["round"] for h in hist] == [1, 2] and all(h["rejected"] == [] for h in hist)
        for h in hist:
            assert set(h["platforms"]) == set(PLATFORMS) and h["cross_platform_loss"] is not None
            assert all(v["train"]["num_examples"] > 0 for v in h["platforms"].values())
        assert set(doc["platforms"]) == set(PLATFORMS)
        assert doc["platforms"]["social"]["test"]["users"] == 1883  # the final test covers all users
        assert "round 2/2 | xloss" in proc.stdout + proc.stderr  # streamed progress
        for platform in PLATFORMS:
            cache = tmp_path / f"cache_{platform}"
            # the frozen lower layers are cached on the node's disk, reused by later rounds
            assert list((cache / "lower").glob("lower-*.pt"))
            # the platform-local item-ID embeddings persist on the node, one file per round; never on the server
            states = sorted(p.name for p in (cache / "client_state").rglob("local-r*.pt"))
            assert states == ["local-r00001.pt", "local-r00002.pt"], states
        assert not list(out.rglob("local-r*.pt"))
    finally:
        _stop(procs)
        for log in logs:
            log.close()
    assert all(p.poll() is not None for p in procs)


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Flower CLI talks HTTP to 127.0.0.1: keep any proxy settings out of it."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
