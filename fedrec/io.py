"""Atomic file writes: a crash mid-write never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through ``write(fh)`` into a temporary sibling, fsync, then rename over ``path``.

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if needed.
    write : callable
        Receives a binary file handle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    data = json.dumps(obj, indent=2, sort_keys=False).encode()
    return atomic_write(path, lambda fh: fh.write(data))


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj``."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))
