"""Per-platform fixtures for the data-layer tests (``data_root`` and ``platforms`` come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from fedrec.data import PlatformData


@pytest.fixture(scope="session")
def ecommerce(platforms: dict[str, PlatformData]) -> PlatformData:
    return platforms["ecommerce"]


@pytest.fixture(scope="session")
def video(platforms: dict[str, PlatformData]) -> PlatformData:
    return platforms["video"]


@pytest.fixture(scope="session")
def social(platforms: dict[str, PlatformData]) -> PlatformData:
    return platforms["social"]
