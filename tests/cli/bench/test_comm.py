"""``fedrec bench comm``: adapter bytes per mode, against the backbone, and a run's total."""

from __future__ import annotations

import json
from pathlib import Path

from fedrec import cli
from fedrec.cli.bench.comm import run_comm


def test_comm_sizes_follow_the_adapter_shapes(tmp_path: Path) -> None:
    doc = run_comm(["federation.rounds=4", "platform=[video,social]"], smoke=True, out_dir=tmp_path)
    rows = {r["mode"]: r for r in doc["rows"]}
    assert set(rows) == {"fedavg", "ffa", "svd"}
    # tiny model: LoRA r=4 on query and value (32 x 32) of the top 1 layer, float32:
    # A [4, 32] and B [32, 4] per module, 2 modules
    assert rows["fedavg"]["raw_bytes"] == 2 * (4 * 32 + 32 * 4) * 4 and rows["fedavg"]["tensors"] == 4
    assert rows["ffa"]["raw_bytes"] * 2 == rows["fedavg"]["raw_bytes"] and rows["ffa"]["tensors"] == 2
    assert rows["svd"]["raw_bytes"] == rows["fedavg"]["raw_bytes"]
    s = doc["summary"]
    assert s["ffa_vs_fedavg"] == 0.5 and s["rounds"] == 4 and s["clients"] == 2 and s["train_clients_per_round"] == 2
    assert 0 < rows["fedavg"]["adapter_to_backbone"] < 0.01
    for r in rows.values():
        assert r["raw_bytes"] <= r["array_record_bytes"] <= r["protobuf_bytes"] < r["raw_bytes"] + 2048
        assert r["per_client_round_bytes"] == 3 * r["protobuf_bytes"]
        # 4 rounds x (2 clients x (train down + up) + 2 validation downs) + 2 test downs
        assert r["run_total_bytes"] == (4 * (2 * 2 + 2) + 2) * r["protobuf_bytes"]
        assert r["config_bytes"] > 500  # the resolved config travels with every message
    assert s["full_model_per_client_round_bytes"] == 3 * s["backbone_bytes"]
    saved = json.loads((tmp_path / "bench_comm.json").read_text())
    assert saved["rows"] == doc["rows"] and saved["machine"]["cores"] >= 1


def test_cli_bench_comm_prints_the_table(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["bench", "comm", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fedrec bench comm" in out and "ffa" in out and "machine:" in out
    assert (tmp_path / "bench_comm.json").is_file()
    assert cli.main(["bench", "comm", "--smoke", "--out", str(tmp_path), "model.nope=1"]) == 2
    assert "model.nope" in capsys.readouterr().err
