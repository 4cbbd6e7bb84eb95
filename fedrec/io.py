"""Atomic file writes (a crash mid-write never leaves a half-written file behind) and durable state files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def safe_name(value: str, what: str) -> str:
    """``value`` if it can name a folder inside another one (``[A-Za-z0-9_-]{1,64}``), else ValueError.

    For names that arrive from elsewhere (a run key in a message, a checkpoint) and become
    a path component: ``..``, a slash or an empty name would leave the parent folder.

    Parameters
    ----------
    value : str
        The name.
    what : str
        What it is, for the error (``"the run key"``).

    Raises
    ------
    ValueError
        Naming ``what``, the value and the allowed pattern.
    """
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a safe folder name: it must match [A-Za-z0-9_-]{{1,64}}")
    return value


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], mode: int | None = None) -> Path:
    """Write a file through ``write(fh)`` into a temporary sibling, fsync, then rename over ``path``.

    Whatever ``write`` raises removes the temporary file and leaves ``path`` as it was (a
    writer may raise to refuse what it wrote, e.g. on a checksum mismatch).

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if needed.
    write : callable
        Receives a binary file handle.
    mode : int, optional
        Permission bits of the file (default: the temporary file's, ``0o600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
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


# -- durable state: checksummed, with the last good copy kept -----------------------------

#: first line of a durable file: magic, payload length and sha256
DURABLE_MAGIC = b"FEDREC-DURABLE-1"
BACKUP_SUFFIX = ".prev"


class CorruptStateError(ValueError):
    """Neither the newest copy of a durable file nor its last good copy can be read."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frame(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"%s %d %s\n" % (DURABLE_MAGIC, len(payload), digest) + payload


def _unframe(blob: bytes, path: Path) -> bytes:
    """The payload of a durable file, or ValueError saying what is wrong with it."""
    head, sep, payload = blob.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != DURABLE_MAGIC:
        raise ValueError(f"{path}: not a fedrec durable file (bad header)")
    if int(parts[1]) != len(payload):
        raise ValueError(f"{path}: truncated ({len(payload)} of {int(parts[1])} bytes)")
    if hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        raise ValueError(f"{path}: checksum mismatch")
    return payload


def write_durable(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` checksummed and atomically, keeping the previous good copy as ``<path>.prev``.

    The newest copy is first checked: only a readable one becomes the ``.prev`` copy, so a
    corrupt newest file never overwrites the last good one. The folder is fsynced after
    each rename, so a crash at any point leaves at least one good copy on disk.

    Parameters
    ----------
    path : path-like
        Destination.
    payload : bytes
        The content (read back by :func:`read_durable`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            _unframe(path.read_bytes(), path)
        except ValueError:
            pass  # a corrupt newest copy is dropped; the .prev copy stays the last good one
        else:
            os.replace(path, path.with_name(path.name + BACKUP_SUFFIX))
            _fsync_dir(path.parent)
    framed = _frame(payload)
    atomic_write(path, lambda fh: fh.write(framed))
    _fsync_dir(path.parent)
    return path


def read_durable(path: str | os.PathLike[str], on_fallback: Callable[[str], Any] | None = None) -> bytes | None:
    """The payload of the newest good copy of a durable file; None if no copy exists.

    Parameters
    ----------
    path : path-like
        The file written by :func:`write_durable`.
    on_fallback : callable, optional
        Called with a message when the newest copy is unreadable and the ``.prev`` copy is used.

    Raises
    ------
    CorruptStateError
        If copies exist but none is readable (naming each file and its problem).
    """
    path = Path(path)
    problems = []
    for i, candidate in enumerate((path, path.with_name(path.name + BACKUP_SUFFIX))):
        if not candidate.is_file():
            continue
        try:
            payload = _unframe(candidate.read_bytes(), candidate)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if i and on_fallback is not None:
            on_fallback(f"{'; '.join(problems) or f'{path} is missing'}; recovered the last good copy {candidate}")
        return payload
    if problems:
        raise CorruptStateError("; ".join(problems) + "; no good copy is left")
    return None


def save_torch_durable(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`write_durable` of ``torch.save(obj)``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_durable(path, buf.getvalue())


def load_torch_durable(path: str | os.PathLike[str], on_fallback: Callable[[str], Any] | None = None) -> Any:
    """The object of :func:`save_torch_durable` (``weights_only``), or None if no copy exists."""
    import io

    import torch

    payload = read_durable(path, on_fallback)
    return None if payload is None else torch.load(io.BytesIO(payload), weights_only=True)
