"""The typed results.json / bench JSON documents: the layout the writers wrote before, lossless reading, legacy keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedrec.cli.report.bench import read_bench, scale_rows
from fedrec.documents import BenchDocument, FederationSummary, ResultsDocument, read_results
from fedrec.results import results_document, write_results


def test_a_train_document_keeps_its_layout_and_round_trips(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"seed": 0, "platforms": ["video"]})
    platforms = {"video": {"test": {"HR@10": 0.5, "NDCG@10": 0.25, "MRR": 0.2, "users": 4}}}
    doc = results_document("train", cfg, platforms, 1.234, mode="local", cross_platform_loss=None, training={"a": 1})
    path = write_results(tmp_path, "results.json", doc)
    written = json.loads(path.read_text())
    assert list(written) == ["command", "config", "platforms", "mode", "cross_platform_loss", "training", "seconds"]
    assert written["seconds"] == 1.23 and written["cross_platform_loss"] is None and written["config"]["seed"] == 0
    assert read_results(path) == doc and read_results(path).to_json() == written


def test_a_federated_document_reads_typed_and_keeps_what_it_does_not_model() -> None:
    fed = FederationSummary("fedavg", 2, "k", 2, 10, 100, 0.1, 3.0, 0, [{"round": 1}], None, extra={"new": 1})
    doc = ResultsDocument("simulate", {}, {}, 5.0, cross_platform_loss=7.0, federation=fed, extra={"evaluation": "x"})
    doc.comparison = {"local_only": {}}
    raw = doc.to_json()
    assert list(raw)[-2:] == ["seconds", "comparison"]  # added by fedrec simulate after the run
    assert raw["federation"]["new"] == 1 and raw["federation"]["initial"] is None and raw["evaluation"] == "x"
    assert raw["privacy"] is None  # a federated run's privacy block is there, null without DP
    back = ResultsDocument.from_json(json.loads(json.dumps(raw)))
    assert back == doc and back.federation is not None and back.federation.best_round == 2
    assert math.isnan(ResultsDocument.from_json({"command": "train"}).seconds)  # unknown, not zero


def test_bench_documents_read_legacy_round_time_keys_through_one_map(tmp_path: Path) -> None:
    rows = [
        {"clients": 3, "round_s": 1.0},
        {"clients": 30, "round_wall_s": 2.0},  # a legacy key for the round time
        {"clients": 99, "round_seconds": 3.0, "round_s": 2.5},  # today's name wins
        {"clients": 300, "wall_s": 60.0},  # the whole simulation's wall time, not a round time
    ]
    doc = BenchDocument("scale", False, {"cores": 2}, {}, rows, {}, 1.0, ["fedrec"], extra={"latency": [1]})
    (tmp_path / "bench_scale.json").write_text(json.dumps(doc.to_json()))
    read = read_bench(tmp_path)["scale"]
    assert read.extra == {"latency": [1]} and read.machine == {"cores": 2}
    assert scale_rows(read) == [(3.0, 1.0), (30.0, 2.0), (99.0, 2.5)]
    assert "round_wall_s" not in read.rows[1] and read.rows[3] == {"clients": 300, "wall_s": 60.0}


def test_the_round_benchmarks_summary_reads_its_legacy_names(tmp_path: Path) -> None:
    old = {"round_wall_s": 12.5, "first_round_wall_s": 40.0, "compute_s": 9.0}
    doc = BenchDocument("round", False, {}, {}, [], old, 1.0, ["fedrec"])
    (tmp_path / "bench_round.json").write_text(json.dumps(doc.to_json()))
    assert read_bench(tmp_path)["round"].summary == {"round_s": 12.5, "first_round_s": 40.0, "compute_s": 9.0}


def test_a_file_that_is_not_a_bench_document_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no settings, summary"):
        BenchDocument.from_json({"machine": {}, "rows": []}, "encode")
