"""The config schema: every field says what it is for, every enumerated default is one of its choices."""

from __future__ import annotations

import dataclasses

from omegaconf import OmegaConf

from fedrec.config import CHOICES, FedrecConfig


def _group(f: dataclasses.Field) -> type | None:  # type: ignore[type-arg]
    """The dataclass a field holds (a config group), or None for a value."""
    t = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
    return type(t) if dataclasses.is_dataclass(t) else None


def _classes(cls: type, seen: set[type]) -> set[type]:
    seen.add(cls)
    for f in dataclasses.fields(cls):
        group = _group(f)
        if group is not None and group not in seen:
            _classes(group, seen)
    return seen


def test_every_field_of_every_group_has_help_text() -> None:
    classes = _classes(FedrecConfig, set())
    assert len(classes) >= 10  # the groups are reached through the root
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if not f.metadata.get("help") and _group(f) is None  # a group: its class has the docstring
    ]
    assert not missing, missing


def test_every_enumerated_default_is_one_of_its_choices() -> None:
    cfg = OmegaConf.structured(FedrecConfig)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value != "???":
            assert value in allowed, (key, value, allowed)
