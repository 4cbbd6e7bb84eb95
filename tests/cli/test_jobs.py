"""The privacy table that ends ``fedrec simulate`` and ``fedrec train``: private and non-private runs."""

from __future__ import annotations

import pytest

from fedrec.cli.jobs import print_simulation, privacy_lines, simulation_privacy

PRIVACY = {
    "unit": "user",
    "accountant": "rdp",
    "delta": 1e-5,
    "max_grad_norm": 1.0,
    "epsilon": {"video": 7.9914, "social": 7.9971},
    "noise_multiplier": {"video": 0.6311, "social": 0.5753},
    "sample_rate": {"video": 0.06787, "social": 0.03399},
}


def _doc(privacy: dict | None) -> dict:
    metrics = {"HR@10": 0.1, "NDCG@10": 0.05, "MRR": 0.04, "coverage@10": 0.5, "users": 10}
    return {
        "platforms": {"video": {"test": metrics}, "social": {"test": metrics}},
        "federation": {"aggregation": "fedavg", "rounds": 5, "best_round": 4},
        "cross_platform_loss": 7.0,
        "privacy": privacy,
    }


def test_non_private_run_says_epsilon_is_infinite(capsys: pytest.CaptureFixture[str]) -> None:
    title, rows = privacy_lines(simulation_privacy(_doc(None)), "cumulative over all 5 rounds")
    assert title.startswith("privacy spent: none, a non-private run") and "privacy.target_epsilon=8" in title
    assert rows == [("social", "inf", "-", "-"), ("video", "inf", "-", "-")]
    assert "target_epsilon" not in privacy_lines({"video": None}, "x", hint="")[0]
    print_simulation(_doc(None))
    out = capsys.readouterr().out
    assert out.index("fed-fedavg@r4") < out.index("privacy spent: none")  # the privacy table comes last


def test_private_run_prints_each_platforms_cumulative_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    title, rows = privacy_lines(simulation_privacy(_doc(PRIVACY)), "cumulative over all 5 rounds")
    assert "cumulative over all 5 rounds (user-level epsilon, delta=1e-05; rdp accountant" in title
    assert rows == [("social", "7.997", "0.5753", "0.03399"), ("video", "7.991", "0.6311", "0.06787")]
    print_simulation(_doc(PRIVACY))
    out = capsys.readouterr().out
    assert "7.991" in out and "7.997" in out and "inf" not in out


def test_a_two_tower_command_refuses_the_sequence_model(capsys) -> None:  # type: ignore[no-untyped-def]
    from fedrec.cli.jobs import train_job
    from fedrec.config import compose_config

    with pytest.raises(SystemExit) as exc:
        train_job(compose_config(["model=seqrec_tiny"], command="train"))
    assert exc.value.code == 2 and "model=minilm_lora" in capsys.readouterr().err
