"""Shared fixtures: the data root and the three real platforms, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedrec.data import PlatformData, load_platform

REPO_ROOT = Path(__file__).resolve().parents[1]

#: platform name -> (loader, folder under the data root)
REAL_PLATFORMS = {
    "ecommerce": ("amazon_office", "amazon-office"),
    "video": ("movielens_100k", "ml-100k"),
    "social": ("lastfm_hetrec", "lastfm-hetrec2011"),
}


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$FEDREC_DATA`` if set, else ``<repo>/../shared/datasets``; a missing folder fails the test."""
    root = Path(os.environ.get("FEDREC_DATA", REPO_ROOT / ".." / "shared" / "datasets"))
    if not root.is_dir():
        pytest.fail(
            f"data root {root} does not exist; set FEDREC_DATA to a folder holding "
            "amazon-office/, ml-100k/ and lastfm-hetrec2011/",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def platforms(data_root: Path) -> dict[str, PlatformData]:
    """The three real platforms by name (``ecommerce``, ``video``, ``social``)."""
    return {name: load_platform(loader, data_root / folder, name) for name, (loader, folder) in REAL_PLATFORMS.items()}
