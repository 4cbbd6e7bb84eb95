"""fedrec: federated, cross-platform recommendation (LoRA on a shared frozen BERT, Flower, Opacus).

``fedrec.Recommender`` loads an exported joint model (see :mod:`fedrec.joint`); it is
imported on first use so that ``import fedrec`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recommender"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from fedrec.joint import Recommender

        return Recommender
    raise AttributeError(f"module 'fedrec' has no attribute {name!r}")
