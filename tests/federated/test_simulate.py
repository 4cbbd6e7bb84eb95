"""``fedrec simulate`` through Flower's simulation engine on real data (tiny model, few steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fedrec.federated.local import run_local
from tests.conftest import REPO_ROOT
from tests.federated.same_run import assert_same_run, checkpoint_round

FEDREC = [sys.executable, "-m", "fedrec.cli"]
ROUNDS = 3
VALID_USERS = 300  # federation.eval_max_users: validation on a fixed subset of 300 users each round
BASE = [
    "model=tiny",
    "train=smoke",
    "platform=[video,ecommerce]",
    "federation.local_steps=3",
    "train.num_negatives=64",
    f"federation.eval_max_users={VALID_USERS}",
]
pytestmark = pytest.mark.slow


def _env(data_root: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(cache)}


def _simulate(args: list[str], data_root: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDREC, "simulate", *BASE, *args], capture_output=True, text=True, env=_env(data_root, cache), timeout=600
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def resumed(data_root: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """A run killed (SIGKILL) after its round-2 checkpoint, then resumed with ``federation.resume=true``.

    Returns the run directory, the round the checkpoint had at the kill, and the resumed
    run's stdout and stderr.
    """
    out = tmp_path_factory.mktemp("sim") / "run"
    ckpt = out / "checkpoint" / "checkpoint.pt"
    args = [*FEDREC, "simulate", *BASE, f"federation.rounds={ROUNDS}", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        args, env=_env(data_root, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    killed_at = 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            killed_at = checkpoint_round(ckpt)
            if killed_at >= 2:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and the Ray processes it started (its own group)
        proc.wait(timeout=60)
    assert 2 <= killed_at < ROUNDS, f"expected to kill after round 2, the checkpoint says {killed_at}"
    assert not (out / "results.json").exists()
    again = _simulate(
        ["federation.resume=true", f"federation.rounds={ROUNDS}", f"hydra.run.dir={out}"], data_root, cache
    )
    assert again.returncode == 0, again.stderr[-4000:]
    return out, killed_at, again.stdout, again.stderr


def test_simulate_writes_results_json(resumed: tuple[Path, int, str, str]) -> None:
    out, _, stdout, stderr = resumed
    doc = json.loads((out / "results.json").read_text())
    fed = doc["federation"]
    assert doc["command"] == "simulate" and fed["aggregation"] == "fedavg" and fed["rounds"] == ROUNDS
    assert [h["round"] for h in fed["history"]] == list(range(1, ROUNDS + 1))
    losses = [h["cross_platform_loss"] for h in fed["history"]]
    assert fed["best_round"] == 1 + losses.index(min(losses)) and doc["cross_platform_loss"] == min(losses)
    for h in fed["history"]:
        valid = {p: v["valid"] for p, v in h["platforms"].items()}
        assert h["cross_platform_loss"] == pytest.approx((valid["video"]["loss"] + valid["ecommerce"]["loss"]) / 2)
        assert valid["video"]["users"] == valid["ecommerce"]["users"] == VALID_USERS
        train = {p: v["train"] for p, v in h["platforms"].items()}
        assert train["video"]["num_examples"] == 48 and train["video"]["steps"] == 3  # samples, not batches
        assert h["rejected"] == [] and h["bytes"]["up_per_client"] > fed["adapter_bytes"]
        assert h["bytes"]["down_per_client"] == 2 * h["bytes"]["up_per_client"]  # train + evaluate messages
    assert fed["adapter_bytes"] < fed["backbone_bytes"] / 100
    for p, users in (("video", 943), ("ecommerce", 4905)):
        m = doc["platforms"][p]["test"]
        assert m["users"] == users and 0.0 <= m["NDCG@10"] <= m["HR@10"] <= 1.0
    final = torch.load(out / "global_adapter.pt", weights_only=True)
    assert any(float(v.abs().max()) > 0 for k, v in final.items() if "lora_B" in k)  # B starts at zero
    assert "NDCG@10" in stdout and "results:" in stdout  # the final table
    assert f"round {ROUNDS}/{ROUNDS} | xloss" in stderr  # per-round progress
    assert (out / "flwr_home").is_dir() and (out / "fedrec_config.yaml").is_file()


def test_simulate_compares_with_local_only_and_baselines(resumed: tuple[Path, int, str, str]) -> None:
    """Local-only models get the clients' local compute (all rounds, also the resumed ones); the
    transfer matrix's diagonal is the local-only model; the baselines are scored beside."""
    out, _, stdout, _ = resumed
    doc = json.loads((out / "results.json").read_text())
    comp = doc["comparison"]
    local = comp["local_only"]["models"]
    for p in ("video", "ecommerce"):
        assert local[p]["steps"] == 3 * ROUNDS  # federation.local_steps=3 in each of the rounds
        transfer = comp["local_only"]["transfer"]["metrics"]
        assert transfer[p][p] == local[p]["test"]
        other = "ecommerce" if p == "video" else "video"
        assert transfer[other][p]["users"] == local[p]["test"]["users"]
        assert transfer[other][p] != transfer[p][p]  # another adapter scores differently
        assert set(comp["baselines"][p]) == {"mostpop", "itemknn"}
        assert 0.0 < comp["baselines"][p]["itemknn"]["coverage@10"] <= 1.0
        assert 0.0 < doc["platforms"][p]["test"]["coverage@10"] <= 1.0
    assert "local-only" in stdout and "itemknn" in stdout and "transfer" in stdout


def test_resume_after_kill_equals_an_uninterrupted_run(resumed: tuple[Path, int, str, str], tmp_path: Path) -> None:
    """The killed-and-resumed Flower run ends where an uninterrupted run (in-process, same seed) ends."""
    out, killed_at, _, stderr = resumed
    assert f"resuming after round {killed_at}" in stderr
    cfg = OmegaConf.load(out / "fedrec_config.yaml")
    cfg.federation.resume = False
    cfg.federation.checkpoint_dir = str(tmp_path / "checkpoint")
    cfg.federation.client_state_dir = str(tmp_path / "client_state")
    ref = run_local(cfg, tmp_path)
    doc = json.loads((out / "results.json").read_text())
    assert_same_run(ref, tmp_path, doc, out, ("video", "ecommerce"))


def test_faulty_client_is_rejected_and_rounds_complete(data_root: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "faulty"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.federated.faulty_client", str(out), *BASE, "federation.rounds=2"],
        capture_output=True,
        text=True,
        env=_env(data_root, cache),
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    hist = doc["federation"]["history"]
    assert [h["round"] for h in hist] == [1, 2]
    (r1,), (r2,) = hist[0]["rejected"], hist[1]["rejected"]
    assert r1["platform"] == r2["platform"] == "video"
    assert "has shape" in r1["reason"] and "non-finite" in r2["reason"]
    for h in hist:  # the round went on with the other client
        assert h["platforms"]["video"]["train"] is None and h["platforms"]["ecommerce"]["train"]["num_examples"] > 0
        assert h["cross_platform_loss"] is not None
    assert "round 1: rejected the update of video" in proc.stderr and "has shape" in proc.stderr
    assert "round 2: rejected the update of video" in proc.stderr and "non-finite" in proc.stderr
    assert set(doc["platforms"]) == {"video", "ecommerce"}
