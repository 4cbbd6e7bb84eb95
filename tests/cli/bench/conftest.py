"""Overrides that point a benchmark at the test data root and a throw-away cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_overrides(data_root: Path, tmp_path: Path) -> list[str]:
    """``data.root`` = the real data, ``data.cache_dir`` = this test's folder, no downloads."""
    return [f"data.root={data_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.download=false"]
