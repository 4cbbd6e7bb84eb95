"""User-level DP in federated training: cumulative epsilon per platform, budgets, ledger persistence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.cli.jobs import privacy_lines, simulation_privacy
from fedrec.federated.client import PlatformClient
from fedrec.federated.local import run_local
from fedrec.federated.replies import PUBLIC_TRAIN_KEYS
from fedrec.privacy import PrivacyLedger, epsilon_of, ledger_from_config
from tests.conftest import ComposeCfg

pytestmark = pytest.mark.slow


#: two platforms, three short rounds (on the tiny model)
RUN = (
    "command=simulate",
    "platform=[video,social]",
    "federation.rounds=3",
    "federation.local_epochs=0.05",
    "federation.eval_max_users=50",
)


def test_epsilon_is_cumulative_over_rounds(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    doc = run_local(compose_cfg(*RUN, "privacy=dp", "privacy.noise_multiplier=0.8"), tmp_path / "run")
    hist = doc["federation"]["history"]
    priv = doc["privacy"]
    assert priv["unit"] == "user" and priv["accountant"] == "rdp" and priv["delta"] == 1e-5
    for name, users in (("video", 943), ("social", 1883)):
        trains = [h["platforms"][name]["train"] for h in hist]
        q, steps = trains[0]["sample_rate"], int(trains[0]["steps"])
        assert q == pytest.approx(16 / users) and steps == round(0.05 / q)  # one example per sampled user
        for r, t in enumerate(trains, 1):  # one accountant over all rounds' steps, not per round
            assert t["epsilon"] == pytest.approx(epsilon_of([(0.8, q, r * steps)], 1e-5, "rdp"), rel=1e-9)
        assert trains[0]["epsilon"] < trains[1]["epsilon"] < trains[2]["epsilon"]
        assert priv["epsilon"][name] == trains[-1]["epsilon"]
        assert [e["epsilon"][name] for e in priv["per_round"]] == [t["epsilon"] for t in trains]
        (path,) = (tmp_path / "run" / "client_state" / "privacy").glob(f"{name}-*.ledger")  # the node's, not the run's
        ledger = PrivacyLedger.read(path) or {}
        assert ledger["steps"] == 3 * steps and ledger["epsilon"] == pytest.approx(trains[-1]["epsilon"])
        report = json.loads(next((tmp_path / "run" / "client_state").glob(f"*/{name}/evaluation.json")).read_text())
        assert sorted(report["valid"]) == ["1", "2", "3"] and doc["platforms"][name]["test"] == report["test"]["3"]
    title, rows = privacy_lines(simulation_privacy(doc), "cumulative over all 3 rounds")  # simulate's last table
    assert "cumulative over all 3 rounds (user-level epsilon, delta=1e-05" in title
    assert rows == [
        (p, f"{priv['epsilon'][p]:.3f}", "0.8", f"{priv['sample_rate'][p]:.4g}") for p in ("social", "video")
    ]


def test_budget_refusal_excludes_the_client_and_the_run_finishes(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*RUN, "privacy=dp", "privacy.noise_multiplier=0.8")
    q = 16 / 943
    steps = round(0.05 / q)
    one, two = (epsilon_of([(0.8, q, r * steps)], 1e-5, "rdp") for r in (1, 2))
    cfg.privacy.budget = (one + two) / 2  # video can afford one round; social (smaller q) more
    doc = run_local(cfg, tmp_path / "run")
    hist = doc["federation"]["history"]
    assert hist[0]["refused"] == [] and hist[0]["platforms"]["video"]["train"]["epsilon"] == pytest.approx(one)
    for h in hist[1:]:
        (ref,) = [r for r in h["refused"] if r["platform"] == "video"]
        assert "budget" in ref["reason"] and ref["epsilon"] == pytest.approx(one)
        assert h["platforms"]["video"]["train"] is None and h["platforms"]["social"]["train"]["num_examples"] > 0
        assert h["rejected"] == [] and h["cross_platform_loss"] is None  # validation is withheld under DP
    assert doc["privacy"]["epsilon"]["video"] == pytest.approx(one) and one <= cfg.privacy.budget


def test_target_epsilon_is_met_at_the_last_round(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    doc = run_local(compose_cfg(*RUN, "privacy=target_eps", "privacy.target_epsilon=2.0"), tmp_path / "run")
    for name, eps in doc["privacy"]["epsilon"].items():
        assert 1.8 <= eps <= 2.0, name
    assert all(h["refused"] == [] for h in doc["federation"]["history"])


def test_ledger_restored_from_run_state_is_never_behind(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*RUN, "privacy=dp")
    client = PlatformClient(cfg, "video", tmp_path / "state")
    ahead = client.open_ledger()
    ahead.save = lambda *a, **k: tmp_path  # type: ignore[method-assign]  # a copy kept in memory only
    ahead.charge(1.0, 0.02, 40, round_id=1)
    client.restore_ledger(ahead.state_dict())  # the disk had nothing: the run state wins
    assert client.open_ledger().steps == 40
    behind = ledger_from_config(cfg)
    behind.charge(1.0, 0.02, 10, round_id=1)
    client.restore_ledger({**behind.state_dict(), "fingerprint": client.fingerprint})  # behind the disk: ignored
    client.restore_ledger({**ahead.state_dict(), "history": [[1.0, 0.02, 90]], "fingerprint": "0" * 64})  # other data
    assert client.open_ledger().steps == 40


def test_flower_simulation_with_dp_logs_epsilon(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    args = [
        "simulate",
        "model=tiny",
        "train=smoke",
        "platform=[video,social]",
        "privacy=dp",
        "federation.rounds=2",
        "federation.local_epochs=0.05",
        "federation.eval_max_users=50",
        "federation.compare_local=false",
        "federation.compare_baselines=[]",
        "federation.export_joint_model=false",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    eps = doc["privacy"]["epsilon"]
    assert set(eps) == {"video", "social"} and all(0 < e < 50 for e in eps.values())
    assert f"eps social {eps['social']:.3g} video {eps['video']:.3g}" in proc.stderr  # the round-2 log line
    # what the server received: the public training metrics, and no validation at all
    for h in doc["federation"]["history"]:
        for name, rec in h["platforms"].items():
            assert rec["valid"] == {"withheld": 1}, name
            # the server's own figures besides: bytes received, the update's L2 change from the global adapter
            server_side = {"bytes_up", "update_norm"}
            assert set(rec["train"]) <= {k.replace("-", "_") for k in PUBLIC_TRAIN_KEYS} | server_side, name
    assert doc["federation"]["best_round"] == 2 and doc["cross_platform_loss"] is None  # the latest round's adapter
    # the operator of the simulation read each platform's own report for the test table
    for name in ("video", "social"):
        source = Path(doc["platforms"][name]["test_source"])
        assert source.parent.parent.parent == out / "client_state" and source.parent.name == name
        assert doc["platforms"][name]["test"] == json.loads(source.read_text())["test"]["2"]
    assert "each platform's local report" in doc["evaluation"]
    assert "no validation reached the server" in " ".join(proc.stdout.split())  # the final table's title
