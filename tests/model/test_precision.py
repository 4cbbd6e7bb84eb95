"""``model.bf16`` resolution: auto follows the CPU's flags, explicit values win, anything else is refused."""

from __future__ import annotations

import pytest

from fedrec.model import precision
from fedrec.model.precision import resolve_bf16


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_bf16("auto") is has_bf16
    assert resolve_bf16("AUTO") is has_bf16


def test_explicit_values_win_over_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_bf16(True) is True
    assert resolve_bf16(False) is False


@pytest.mark.parametrize("bad", ["yes", 1, None, "bf16"])
def test_other_values_are_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="model.bf16"):
        resolve_bf16(bad)


def test_the_cpu_flag_reader_matches_proc_cpuinfo() -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    assert precision.cpu_has_bf16() is bool({"avx512_bf16", "amx_bf16"} & set(flags))
