"""The SuperLink and its ServerApp SIGKILLed mid-run, started again, and the run resumed (issue 15, item 5).

Real processes on 127.0.0.1, over TLS with SuperNode authentication: a SuperLink, the two platforms'
keys registered, one SuperNode per platform, ``flwr run`` for two rounds. While the nodes train round 2
the server side is SIGKILLed at once, as a crash of the server's host would: the SuperLink, the SuperExec
it starts (Flower detaches that into its own session, so the SuperLink's process group alone misses it)
and the run's ServerApp process. The round in progress is lost, round 1's checkpoint is on disk.
The SuperLink is started again on the same port and database (its registered keys survive), the
SuperNodes, left running, reconnect on their own, and ``flwr run`` with ``federation.resume=true`` and
the same ``out-dir`` continues after round 1. The run must end where an uninterrupted run of the
same config ends: the in-process federation (:func:`fedrec.federated.local.run_local`, the code both
apps run; ``tests/federated/test_simulate.py`` shows Flower's simulation engine ends there too).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from omegaconf import OmegaConf

from fedrec.federated.local import run_local
from tests.conftest import REPO_ROOT
from tests.federated.deployment import Deployment, Stream, free_ports, running
from tests.federated.same_run import assert_same_run, checkpoint_round

PLATFORMS = ("video", "ecommerce")
ROUNDS = 2  # killed in round 2, resumed after round 1
OVERRIDES = (
    "model=tiny train=smoke platform=[video,ecommerce] platforms.ecommerce.user_fraction=0.2 "
    f"federation.rounds={ROUNDS} federation.local_steps=2 federation.eval_max_users=100 train.num_negatives=32 "
    "federation.round_timeout=180"
)
pytestmark = pytest.mark.slow


def _serverapps(port: int) -> list[psutil.Process]:
    """Live ServerApp processes that talk to the SuperLink on ``port`` (ours, not another test's)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "serverapp" in cmd and f"127.0.0.1:{port}" in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def _run(dep: Deployment, overrides: str, out: Path) -> tuple[Any, Stream]:
    run_config = f'overrides="{overrides}" out-dir="{out}"'
    proc = dep.flwr("run", str(REPO_ROOT), "fedrec-test", "--stream", "--run-config", run_config)
    return proc, Stream(proc)


@pytest.fixture(scope="module")
def resumed(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run, SIGKILL the SuperLink in round 2, start it again, resume; every process stopped."""
    tmp = tmp_path_factory.mktemp("deploy_resume")
    link_port, *node_ports = free_ports(1 + len(PLATFORMS))
    out = tmp / "out"
    ckpt = out / "checkpoint" / "checkpoint.pt"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("NO_PROXY", "no_proxy"):  # the Flower CLI talks HTTP to 127.0.0.1: keep any proxy out
            mp.setenv(var, "127.0.0.1,localhost")
        dep = Deployment(tmp)
        first = second = None
        try:
            link = dep.start_superlink(link_port)
            ids = dep.register(PLATFORMS)
            overrides = f"{OVERRIDES} ++federation.nodes={{{','.join(f'{ids[p]}:{p}' for p in PLATFORMS)}}}"
            for p, port in zip(PLATFORMS, node_ports, strict=True):
                dep.start_supernode(p, port, dep.creds / f"node-{p}.key", data_root)
            run, first = _run(dep, overrides, out)
            deadline = time.monotonic() + 400
            # round 1 checkpointed, and round 2's training message being trained on a node
            while checkpoint_round(ckpt) < 1 or dep.log("supernode_video").count("Receiving: train message") < 2:
                assert time.monotonic() < deadline and run.poll() is None, first.text[-3000:]
                time.sleep(0.05)
            apps = _serverapps(link_port)
            assert apps, "no ServerApp process found for the run"
            server_side = [psutil.Process(link.pid), *psutil.Process(link.pid).children(recursive=True), *apps]
            for proc in server_side:  # the SuperLink, its SuperExec (own session), the ServerApp: the host crashed
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            link.wait(timeout=30)
            killed_at = checkpoint_round(ckpt)
            gone = time.monotonic() + 30
            while alive := [proc for proc in server_side if running(proc)]:
                assert time.monotonic() < gone, f"still running 30 s after SIGKILL: {alive}"
                time.sleep(0.2)
            assert not _serverapps(link_port)
            run.wait(timeout=120)  # `flwr run --stream` ends when its SuperLink goes away
            assert not (out / "results.json").exists()
            dep.start_superlink(link_port, name="superlink_2")  # same port, same database: the same registrations
            again, second = _run(dep, f"{overrides} federation.resume=true", out)
            again.wait(timeout=600)
            second.thread.join(timeout=10)
            assert again.returncode == 0 and (out / "results.json").is_file(), second.text[-3000:]
        finally:
            if first is not None:
                (tmp / "run_1.log").write_text(first.text)
            if second is not None:
                (tmp / "run_2.log").write_text(second.text)
            dep.stop()
    return {
        "tmp": tmp,
        "out": out,
        "killed_at": killed_at,
        "doc": json.loads((out / "results.json").read_text()),
        "resumed_log": second.text,
        "logs": {n: dep.log(n) for n in ("superlink", "superlink_2", *(f"supernode_{p}" for p in PLATFORMS))},
    }


def test_a_killed_superlink_restarted_with_resume_ends_where_an_uninterrupted_run_ends(
    resumed: dict[str, Any], data_root: Path, tmp_path: Path
) -> None:
    doc, out = resumed["doc"], resumed["out"]
    assert resumed["killed_at"] == 1  # round 2 was in progress: lost, then run again
    assert "resuming after round 1" in resumed["resumed_log"]
    assert "Uvicorn running on https://127.0.0.1" in resumed["logs"]["superlink_2"]  # TLS again
    assert "SuperNode authentication is disabled" not in resumed["logs"]["superlink_2"]
    hist = doc["federation"]["history"]
    assert [h["round"] for h in hist] == [1, 2] and all(h["rejected"] == [] for h in hist)
    assert all(h["platforms"][p]["train"]["num_examples"] > 0 for h in hist for p in PLATFORMS)
    # the uninterrupted run: the same config, in process
    cfg = OmegaConf.create(doc["config"])
    cfg.federation.resume = False
    cfg.federation.nodes = {}
    cfg.federation.checkpoint_dir = str(tmp_path / "checkpoint")
    cfg.federation.client_state_dir = str(tmp_path / "client_state")
    cfg.data.root = str(data_root)
    cfg.data.cache_dir = str(tmp_path / "cache")
    ref = run_local(cfg, tmp_path)
    assert_same_run(ref, tmp_path, doc, out, PLATFORMS)
