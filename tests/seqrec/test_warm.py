"""Warming the frozen text cache before a federation: the clients then load the index and never run the backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedrec.config.compose import compose_config
from fedrec.seqrec.local import build_platforms
from fedrec.seqrec.warm import warm_text_cache


@pytest.fixture
def cache(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREC_DATA", str(data_root))
    monkeypatch.setenv("FEDREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_warmed_cache_serves_every_platform_without_the_lower_layers(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config(["model=seqrec_tiny", "platform=[video,ecommerce]"], command="simulate")
    threads = torch.get_num_threads()
    seconds = warm_text_cache(cfg, threads=1)
    assert sorted(seconds) == ["ecommerce", "video"] and torch.get_num_threads() == threads
    assert len(list(cache.rglob("frozen-text-*.pt"))) == 2

    def no_backbone(*args: object, **kwargs: object) -> None:
        raise AssertionError("the lower layers ran although the text index was cached")

    monkeypatch.setattr("fedrec.task.lower_states", no_backbone)
    for name, plat in build_platforms(cfg).items():
        index = plat.task.text.index()
        assert index.shape == (plat.task.data.num_items, plat.task.text.dim) and torch.isfinite(index).all()
        assert plat.task.text.catalogue._hidden is None, name  # loaded, not computed
    assert sorted(warm_text_cache(cfg)) == ["ecommerce", "video"]  # found again, nothing computed


def test_a_trained_adapter_is_not_warmed(cache: Path) -> None:
    cfg = compose_config(["model=seqrec_tiny", "platform=[video]", "model.seq.train_adapter=true"], command="simulate")
    assert warm_text_cache(cfg) == {} and not list(cache.rglob("frozen-text-*.pt"))
