"""Shared benchmark machinery: machine line, statistics, peak RSS, JSON without NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedrec.cli.bench.common import (
    PeakRSS,
    base_overrides,
    compose,
    machine_info,
    machine_line,
    median,
    percentile,
    ratio,
    write_result,
)
from fedrec.documents import BenchDocument


def test_machine_info_names_cores_cpu_and_torch() -> None:
    info = machine_info()
    assert info["cores"] >= 1 and 1 <= info["usable_cores"] <= info["cores"]
    assert info["cpu_model"] and info["torch"] and info["torch_threads"] >= 1
    line = machine_line(info)
    assert f"{info['cores']} cores" in line and info["cpu_model"] in line and info["torch"] in line


def test_statistics() -> None:
    assert median([3.0, 1.0, 2.0, 10.0]) == 2.5 and math.isnan(median([]))
    xs = list(range(1, 101))
    assert percentile(xs, 50) == pytest.approx(np.percentile(xs, 50)) and percentile(xs, 99) == pytest.approx(99.01)
    assert ratio(1.0, 4.0) == 0.25 and math.isnan(ratio(1.0, 0.0))


def test_peak_rss_is_reset_between_phases() -> None:
    rss = PeakRSS()
    assert rss.resettable  # Linux: /proc/self/clear_refs
    rss.reset()
    base = rss.peak_mib()
    block = np.ones(64 * 1024**2 // 8)  # 64 MiB, touched
    high = rss.peak_mib()
    del block
    rss.reset()
    after = rss.peak_mib()
    assert high >= base + 60 and after < high - 50


def test_write_result_is_json_without_nan(tmp_path: Path) -> None:
    doc = BenchDocument("x", False, {}, {}, [{"a": float("nan"), "b": [1.5, float("inf")]}], {}, 1.0, ["fedrec"])
    path = write_result(tmp_path / "out", "x", doc)
    assert path.name == "bench_x.json" and json.loads(path.read_text())["rows"] == [{"a": None, "b": [1.5, None]}]


def test_compose_applies_smoke_then_user_overrides() -> None:
    cfg = compose(base_overrides(True, 2, ["model.lora_r=2"]))
    assert cfg.model.backbone == "tiny" and cfg.train.threads == 2 and cfg.model.lora_r == 2
    assert cfg.command == "bench"
    with pytest.raises(ValueError, match="federation.aggregation"):
        compose(["federation.aggregation=bogus"])


def test_trim_hands_freed_small_allocations_back() -> None:
    blocks = [np.ones(1000) for _ in range(50_000)]  # ~400 MB in malloc's arenas (not mmap)
    held = PeakRSS.current_mib()
    del blocks
    PeakRSS.trim()  # what reset() does first, so a phase's rise is measured from live memory
    assert PeakRSS.current_mib() < held - 300
