"""``fedrec bench scale``: simulated federations of many clients (user shards), time and memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.cli.bench.scale import fit_line, round_figures, run_scale, settings_overrides


def test_sizes_must_be_multiples_of_the_platforms() -> None:
    assert "federation.shards_per_platform=10" in settings_overrides(30, ("a", "b", "c"), 2, 1, 5, 256)
    for bad in (4, 0, 2):
        with pytest.raises(ValueError, match="multiple of the 3 platforms"):
            settings_overrides(bad, ("a", "b", "c"), 2, 1, 5, 256)


def test_round_figures_sum_the_clients_work() -> None:
    entry = {
        "round": 2,
        "seconds": 3.0,
        "aggregate_seconds": 0.01,
        "bytes": {"total": 600},
        "platforms": {"video": {"train": {"train_seconds": 9.0}, "valid": None}},  # combined: not used
        "clients": {
            "video/0": {
                "train": {"train_seconds": 0.5, "setup_seconds": 0.2},
                "valid": {"eval-seconds": 0.1, "setup-seconds": 0.0},
            },
            "video/1": {"train": {"train_seconds": 0.25, "setup_seconds": 0.0}, "valid": {"eval-seconds": 0.3}},
            "social/0": {"train": None, "valid": None},
        },
    }
    r = round_figures(entry)
    assert r["clients"] == 2 and r["train_s"] == pytest.approx(0.75) and r["eval_s"] == pytest.approx(0.4)
    assert r["setup_s"] == pytest.approx(0.2) and r["bytes"] == 600 and r["wall_s"] == 3.0


def test_fit_line() -> None:
    b0, b1 = fit_line([3, 30, 300], [1.0 + 0.5 * x for x in (3, 30, 300)])
    assert b0 == pytest.approx(1.0) and b1 == pytest.approx(0.5)
    assert all(x != x for x in fit_line([3], [1.0]))  # NaN with one point


@pytest.mark.slow
def test_scale_smoke(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_scale(data_overrides, smoke=True, out_dir=tmp_path / "out")
    rows = doc["rows"]
    assert [(r["clients"], r["shards_per_platform"]) for r in rows] == [(3, 1), (6, 2)]
    for r in rows:
        assert "stopped" not in r and r["round_s"] > 0 and r["first_round_s"] > r["round_s"]
        assert 0 < r["round_cpu_s"] < r["cpu_s"] and r["rounds"][1]["cpu_s"] == r["round_cpu_s"]
        assert r["server_peak_mib"] > 100 and r["actors_peak_mib"] > 100 and r["ray_peak_mib"] >= r["actors_peak_mib"]
        assert [x["clients"] for x in r["rounds"]] == [r["clients"]] * 2  # every client trained each round
        assert r["test_users"] == {"ecommerce": 4905, "video": 943, "social": 1883}  # shards cover every user
    assert rows[1]["bytes_per_round"] == 2 * rows[0]["bytes_per_round"]  # bytes grow with the clients
    assert doc["summary"]["stopped_at"] is None and doc["summary"]["largest_completed"] == 6
    saved = json.loads((tmp_path / "out" / "bench_scale.json").read_text())
    assert saved["benchmark"] == "scale" and saved["settings"]["ray_actors"] >= 1


@pytest.mark.slow
def test_scale_records_where_it_stops(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_scale(data_overrides, smoke=True, out_dir=tmp_path / "out", budget_s=3.0)
    first, second = doc["rows"]
    assert "over the time budget" in first["stopped"] and "round_s" not in first
    assert second["stopped"].startswith("not run: 3 clients stopped")
    assert doc["summary"]["stopped_at"] == 3 and "time budget" in doc["summary"]["stop_reason"]
