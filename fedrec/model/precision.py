"""The backbone's matmul precision: ``model.bf16`` (auto, true or false) resolved for this CPU."""

from __future__ import annotations


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:  # pragma: no cover - not Linux
        pass
    return False


def resolve_bf16(setting: object) -> bool:
    """``model.bf16`` as a bool: ``"auto"`` is :func:`cpu_has_bf16`, ``true``/``false`` as given.

    Without native bf16 (e.g. AVX2-only CPUs) autocast emulates it and the backbone runs about
    6x slower than in fp32 (measured on an AMD EPYC with AVX2), hence ``auto``.

    Raises
    ------
    ValueError
        If ``setting`` is neither a bool nor ``"auto"``.
    """
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() == "auto":
        return cpu_has_bf16()
    raise ValueError(f"model.bf16 must be auto, true or false, got {setting!r}")


__all__ = ["cpu_has_bf16", "resolve_bf16"]
