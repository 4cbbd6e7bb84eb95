"""Durable state files: checksummed, atomic, the last good copy kept and recovered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedrec.io import (
    CorruptStateError,
    atomic_write,
    load_torch_durable,
    read_durable,
    save_torch_durable,
    write_durable,
)


def test_round_trip_and_the_previous_copy(tmp_path: Path) -> None:
    p = tmp_path / "state.bin"
    assert read_durable(p) is None
    write_durable(p, b"one")
    write_durable(p, b"two")
    assert read_durable(p) == b"two"
    assert read_durable(p.with_name("state.bin.prev")) == b"one"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "delete"])
def test_a_damaged_newest_copy_falls_back_to_the_last_good_one(tmp_path: Path, damage: str) -> None:
    p = tmp_path / "state.bin"
    write_durable(p, b"good" * 100)
    write_durable(p, b"newer" * 100)
    blob = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        p.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    elif damage == "garbage":
        p.write_bytes(b"\x00" * 10)
    else:
        p.unlink()
    messages: list[str] = []
    assert read_durable(p, messages.append) == b"good" * 100
    assert len(messages) == 1 and "recovered the last good copy" in messages[0]


def test_a_corrupt_newest_copy_never_replaces_the_last_good_one(tmp_path: Path) -> None:
    p = tmp_path / "state.bin"
    write_durable(p, b"good")
    write_durable(p, b"newer")
    p.write_bytes(b"junk")
    write_durable(p, b"newest")  # the junk is dropped, "good" stays the .prev copy ...
    assert read_durable(p.with_name("state.bin.prev")) == b"good"
    assert read_durable(p) == b"newest"


def test_no_good_copy_is_an_error_naming_the_files(tmp_path: Path) -> None:
    p = tmp_path / "state.bin"
    write_durable(p, b"a")
    write_durable(p, b"b")
    p.write_bytes(b"x")
    p.with_name("state.bin.prev").write_bytes(b"y")
    with pytest.raises(CorruptStateError, match="state.bin.*state.bin.prev"):
        read_durable(p)


def test_torch_objects(tmp_path: Path) -> None:
    p = tmp_path / "ckpt.pt"
    save_torch_durable(p, {"w": torch.arange(3.0), "round": 2})
    out = load_torch_durable(p)
    assert out["round"] == 2 and torch.equal(out["w"], torch.arange(3.0))


def test_atomic_write_mode_and_a_refusing_writer(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "cache.npy"
    atomic_write(p, lambda fh: fh.write(b"first"), mode=0o644)
    assert p.read_bytes() == b"first" and p.stat().st_mode & 0o777 == 0o644
    assert atomic_write(tmp_path / "private", lambda fh: fh.write(b"x")).stat().st_mode & 0o777 == 0o600

    def refuse(fh: Any) -> None:
        fh.write(b"half")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        atomic_write(p, refuse)
    assert p.read_bytes() == b"first" and sorted(x.name for x in p.parent.iterdir()) == ["cache.npy"]
