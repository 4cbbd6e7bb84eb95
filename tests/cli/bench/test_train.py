"""``fedrec bench train``: non-DP vs DP throughput and peak memory per configuration row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedrec.cli.bench.blocks import default_budget
from fedrec.cli.bench.train import Row, grid_rows, measure_row_isolated, run_train


def test_grids() -> None:
    ofat = grid_rows("ofat", 2)
    assert ofat[0] == Row(2, True, 32) and len(ofat) == 4
    for row in ofat[1:]:  # each later row changes exactly one factor of the first
        diff = [a != b for a, b in zip((row.lora_layers, row.bf16, row.user_tokens), (2, True, 32), strict=True)]
        assert sum(diff) == 1
    full = grid_rows("full", 3)
    assert len(set(full)) == 8 and {r.lora_layers for r in full} == {0, 3}
    assert Row(0, False, 64).name == "all layers · fp32 · 64 tok"
    assert Row(2, True, 32).overrides() == ["model.lora_layers=2", "model.bf16=true", "model.user_max_tokens=32"]
    with pytest.raises(ValueError, match="grid"):
        grid_rows("diagonal")
    with pytest.raises(ValueError, match="top"):
        grid_rows("ofat", 0)


def _check_mode(m: dict) -> None:
    assert m["examples_per_s"] > 0 and m["examples_per_s_total"] > 0 and m["examples"] > 0 and m["seconds"] > 0
    assert m["peak_rss_mib"] > 100 and m["rss_increase_mib"] >= 0 and m["blocks"] == 2


@pytest.mark.slow
def test_train_smoke_rows(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_train(data_overrides, smoke=True, out_dir=tmp_path)
    rows = doc["rows"]
    assert [r["row"] for r in rows] == [r.name for r in grid_rows("ofat", 1)]  # tiny model: LoRA on the top 1
    assert doc["settings"]["isolated"] is False and doc["settings"]["batch"] == 16
    for r in rows:
        _check_mode(r["non_dp"])
        _check_mode(r["dp"])
        assert 0 < r["dp_ratio"] < 20 and math.isfinite(r["dp_ratio_total"]) and r["users"] == 943
        assert r["peak_resettable"] is True
    assert rows[0]["non_dp_vs_first"] == 1.0
    s = doc["summary"]
    best = max(rows, key=lambda r: r["dp"]["examples_per_s"])
    assert s["fastest_dp_row"] == best["row"] and s["fastest_dp_examples_per_s"] == best["dp"]["examples_per_s"]
    assert s["dp_ratio_min"] <= s["dp_ratio_median"] <= s["dp_ratio_max"]
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert saved["benchmark"] == "train" and saved["smoke"] is True and len(saved["rows"]) == 4
    assert saved["machine"]["cpu_model"] and saved["machine"]["torch_threads"] == 1


@pytest.mark.slow
def test_a_row_in_its_own_process(data_overrides: list[str]) -> None:
    overrides = ["model=tiny", "train=smoke", "train.threads=1", "platform=video", *data_overrides]
    res = measure_row_isolated([*overrides, *Row(1, False, 32).overrides()], 8, 1.0, default_budget(True))
    assert res["platform"] == "video" and res["non_dp"]["examples"] == 2 * 8  # 2 blocks of one 8-example step
    assert res["dp"]["examples_per_s"] > 0 and res["dp_ratio"] > 0 and res["peak_resettable"] is True
    with pytest.raises(RuntimeError, match="failed"):
        measure_row_isolated([*overrides, "platform=nowhere"], 8, 1.0, default_budget(True))
