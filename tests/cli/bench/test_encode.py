"""``fedrec bench encode``: item-index build speed and one user's top-10 latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.cli.bench.encode import STAGES, run_encode


@pytest.mark.slow
def test_encode_smoke(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_encode(data_overrides, smoke=True, out_dir=tmp_path, platform="video", users=20, chunk=512)
    stages = {(r["stage"], r["precision"]): r for r in doc["rows"]}
    assert stages[("tokenize catalogue", "-")]["items"] == 1682
    full = stages[("encode catalogue", "fp32")]  # the tiny model's configured precision
    assert full["items"] == 1682 and full["chunks"] == 4 and full["items_per_s"] > 0
    assert stages[("encode subset", "bf16")]["repeats"] == 3 and stages[("encode subset", "fp32")]["items"] == 1024
    s = doc["summary"]
    assert s["catalogue_items"] == 1682 and s["users_timed"] == 20 and s["history_excluded"] is True
    assert s["bf16_vs_fp32"] > 0 and s["index_items_per_s"] == full["items_per_s"]
    lat = doc["latency"]
    assert set(lat) == set(STAGES)
    for stage in STAGES:
        assert 0 < lat[stage]["p50_ms"] <= lat[stage]["p99_ms"]
        # every user's total covers each of its stages, so the total's percentiles do too
        assert lat["total"]["p50_ms"] >= lat[stage]["p50_ms"] and lat["total"]["p99_ms"] >= lat[stage]["p99_ms"]
    assert s["latency_p50_ms"] == lat["total"]["p50_ms"]
    assert json.loads((tmp_path / "bench_encode.json").read_text())["latency"]["total"] == lat["total"]
