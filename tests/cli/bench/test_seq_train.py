"""``fedrec bench seqtrain``: both trainers of the sequence model measured on the same real task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedrec.cli.bench.seq_train import run_seq_train


@pytest.mark.slow
def test_seq_train_smoke(data_overrides: list[str], tmp_path: Path) -> None:
    doc = run_seq_train(data_overrides, smoke=True, out_dir=str(tmp_path), platforms=["video"])
    (row,) = doc["rows"]
    assert row["platform"] == "video" and row["users"] == 943 and doc["settings"]["batch"] == 16
    for mode in ("non_dp", "dp"):
        m = row[mode]
        assert m["blocks"] == 2 and m["examples"] > 0 and m["seconds"] > 0 and m["peak_rss_mib"] > 100
        # a row is one user with all of its targets: video users have >= 20 ratings, so many targets each
        assert m["targets"] > 5 * m["examples"] and m["targets_per_s"] > m["examples_per_s"] > 0
    assert row["non_dp"]["examples"] == 2 * 16  # two one-step blocks of exactly 16 users
    assert 0 < row["dp_ratio"] < 50 and math.isfinite(row["dp_ratio_total"])
    saved = json.loads((tmp_path / "bench_seqtrain.json").read_text())
    assert saved["benchmark"] == "seqtrain" and saved["rows"][0]["dp"]["targets"] == row["dp"]["targets"]


def test_seq_train_refuses_a_non_sequence_model(data_overrides: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sequence model"):
        run_seq_train([*data_overrides, "model=tiny"], smoke=True, out_dir=str(tmp_path))
