"""Where the configuration comes from: the ``conf/`` folder, Hydra's ConfigStore, composition outside an app."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from fedrec.config.checks import validate
from fedrec.config.schema import FedrecConfig


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore as ``fedrec_schema``."""
    cs = ConfigStore.instance()
    cs.store(name="fedrec_schema", node=FedrecConfig)


def platform_folder(cfg: DictConfig, name: str) -> Path:
    """Folder of platform ``name``: ``platforms.<name>.dir`` resolved against ``data.root``."""
    d = Path(cfg.platforms[name].dir).expanduser()
    return d if d.is_absolute() else Path(cfg.data.root).expanduser() / d


def compose_config(
    overrides: Sequence[str] = (), command: str | None = None, config_dir: str | Path | None = None
) -> DictConfig:
    """Fedrec's configuration composed with Hydra ``overrides`` outside a Hydra app, validated.

    Parameters
    ----------
    overrides : sequence of str, default ()
        Hydra overrides (``"model=tiny"``, ``"federation.rounds=2"``).
    command : str, optional
        Sets ``command`` before the overrides (default: the config's own).
    config_dir : path-like, optional
        The folder with ``config.yaml`` (default: :func:`conf_dir`).

    Raises
    ------
    ValueError
        On an invalid value (:func:`validate`); Hydra raises on an unknown key or a value
        of the wrong type.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if config_dir is None:
        config_dir = conf_dir()
    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    first = [] if command is None else [f"command={command}"]
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = compose("config", overrides=[*first, *overrides])
    validate(cfg)
    return cfg


def conf_dir() -> Path:
    """The ``conf/`` folder every command composes: ``$FEDREC_CONF``, the source tree's, or the installed copy.

    An editable install or a source checkout uses the ``conf/`` beside the ``fedrec``
    package; a wheel carries the same files as ``fedrec/conf`` (``pyproject.toml`` maps
    them there).

    Raises
    ------
    FileNotFoundError
        If none of them holds a ``config.yaml``.
    """
    env = os.environ.get("FEDREC_CONF")
    package = Path(__file__).resolve().parent.parent  # fedrec/, this file is fedrec/config/compose.py
    candidates = [Path(env)] if env else [package.parent / "conf", package / "conf"]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise FileNotFoundError(
        f"no config.yaml in {' or '.join(map(str, candidates))}; set FEDREC_CONF to fedrec's conf/ folder"
    )
