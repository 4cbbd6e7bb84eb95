"""``fedrec report results``: a grid of synthetic results.json files rendered as RESULTS.md + PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrec.cli import main
from fedrec.cli.report.results import (
    EPSILON_PLOT,
    LOSS_PLOT,
    README_BEGIN,
    README_END,
    SCALE_PLOT,
    Stat,
    report_results,
    rounds_to_quality,
)

PLATFORMS = ("ecommerce", "video", "social")
PNG = b"\x89PNG\r\n\x1a\n"
MACHINE = {
    "cores": 2,
    "usable_cores": 2,
    "cpu_model": "Test CPU 9000",
    "memory_gib": 23.5,
    "torch": "2.13.0+cpu",
    "torch_threads": 2,
    "load_average": [1.5, 1.0, 0.5],
    "time": "2026-01-01T00:00:00+00:00",
}


def _metrics(ndcg: float) -> dict[str, float]:
    return {"HR@10": 2 * ndcg, "NDCG@10": ndcg, "MRR": ndcg / 2, "users": 10, "loss": 7.0}


def _config(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "platforms": {p: {} for p in PLATFORMS},
        "model": {"backbone": "minilm", "lora_r": 8, "lora_layers": 2},
        "federation": {"rounds": 3, "eval_max_users": -1},
    }


def _trained(ndcg: dict[str, float], seed: int, xloss: float) -> dict[str, Any]:
    """A ``fedrec train`` results.json (the fields the report reads)."""
    return {
        "command": "train",
        "config": _config(seed),
        "platforms": {p: {"valid": _metrics(v), "test": _metrics(v)} for p, v in ndcg.items()},
        "cross_platform_loss": xloss,
        "seconds": 100.0 + seed,
    }


def _federated(ndcg: dict[str, float], seed: int, curve: list[float], initial: float | None, eps: float | None = None):
    """A ``fedrec simulate`` results.json: test metrics, the loss per round, the round-0 loss."""
    history = [{"round": r, "cross_platform_loss": x} for r, x in enumerate(curve, 1)]
    return {
        "command": "simulate",
        "config": _config(seed),
        "platforms": {p: {"test": _metrics(v)} for p, v in ndcg.items()},
        "cross_platform_loss": min(curve),
        "federation": {
            "history": history,
            "best_round": int(np.argmin(curve)) + 1,
            "mean_round_seconds": 40.0,
            "initial": None if initial is None else {"round": 0, "cross_platform_loss": initial},
        },
        "privacy": None if eps is None else {"epsilon": {p: 0.9 * eps for p in PLATFORMS}},
        "seconds": 200.0,
    }


def _write(folder: Path, row: str, seed: int, doc: dict[str, Any]) -> None:
    (folder / row / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    (folder / row / f"seed{seed}" / "results.json").write_text(json.dumps(doc))


#: fedavg's test NDCG@10 per seed and platform (seeds 0, 1, 2)
FEDAVG = {
    0: {"ecommerce": 0.040, "video": 0.050, "social": 0.070},
    1: {"ecommerce": 0.044, "video": 0.046, "social": 0.071},
}
FEDAVG[2] = {"ecommerce": 0.048, "video": 0.042, "social": 0.075}
CURVES = {0: [9.0, 8.2, 8.0], 1: [9.5, 8.1, 8.05], 2: [8.1, 8.0, 8.0]}  # round-0 loss 10 each


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """A grid with baselines, local (2 seeds), centralized (1 seed), fedavg (3 seeds), svd (no round 0), DP eps 8."""
    out = tmp_path / "grid"
    models = {"mostpop": 0.01, "itemknn": 0.05, "frozen_text": 0.02}
    base = {
        p: {m: {"model": m, "test": _metrics(v + i / 1000)} for m, v in models.items()} for i, p in enumerate(PLATFORMS)
    }
    _write(out, "baselines", 0, {"command": "baselines", "config": _config(0), "platforms": base, "seconds": 50.0})
    for seed in (0, 1):
        _write(out, "local", seed, _trained({p: 0.05 + seed / 100 for p in PLATFORMS}, seed, 7.0))
    _write(out, "centralized", 0, _trained({"ecommerce": 0.05, "video": 0.05, "social": 0.08}, 0, 6.9))
    for seed, ndcg in FEDAVG.items():
        _write(out, "fed-fedavg", seed, _federated(ndcg, seed, CURVES[seed], 10.0))
    _write(out, "fed-svd", 0, _federated(FEDAVG[0], 0, [9.0, 8.0], None))
    for seed in (0, 1):
        _write(out, "fed-dp-eps8", seed, _federated({p: 0.03 for p in PLATFORMS}, seed, [9.9, 9.8], 10.0, eps=8.0))
    manifest = {
        "invocations": [{"argv": ["fedrec", "experiments", "--out", str(out)], "commit": "abc123", "time": "t"}],
        "runs": {
            "fed-fedavg/seed0": {"row": "fed-fedavg", "seed": 0, "status": "ok", "seconds": 300.0, "machine": MACHINE},
            "fed-fedavg/seed1": {"row": "fed-fedavg", "seed": 1, "status": "ok", "seconds": 500.0, "machine": MACHINE},
            "fed-ffa/seed0": {"row": "fed-ffa", "seed": 0, "status": "failed", "returncode": 1, "machine": MACHINE},
        },
    }
    (out / "experiments.json").write_text(json.dumps(manifest))
    return out


def _line(text: str, start: str, after: str | None = None) -> str:
    """The first line of ``text`` starting with ``start`` (after the line ``after``, if given)."""
    if after is not None:
        text = text[text.index(after) :]
    return next(line for line in text.splitlines() if line.startswith(start))


def _cell(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def test_rounds_to_quality_on_known_curves() -> None:
    # improvement 10 -> 5 is 5; 95% of it is reached at a loss of 5.25: round 3 (5.2), not round 2 (6.0)
    assert rounds_to_quality(10.0, [(1, 8.0), (2, 6.0), (3, 5.2), (4, 5.0)]) == 3
    assert rounds_to_quality(10.0, [(1, 8.0), (2, 6.0), (3, 5.3), (4, 5.0)]) == 4
    assert rounds_to_quality(10.0, [(1, 5.0)]) == 1
    assert rounds_to_quality(10.0, [(1, 4.0), (2, 6.0)]) == 1  # overshoot: the last round defines the improvement
    assert rounds_to_quality(10.0, [(1, None), (2, 5.0), (3, 5.0)]) == 2  # a round without a loss is skipped
    assert rounds_to_quality(10.0, [(1, 7.5), (2, 5.5)], fraction=0.5) == 1  # target 7.75
    assert rounds_to_quality(10.0, [(1, 9.0), (2, 10.5)]) is None  # no improvement
    assert rounds_to_quality(None, [(1, 9.0)]) is None and rounds_to_quality(10.0, []) is None


def test_stat_mean_and_sample_std() -> None:
    s = Stat((0.04, 0.05, 0.06))
    assert s.n == 3 and s.mean == pytest.approx(0.05) and s.std == pytest.approx(0.01)
    assert s.text() == "0.0500 ± 0.0100" and Stat((0.5,)).text() == "0.5000" and Stat().text() == "not run"


def test_table_numbers_are_the_means_and_stds_over_seeds(grid: Path, tmp_path: Path) -> None:
    res = report_results(grid, tmp_path / "docs", bench_dir=None)
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert res["runs"] == 10 and text == res["text"]
    for p in PLATFORMS:
        ndcg = np.array([FEDAVG[s][p] for s in range(3)])
        row = _line(text, "| federated fedavg |", after=f"### {p}")
        assert row == (
            f"| federated fedavg | 3 | {_cell(2 * ndcg.mean(), np.std(2 * ndcg, ddof=1))} | "
            f"{_cell(ndcg.mean(), np.std(ndcg, ddof=1))} | {_cell(ndcg.mean() / 2, np.std(ndcg / 2, ddof=1))} |"
        )
    macro = np.array([np.mean(list(FEDAVG[s].values())) for s in range(3)])  # per seed, then over seeds
    row = _line(text, "| federated fedavg |", after="### Macro")
    assert f"| {_cell(macro.mean(), np.std(macro, ddof=1))} |" in row
    best = np.array([min(CURVES[s]) for s in range(3)])
    assert row.endswith(f"| {_cell(best.mean(), np.std(best, ddof=1))} |")  # the best round's cross-platform loss
    assert (
        _line(text, "| local-only", after="### video")
        == "| local-only (each platform alone) | 2 | "
        + " | ".join(_cell(f * np.mean([0.05, 0.06]), f * np.std([0.05, 0.06], ddof=1)) for f in (2, 1, 0.5))
        + " |"
    )
    assert _line(text, "| ItemKNN |", after="### social") == "| ItemKNN | 1 | 0.1040 | 0.0520 | 0.0260 |"
    assert _line(text, "| centralized", after="### Macro").startswith("| centralized (pooled, non-private) | 1 | ")


def test_missing_rows_are_not_run(grid: Path, tmp_path: Path) -> None:
    text = report_results(grid, tmp_path / "docs")["text"]
    assert (
        _line(text, "| federated ffa |", after="### Macro")
        == "| federated ffa | 0 | not run | not run | not run | not run |"
    )
    assert _line(text, "| federated DP ε=1 (fedavg) |", after="## Rounds to quality").count("not run") == 5
    assert "| fed-ffa | `fedrec simulate" in text and "0: failed" in text  # the manifest's failure is shown
    only_baselines = tmp_path / "sparse"
    (only_baselines / "baselines" / "seed0").mkdir(parents=True)
    (only_baselines / "baselines" / "seed0" / "results.json").write_text(
        (grid / "baselines/seed0/results.json").read_text()
    )
    res = report_results(only_baselines, tmp_path / "sparse_docs")
    assert res["plots"] == {"loss": None, "epsilon": None, "scale": None}
    assert "Centralized: not run; no ratio." in res["text"] and "| MostPop | 1 |" in res["text"]
    with pytest.raises(FileNotFoundError):
        report_results(tmp_path / "nowhere", tmp_path / "x")


def test_ratio_rounds_to_quality_and_runs(grid: Path, tmp_path: Path) -> None:
    text = report_results(grid, tmp_path / "docs")["text"]
    ratio = _line(text, "| federated fedavg |", after="## Federated vs centralized")
    central = {"ecommerce": 0.05, "video": 0.05, "social": 0.08}
    shares = [np.mean([FEDAVG[s][p] for s in range(3)]) / central[p] for p in PLATFORMS]
    macro = np.mean([np.mean(list(FEDAVG[s].values())) for s in range(3)]) / np.mean(list(central.values()))
    assert ratio == "| federated fedavg | 3 | " + " | ".join(f"{x:.0%}" for x in [*shares, macro]) + " | – |"
    dp = _line(text, "| federated DP ε=8 (fedavg) |", after="## Federated vs centralized")
    assert dp.endswith("| 7.20 ± 0.00 |")  # epsilon spent: max over platforms, mean over seeds
    # 95% of 10 -> 8.0 is reached at 8.1: round 3 (seed 0: 8.2 first), round 1 (seed 2: 8.1);
    # 95% of 10 -> 8.05 at 8.1475: round 2 (seed 1: 8.1)
    rtq = _line(text, "| federated fedavg |", after="## Rounds to quality")
    assert rtq == "| federated fedavg | 3 | 10.0000 ± 0.0000 | 8.0167 ± 0.0289 | 3, 3, 2 | 3, 2, 1 | 2.0 ± 1.0 |"
    assert _line(text, "| federated svd |", after="## Rounds to quality").endswith("| – | – |")  # no round 0
    assert "no round-0 loss" in text
    runs = _line(text, "| fed-fedavg |")
    assert "0: ok, 1: ok, 2: ok" in runs and "| 333 ± 153 |" in runs  # manifest seconds, else the document's
    assert "Machine: 2 cores, Test CPU 9000, 23.5 GiB, torch 2.13.0+cpu; 1-min load average" in text
    assert "Every federated row also passes `federation.eval_max_users=-1 federation.compare_local=false" in text
    assert "`fedrec experiments --out" in text and "`abc123`" in text


def test_plots_are_written_and_linked(grid: Path, tmp_path: Path) -> None:
    res = report_results(grid, tmp_path / "docs")
    for name, file in (("loss", LOSS_PLOT), ("epsilon", EPSILON_PLOT)):
        path = tmp_path / "docs" / file
        assert res["plots"][name] == path and path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
        assert f"]({file})" in res["text"]
    assert res["plots"]["scale"] is None and not (tmp_path / "docs" / SCALE_PLOT).exists()


def _bench(name: str, rows: list[dict[str, Any]], summary: dict[str, Any], settings: dict[str, Any]) -> dict:
    return {
        "benchmark": name,
        "smoke": False,
        "machine": MACHINE,
        "settings": settings,
        "rows": rows,
        "summary": summary,
    }


def test_benchmarks_section_with_and_without_scale(grid: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    train_row = {
        "row": "top-2 cached",
        "non_dp": {"examples_per_s": 170.3},
        "dp": {"examples_per_s": 60.1},
        "dp_ratio": 0.35,
    }
    docs = {
        "train": _bench("train", [train_row], {}, {"platform": "video", "backbone": "minilm", "batch": 64}),
        "comm": _bench(
            "comm",
            [{"mode": "fedavg", "raw_bytes": 98304, "per_client_round_bytes": 299904, "adapter_to_backbone": 0.0011}],
            {"backbone_bytes": 90_000_000, "rounds": 5, "clients": 3},
            {"backbone": "minilm"},
        ),
        "round": _bench("round", [], {"round_wall_s": 12.5, "overhead_fraction": 0.25}, {"platforms": ["a", "b"]}),
    }
    for name, doc in docs.items():
        (bench / f"bench_{name}.json").write_text(json.dumps(doc))
    text = report_results(grid, tmp_path / "docs", bench_dir=bench)["text"]
    assert "| top-2 cached | 170.3 | 60.1 | 0.35 |" in text and "| fedavg | 96.0 KiB | 292.9 KiB | 0.110% |" in text
    assert "| median, rounds 2+ | 12.50 |" in text
    assert "`bench_scale.json` missing" in text and "`bench_encode.json` missing" in text
    assert text.count("Machine: 2 cores, Test CPU 9000") >= 4  # every benchmark, and the runs

    scale_rows = [
        {"clients": 3, "shards_per_platform": 1, "round_s": 20.0, "server_peak_mib": 500.4, "bytes_per_round": 25920},
        {"clients": 12, "shards_per_platform": 4, "round_s": 50.0, "round_s_x": 2.5, "bytes_per_round": 103680},
        {"clients": 30, "shards_per_platform": 10, "stopped": "time budget 10 s exceeded"},
    ]
    summary = {"round_ms_per_client": 3333.3, "round_s_fixed": 10.0, "largest_completed": 12, "stopped_at": 30}
    summary["stop_reason"] = "time budget 10 s exceeded"
    scale = _bench("scale", scale_rows, summary, {"backbone": "tiny", "rounds": 3})
    (bench / "bench_scale.json").write_text(json.dumps(scale))
    (bench / "bench_encode.json").write_text(json.dumps({"machine": MACHINE, "rows": []}))  # wrong shape
    res = report_results(grid, tmp_path / "docs", bench_dir=bench)
    assert "| clients | shards per platform | round s (median) | x 3 clients |" in res["text"]
    assert "| 3 | 1 | 20.00 | – | – | – | – | 500 | – | – | 25.3 KiB | ok |" in res["text"]
    assert "| 12 | 4 | 50.00 | 2.5 |" in res["text"] and "| 101.2 KiB | ok |" in res["text"]
    assert "| 30 | 10 | – |" in res["text"] and "| time budget 10 s exceeded |" in res["text"]
    assert "10.00 s + 3,333.3 ms per client" in res["text"] and "stopped at 30 clients: time budget" in res["text"]
    assert "could not read `bench_encode.json`" in res["text"]
    assert res["plots"]["scale"].read_bytes()[:8] == PNG and f"]({SCALE_PLOT})" in res["text"]


def test_readme_block_and_cli(grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{README_BEGIN}\nold text\n{README_END}\nafter\n")
    out = tmp_path / "docs"
    assert main(["report", "results", str(grid), "--out", str(out), "--readme", str(readme)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n")
    macro = np.mean([np.mean(list(FEDAVG[s].values())) for s in range(3)])
    assert f"federated fedavg {macro:.4f} ± " in text and "[docs/RESULTS.md](docs/RESULTS.md)" in text
    table = (out / "RESULTS.md").read_text().split("### Macro average over the platforms\n\n")[1].split("\n\n")[0]
    assert table.startswith("| model | seeds | HR@10 |") and f"{README_BEGIN}\n{table}\n\nMacro test NDCG@10" in text
    assert "in round 2.0 ± 1.0 (n=3)" in text
    assert (out / "RESULTS.md").read_text().count(f"report results {grid}") == 1  # the header quotes the command
    readme.write_text("no markers\n")
    assert main(["report", "results", str(grid), "--out", str(out), "--readme", str(readme)]) == 2
    assert "no '<!-- fedrec:results:begin" in capsys.readouterr().err


def test_readme_headline_quotes_the_benchmarks_and_dp_vs_centralized(grid: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    train = {
        "dp_ratio_median": 0.9,
        "dp_ratio_min": 0.84,
        "fastest_dp_row": "top-2 bf16",
        "fastest_dp_examples_per_s": 178.94,
    }
    docs = {
        "train": _bench("train", [{"row": "a"}, {"row": "b"}], train, {}),
        "comm": _bench(
            "comm",
            [{"mode": "fedavg", "per_client_round_bytes": 300_851, "adapter_to_backbone": 0.0011}],
            {"backbone_bytes": 90_281_984, "default_mode": "fedavg", "default_run_total_bytes": 4_823_449},
            {},
        ),
        "round": _bench("round", [], {"overhead_fraction": 0.17}, {}),
        "scale": _bench("scale", [], {"largest_completed": 900, "round_ms_per_client": 47.5, "stopped_at": None}, {}),
    }
    for name, doc in docs.items():
        (bench / f"bench_{name}.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    report_results(grid, tmp_path / "docs", bench_dir=bench, readme=readme)
    text = readme.read_text()
    assert "Benchmarks (2 cores, Test CPU 9000" in text
    assert "0.90x the non-private examples/s (median over 2 settings, lowest 0.84)" in text
    assert "(top-2 bf16) runs 178.9 examples/s" in text
    assert "a client moves 293.8 KiB per round (fedavg), 0.11% of the 86.1 MiB backbone" in text
    assert "a default run 4.6 MiB in all" in text and "overhead is 17% of a simulated round" in text
    assert "900 clients (tiny BERT, round time +48 ms per client)" in text
    # DP eps 8 (0.03 everywhere) against centralized (0.05 / 0.05 / 0.08)
    assert "against centralized, NDCG@10 per platform: ecommerce 60%, video 60%, social 38%." in text

    (bench / "bench_round.json").write_text(json.dumps(_bench("round", [], {}, {})))  # no overhead figure
    report_results(grid, tmp_path / "docs", bench_dir=bench, readme=readme)
    text = readme.read_text()
    assert "`bench_round.json` could not be read (KeyError: 'overhead_fraction')" in text
    assert "900 clients (tiny BERT" in text  # the benchmark after it is still quoted


def test_report_results_help_is_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "results", "--help"])
    assert exc.value.code == 0 and "usage: fedrec report results" in capsys.readouterr().out
