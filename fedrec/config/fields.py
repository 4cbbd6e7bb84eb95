"""The one way a config field is declared: its default and its help text."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` (a list or dict copied per instance) and ``metadata["help"]``."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})
