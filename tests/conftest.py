"""Shared fixtures: the data root, the three real platforms (loaded once per session) and the tests' config."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fedrec.config import compose_config
from fedrec.data import PlatformData, load_platform

REPO_ROOT = Path(__file__).resolve().parents[1]

#: platform name -> (loader, folder under the data root)
REAL_PLATFORMS = {
    "ecommerce": ("amazon_office", "amazon-office"),
    "video": ("movielens_100k", "ml-100k"),
    "social": ("lastfm_hetrec", "lastfm-hetrec2011"),
}


#: The modules that take a minute or more (real Flower processes, the simulation engine), longest first
#: (their setup and call times in the suite's --durations). They are collected before the rest, so the
#: two pytest-xdist workers start on them and the short modules fill in around them.
LONG_MODULES = (
    "tests/federated/test_deploy.py",
    "tests/federated/test_deploy_resume.py",
    "tests/federated/test_simulate.py",
    "tests/federated/test_secagg.py",
    "tests/cli/bench/test_scale.py",
    "tests/cli/test_experiments.py",
    "tests/federated/test_private.py",
    "tests/test_packaging.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the long modules first, in :data:`LONG_MODULES` order; the rest keep theirs."""
    rank = {m: i for i, m in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_MODULES)))


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


def compose_test_config(
    *overrides: str,
    model: str = "tiny",
    smoke: bool = True,
    data_root: Path | None = None,
    tmp_path: Path | None = None,
    command: str | None = None,
) -> DictConfig:
    """The tests' fedrec config: the repository's ``conf/`` with a small model, then ``overrides`` (last wins).

    Parameters
    ----------
    *overrides : str
        Hydra overrides.
    model : str, default "tiny"
        The model group (``tiny``: random tiny BERT; ``seqrec_tiny``).
    smoke : bool, default True
        Add ``train=smoke`` (seconds-long two-tower training).
    data_root : pathlib.Path, optional
        ``data.root`` (the real platforms).
    tmp_path : pathlib.Path, optional
        ``data.cache_dir`` becomes ``<tmp_path>/cache``.
    command : str, optional
        ``command`` before the overrides.
    """
    base = [f"model={model}", *(["train=smoke"] if smoke else [])]
    if data_root is not None:
        base.append(f"data.root={data_root}")
    if tmp_path is not None:
        base.append(f"data.cache_dir={tmp_path / 'cache'}")
    return compose_config([*base, *overrides], command=command, config_dir=REPO_ROOT / "conf")


#: ``compose_cfg(*overrides, model="tiny", smoke=True, tmp_path=None, command=None)``
ComposeCfg = Callable[..., DictConfig]


@pytest.fixture
def compose_cfg(data_root: Path, tmp_path: Path) -> ComposeCfg:
    """:func:`compose_test_config` on the real data (``data_root``), caching under this test's ``tmp_path``.

    ``tmp_path=`` names another run folder (its ``cache`` holds the caches).
    """

    def compose(*overrides: str, tmp_path: Path = tmp_path, **kw: object) -> DictConfig:
        return compose_test_config(*overrides, data_root=data_root, tmp_path=tmp_path, **kw)  # type: ignore[arg-type]

    return compose
