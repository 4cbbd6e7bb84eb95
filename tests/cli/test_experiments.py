"""``fedrec experiments``: the grid's layout, failures recorded, resuming, and a real smoke grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.cli.experiments import GRID, plan, run_experiments
from fedrec.cli.report.results import report_results

FAKE = """#!/bin/sh
# stands in for `python -m fedrec.cli <command> ...`: centralized fails, every other run writes results.json
for a in "$@"; do case "$a" in hydra.run.dir=*) dir="${a#hydra.run.dir=}";; esac; done
echo "$@" >> "$(dirname "$0")/calls.txt"
case "$*" in *mode=centralized*) echo "boom: centralized broke"; exit 3;; esac
echo '{"command": "fake"}' > "$dir/results.json"
"""


def test_plan_layout_seeds_and_override_order(tmp_path: Path) -> None:
    jobs = plan(tmp_path, seeds=[3, 4], overrides=["model=tiny", "federation.aggregation=svd"], python="py")
    keys = [j.key for j in jobs]
    assert keys[0] == "baselines/seed3" and "baselines/seed4" not in keys  # deterministic: first seed only
    assert len(jobs) == 1 + 2 * (len(GRID) - 1)
    ffa = next(j for j in jobs if j.key == "fed-ffa/seed4")
    assert ffa.run_dir == tmp_path / "fed-ffa" / "seed4" and ffa.results == ffa.run_dir / "results.json"
    argv = list(ffa.argv)
    assert argv[:4] == ["py", "-m", "fedrec.cli", "simulate"]
    assert argv.index("model=tiny") < argv.index("federation.aggregation=ffa")  # the row's own setting wins
    assert argv.index("federation.aggregation=svd") < argv.index("federation.aggregation=ffa")
    assert argv[-2:] == ["seed=4", f"hydra.run.dir={ffa.run_dir}"]
    assert "federation.evaluate_initial=true" in argv
    # the grid validates on every user unless the user's overrides say otherwise
    assert argv.index("federation.eval_max_users=-1") < argv.index("model=tiny")
    assert argv.index("model=minilm_lora") < argv.index("model=tiny")  # the two-tower grid, the user's model wins
    small = plan(tmp_path, [0], rows=["fed-fedavg"], overrides=["federation.eval_max_users=50"])[0].argv
    assert small.index("federation.eval_max_users=-1") < small.index("federation.eval_max_users=50")
    dp = next(j for j in jobs if j.key == "fed-dp-eps1/seed3")
    assert {"privacy=target_eps", "privacy.target_epsilon=1"} <= set(dp.argv)
    assert [j.key for j in plan(tmp_path, [0], rows=["centralized", "local"])] == ["local/seed0", "centralized/seed0"]
    with pytest.raises(ValueError, match="unknown rows"):
        plan(tmp_path, [0], rows=["nope"])


def test_a_failed_run_is_recorded_the_rest_go_on_and_a_rerun_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "fake.sh"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    out = tmp_path / "grid"
    rows = ["local", "centralized", "fed-svd"]
    res = run_experiments(out, [0, 1], rows, ["model=tiny"], argv=["fedrec", "experiments"], python=str(fake))
    assert res["failed"] == ["centralized/seed0", "centralized/seed1"]
    runs = json.loads((out / "experiments.json").read_text())["runs"]
    assert runs["centralized/seed1"]["status"] == "failed" and runs["centralized/seed1"]["returncode"] == 3
    assert runs["fed-svd/seed1"]["status"] == "ok" and runs["fed-svd/seed1"]["seconds"] >= 0
    assert runs["local/seed0"]["command"].startswith(
        "fedrec train train.progress=false model=minilm_lora model=tiny mode=local"
    )
    assert runs["local/seed0"]["machine"]["cores"] >= 1
    assert "boom: centralized broke" in (out / "centralized" / "seed0" / "run.log").read_text()
    assert (out / "fed-svd" / "seed1" / "results.json").is_file()
    printed = capsys.readouterr().out
    assert "[3/6] centralized/seed0: FAILED (exit 3)" in printed and "[6/6] fed-svd/seed1: ok in" in printed

    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 6
    again = run_experiments(out, [0, 1], rows, ["model=tiny"], argv=["fedrec", "experiments"], python=str(fake))
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 8 and all("mode=centralized" in c for c in calls[6:])  # only the failed runs again
    assert again["failed"] == ["centralized/seed0", "centralized/seed1"] and len(again["invocations"]) == 2
    assert "[1/6] local/seed0: done before" in capsys.readouterr().out


def test_dry_run_prints_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedrec.cli import main

    assert main(["experiments", "--out", str(tmp_path), "--seeds", "0,1", "--dry-run", "model=tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * (len(GRID) - 1) and lines[0].startswith("[1/17] baselines/seed0: fedrec baselines")
    assert not (tmp_path / "experiments.json").exists()
    assert main(["experiments", "--out", str(tmp_path), "--rows", "nope"]) == 2


@pytest.mark.slow
def test_smoke_grid_end_to_end(data_root: Path, tmp_path: Path) -> None:
    """Two rows, one seed, one platform, the tiny model: real runs, then the report."""
    out = tmp_path / "grid"
    env = {**os.environ, "FEDREC_DATA": str(data_root), "FEDREC_CACHE": str(tmp_path / "cache")}
    overrides = ["platform=video", "model=tiny", "train=smoke", "federation.rounds=2", "federation.local_steps=3"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.cli", "experiments", "--out", str(out), "--seeds", "0"]
        + ["--rows", "local,fed-fedavg", "federation.eval_max_users=50", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[2/2] fed-fedavg/seed0: ok in" in proc.stdout
    fed = json.loads((out / "fed-fedavg" / "seed0" / "results.json").read_text())
    assert fed["config"]["seed"] == 0 and fed["config"]["federation"]["compare_local"] is False
    initial = fed["federation"]["initial"]  # round 0 through Flower's simulation engine
    assert initial["round"] == 0 and initial["cross_platform_loss"] > 0 and set(initial["platforms"]) == {"video"}
    assert initial["platforms"]["video"]["users"] == 50 and fed["comparison"] == {}

    res = report_results(out, tmp_path / "docs")
    text = res["text"]
    row = next(line for line in text.splitlines() if line.startswith("| federated fedavg | 1 | 0."))
    assert f"{fed['platforms']['video']['test']['NDCG@10']:.4f}" in row
    assert "| centralized (pooled, non-private) | 0 | not run |" in text
    assert "Smoke grid (tiny random model)" in text and res["plots"]["loss"] is not None
