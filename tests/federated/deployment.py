"""Real Flower processes on 127.0.0.1 for the deployment tests: ports, a TLS + node-authenticated SuperLink,
SuperNodes, the ``flwr`` CLI as the operator, and every process stopped (each leads its own process group)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from fedrec.cli.deploy import write_credentials

BIN = Path(sys.executable).parent
PLATFORMS = ("video", "ecommerce", "social")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], ca: Path, timeout: float = 120.0) -> None:
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

    def start_superlink(self, port: int, name: str = "superlink") -> subprocess.Popen[bytes]:
        """TLS (the CA, the server certificate and key) and SuperNode authentication, bound to loopback.

        Its state (the registered keys, the runs) is in one database file: a SuperLink started
        again under the same folder knows the nodes registered before.
        """
        self.port = port
        c = self.creds
        link = self.start(
            name,
            [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(c / "ca.crt")]
            + ["--ssl-certfile", str(c / "server.pem"), "--ssl-keyfile", str(c / "server.key")]
            + ["--enable-supernode-auth", "--database", str(self.tmp / "link" / "state.db")]
            + ["--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
            self.tmp / "link",
        )
        self.user.mkdir(exist_ok=True)
        (self.user / "config.toml").write_text(
            f'[superlink]\ndefault = "fedrec-test"\n\n[superlink.fedrec-test]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{self.ca}"\n'
        )
        wait_healthy(port, link, self.ca)
        return link

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
        """Stop every process we started and every process they started.

        Each of ours leads its own process group, but Flower starts the SuperExec in a session
        of its own (and the ServerApp under it): those are found as descendants first and
        killed if they are still running once their parents are gone.
        """
        descendants = []
        for p in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(p.pid).children(recursive=True)
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
        _, alive = psutil.wait_procs([d for d in descendants if running(d)], timeout=5)
        for d in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                d.kill()
        deadline = time.monotonic() + 15
        while left := [d for d in descendants if running(d)]:
            assert time.monotonic() < deadline, f"still running after SIGKILL: {left}"
            time.sleep(0.2)


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan's zombie stays until the host's init reaps it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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
