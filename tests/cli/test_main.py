"""The ``fedrec`` command line end to end (real data, tiny model for speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from fedrec import cli

FEDREC = [sys.executable, "-m", "fedrec.cli"]


def run(args: list[str], data_root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    return subprocess.run([*FEDREC, *args], capture_output=True, text=True, env=env, timeout=600)


def test_train_local_writes_results_json(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        ["train", "mode=local", "platform=video", "model=tiny", "train=smoke", f"hydra.run.dir={out}"],
        data_root,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"] == "train" and doc["mode"] == "local"
    assert doc["config"]["model"]["backbone"] == "tiny" and doc["config"]["train"]["max_steps"] == 5
    assert set(doc["platforms"]) == {"video"}
    for split in ("valid", "test"):
        m = doc["platforms"]["video"][split]
        assert m["users"] == 943 and 0.0 <= m["NDCG@10"] <= m["HR@10"] <= 1.0 and 0.0 < m["MRR"] <= 1.0
    assert doc["cross_platform_loss"] == pytest.approx(doc["platforms"]["video"]["valid"]["loss"])
    assert doc["training"]["video"]["steps"] == 5 and doc["seconds"] > 0
    assert "NDCG@10" in proc.stdout  # the table


def test_centralized_pools_platforms_and_weights_the_loss(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        [
            "train",
            "mode=centralized",
            "platform=[video,ecommerce]",
            "model=tiny",
            "train=smoke",
            "eval.loss_weights=users",
            "eval.splits=[valid]",
            f"hydra.run.dir={out}",
        ],
        data_root,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["training"]) == 1 and set(next(iter(doc["training"])).split("+")) == {"ecommerce", "video"}
    p = doc["platforms"]
    expected = (943 * p["video"]["valid"]["loss"] + 4905 * p["ecommerce"]["valid"]["loss"]) / (943 + 4905)
    assert doc["cross_platform_loss"] == pytest.approx(expected, rel=1e-6)


def test_baselines_command(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bl"
    args = ["baselines", "platform=video", "baselines=[mostpop,itemknn,ease,sasrec]", f"hydra.run.dir={out}"]
    args += ["baseline.ease.lambdas=[50,200]", "baseline.sasrec.max_epochs=1"]
    proc = run(args, data_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    entry = doc["platforms"]["video"]["itemknn"]
    assert entry["model"] == "itemknn" and entry["test"]["NDCG@10"] == pytest.approx(0.0280, abs=1e-3)
    ease = doc["platforms"]["video"]["ease"]
    assert ease["fit"]["lambda"] == 200.0 and set(ease["fit"]["valid_NDCG@10"]) == {"50", "200"}
    assert ease["test"]["NDCG@10"] == pytest.approx(0.0391, abs=1e-3)  # PROTOCOL.md
    sasrec = doc["platforms"]["video"]["sasrec"]["fit"]
    assert sasrec["epochs"] == 1 and sasrec["best_epoch"] == 1 and sasrec["stopped"] == "max_epochs"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochz=1", "Key 'epochz' not in 'TrainConfig'"),
        ("nosuchkey=1", "Key 'nosuchkey' not in 'FedrecConfig'"),
        ("train.batch_size=many", "train.batch_size"),
        ("mode=federated", "mode='federated' is not one of"),
    ],
)
def test_bad_config_is_a_clear_error(override: str, message: str, data_root: Path, tmp_path: Path) -> None:
    proc = run(["train", override, f"hydra.run.dir={tmp_path / 'x'}"], data_root, tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    args = ["train", "platform=video", "model=tiny", "data.download=false", f"hydra.run.dir={tmp_path / 'x'}"]
    proc = run(args, tmp_path / "empty", tmp_path)
    assert proc.returncode == 2
    assert "missing data file" in proc.stderr and "fedrec data download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_without_network_tries_download_then_fails_cleanly(tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"  # discard port: every request through this proxy fails at once
    env = {
        **os.environ,
        "FEDREC_DATA": str(tmp_path / "empty"),
        "FEDREC_CACHE": str(tmp_path / "cache"),
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
    }
    args = ["train", "platform=video", "model=tiny", f"hydra.run.dir={tmp_path / 'x'}"]
    proc = subprocess.run([*FEDREC, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "platform video: files missing" in proc.stderr and "FEDREC_DATA" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_backbone_is_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    proc = run(
        [
            "train",
            "model=minilm_lora",
            "platform=video",
            f"model.backbone={tmp_path / 'nowhere'}",
            f"hydra.run.dir={tmp_path / 'x'}",
        ],
        data_root,
        tmp_path,
    )
    assert proc.returncode == 2 and "not found or has no config.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_download_without_network_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert cli.main(["data", "download", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fedrec: error:") and "FEDREC_DATA" in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "baselines", "data download"))
    assert cli.main(["nonsense"]) == 2
