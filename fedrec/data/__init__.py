"""Data layer: per-platform loaders producing :class:`PlatformData`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedrec.data.amazon_office import load_amazon_office
from fedrec.data.custom import load_custom
from fedrec.data.lastfm import load_lastfm_hetrec
from fedrec.data.movielens import load_movielens_100k
from fedrec.data.types import DataFormatError, DataMissingError, PlatformData

LOADERS: dict[str, Callable[[Path, str], PlatformData]] = {
    "amazon_office": load_amazon_office,
    "movielens_100k": load_movielens_100k,
    "lastfm_hetrec": load_lastfm_hetrec,
    "custom": load_custom,
}


def load_platform(loader: str, folder: Path, name: str) -> PlatformData:
    """Load a platform with the named loader.

    Parameters
    ----------
    loader : str
        One of ``LOADERS`` (``amazon_office``, ``movielens_100k``, ``lastfm_hetrec``, ``custom``).
    folder : pathlib.Path
        Folder holding the platform's files.
    name : str
        Platform name to give the result.
    """
    if loader not in LOADERS:
        raise ValueError(f"unknown data loader {loader!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[loader](Path(folder), name)


__all__ = ["LOADERS", "DataFormatError", "DataMissingError", "PlatformData", "load_platform"]
