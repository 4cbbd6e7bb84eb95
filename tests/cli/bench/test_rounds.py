"""``fedrec bench round``: a Flower simulation's round time split into compute, aggregation, overhead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.cli.bench.rounds import run_round, split_round


def _entry(wall: float = 2.0) -> dict:
    return {
        "round": 3,
        "seconds": wall,
        "aggregate_seconds": 0.05,
        "platforms": {
            "video": {"train": {"train_seconds": 0.6}, "valid": {"eval-seconds": 0.3, "loss": 1.0}},
            "ecommerce": {"train": {"train_seconds": 0.9}, "valid": {"eval-seconds": 0.2, "loss": 1.0}},
        },
    }


def test_split_round_takes_the_slowest_client_of_each_phase() -> None:
    s = split_round(_entry())
    assert s["train_s"] == 0.9 and s["eval_s"] == 0.3 and s["compute_s"] == pytest.approx(1.2)
    assert s["overhead_s"] == pytest.approx(2.0 - 1.2 - 0.05) and s["overhead_fraction"] == pytest.approx(0.375)


def test_split_round_refuses_a_history_without_timings() -> None:
    entry = _entry()
    del entry["platforms"]["video"]["valid"]["eval-seconds"]
    with pytest.raises(ValueError, match="video reported no eval-seconds"):
        split_round(entry)
    entry = _entry()
    del entry["aggregate_seconds"]
    with pytest.raises(ValueError, match="aggregate_seconds"):
        split_round(entry)


@pytest.mark.slow
def test_round_smoke_simulation(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_round(data_overrides, smoke=True, out_dir=tmp_path / "out", platforms=("video",))
    rows = doc["rows"]
    assert [r["round"] for r in rows] == [1, 2] and doc["settings"]["platforms"] == ["video"]
    for r in rows:
        assert r["train_s"] > 0 and r["eval_s"] > 0 and r["aggregate_s"] > 0
        assert r["wall_s"] >= r["compute_s"] + r["aggregate_s"] - 0.01  # history rounds wall to 0.01 s
        assert r["overhead_s"] == pytest.approx(r["wall_s"] - r["compute_s"] - r["aggregate_s"])
    s = doc["summary"]
    assert s["rounds_in_median"] == 1 and s["overhead_fraction"] == pytest.approx(rows[1]["overhead_fraction"])
    assert s["first_round_s"] > s["round_s"]  # round 1 builds the client
    assert s["simulation_wall_s"] > sum(r["wall_s"] for r in rows)
    assert json.loads((tmp_path / "out" / "bench_round.json").read_text())["benchmark"] == "round"
