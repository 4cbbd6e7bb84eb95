"""``fedrec report``: a privacy/utility sweep rendered as Markdown and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedrec.cli import main
from fedrec.cli.report.privacy import collect, report

PLATFORMS = ("ecommerce", "social", "video")


def _doc(target: float | None, ndcg: float, itemknn: bool = False) -> dict:
    """A results.json as ``fedrec simulate`` writes it (the fields the report reads)."""
    private = target is not None
    metrics = {
        p: {"HR@10": 2 * ndcg, "NDCG@10": ndcg + i / 100, "MRR": ndcg, "users": 10} for i, p in enumerate(PLATFORMS)
    }
    doc = {
        "command": "simulate",
        "config": {"privacy": {"enabled": private, "target_epsilon": target}},
        "platforms": {p: {"test": m} for p, m in metrics.items()},
        "privacy": None
        if not private
        else {
            "epsilon": {p: (math.inf if math.isinf(target) else 0.97 * target) for p in PLATFORMS},
            "noise_multiplier": {},
        },
    }
    if itemknn:
        doc["comparison"] = {"baselines": {p: {"itemknn": {"NDCG@10": 0.05}} for p in PLATFORMS}}
    return doc


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for i, (target, ndcg) in enumerate([(8.0, 0.04), (1.0, 0.02), (math.inf, 0.045)]):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(_doc(target, ndcg)))
    (tmp_path / "nonprivate").mkdir()
    (tmp_path / "nonprivate" / "results.json").write_text(json.dumps(_doc(None, 0.05, itemknn=True)))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text(json.dumps({"command": "train"}))  # ignored
    return tmp_path


def test_report_table_and_plot(sweep: Path, tmp_path: Path) -> None:
    runs = collect(sweep)
    assert [r.label for r in runs] == ["eps=1", "eps=8", "eps=inf (clip only)", "non-private"]
    res = report(sweep, tmp_path / "out")
    text = (tmp_path / "out" / "privacy_sweep.md").read_text()
    assert "| eps=8 | 0.0400 (7.76) | 0.0500 (7.76) | 0.0600 (7.76) | 0.0500 | 83% |" in text
    assert "| non-private | 0.0500 | 0.0600 | 0.0700 | 0.0600 | 100% |" in text
    assert "| ItemKNN | 0.0500 | 0.0500 | 0.0500 | 0.0500 |  |" in text
    png = Path(res["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_cli_errors_and_output(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(sweep)]) == 0
    assert "wrote" in capsys.readouterr().out and (sweep / "privacy_sweep.png").is_file()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no fedrec simulate results.json" in capsys.readouterr().err
