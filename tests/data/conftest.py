"""Fixtures for the data-layer tests: the shared data root and the three loaded platforms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedrec.data import PlatformData, load_platform

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "datasets"

#: platform name -> (loader, folder under the data root)
PLATFORMS = {
    "ecommerce": ("amazon_office", "amazon-office"),
    "video": ("movielens_100k", "ml-100k"),
    "social": ("lastfm_hetrec", "lastfm-hetrec2011"),
}


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding ``amazon-office/``, ``ml-100k/``, ``lastfm-hetrec2011/``.

    ``$FEDREC_DATA`` if set, else ``<repo>/../shared/datasets`` (relative to the
    repository root, not the working directory). A missing folder fails the test.
    """
    env = os.environ.get("FEDREC_DATA")
    root = Path(env).expanduser() if env else DEFAULT_DATA_ROOT
    if not root.is_dir():
        pytest.fail(
            f"data root {root} does not exist "
            f"({'from FEDREC_DATA' if env else 'default <repo>/../shared/datasets'}). Set FEDREC_DATA to a folder "
            "holding amazon-office/, ml-100k/ and lastfm-hetrec2011/, or run `fedrec data download`.",
            pytrace=False,
        )
    return root


def _load(data_root: Path, platform: str) -> PlatformData:
    loader, folder = PLATFORMS[platform]
    return load_platform(loader, data_root / folder, platform)


@pytest.fixture(scope="session")
def ecommerce(data_root: Path) -> PlatformData:
    return _load(data_root, "ecommerce")


@pytest.fixture(scope="session")
def video(data_root: Path) -> PlatformData:
    return _load(data_root, "video")


@pytest.fixture(scope="session")
def social(data_root: Path) -> PlatformData:
    return _load(data_root, "social")


@pytest.fixture(scope="session")
def platforms(ecommerce: PlatformData, video: PlatformData, social: PlatformData) -> dict[str, PlatformData]:
    return {"ecommerce": ecommerce, "video": video, "social": social}
