"""Local-only sequence models: one process per platform gives what one process gives (real data, tiny model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from fedrec.config.compose import compose_config
from fedrec.seqrec.local import local_only

OVERRIDES = [
    "model=seqrec_tiny",
    "platform=[video,social]",
    "federation.rounds=1",
    "federation.local_epochs=0.5",
    "model.seq.personal_epochs=1",
    "federation.compare_local=true",
    "platforms.video.prior=none",  # the EASE prior (a 17,632-item inverse on social) is not what is compared here
    "platforms.social.prior=none",
]


@pytest.fixture
def cfg_for(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], DictConfig]:
    """``cfg_for(parallel)``: the tiny local-only config on the real video and social platforms."""
    monkeypatch.setenv("FEDREC_DATA", str(data_root))
    monkeypatch.setenv("FEDREC_CACHE", str(tmp_path / "cache"))

    def make(parallel: bool) -> DictConfig:
        return compose_config([*OVERRIDES, f"federation.compare_parallel={str(parallel).lower()}"], command="simulate")

    return make


def test_one_process_per_platform_matches_one_process(cfg_for: Callable[[bool], DictConfig]) -> None:
    serial, parallel = local_only(cfg_for(False)), local_only(cfg_for(True))
    assert list(parallel["models"]) == ["video", "social"]
    for name in ("video", "social"):
        a, b = serial["models"][name], parallel["models"][name]
        assert (a["steps"], a["examples"]) == (b["steps"], b["examples"]) and a["steps"] > 0
        for key in ("NDCG@10", "HR@10", "shared-NDCG@10"):
            assert a["test"][key] == pytest.approx(b["test"][key], abs=1e-6), (name, key)
    for source in ("video", "social"):
        for target in ("video", "social"):
            x, y = serial["transfer"]["metrics"][source][target], parallel["transfer"]["metrics"][source][target]
            assert np.isfinite(x["NDCG@10"]) and x["NDCG@10"] == pytest.approx(y["NDCG@10"], abs=1e-6)
    # the diagonal is the platform's own shared part
    assert parallel["transfer"]["metrics"]["video"]["video"]["NDCG@10"] == pytest.approx(
        parallel["models"]["video"]["test"]["shared-NDCG@10"], abs=1e-9
    )


def test_a_failing_platform_process_names_the_platform(cfg_for: Callable[[bool], DictConfig]) -> None:
    cfg = cfg_for(True)
    cfg.platforms.social.dir = "no-such-folder"
    cfg.data.download = False
    with pytest.raises(RuntimeError, match="local-only model of platform 'social' failed"):
        local_only(cfg)
