"""Statistics over seeds: :class:`Stat` (mean ± sample standard deviation) and rounds-to-quality."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedrec.cli.report.common import NOT_RUN

QUALITY = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of values over seeds."""

    values: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        """Number of values."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean (NaN when empty)."""
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1; 0 for one value, NaN when empty)."""
        if not self.values:
            return math.nan
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def text(self, digits: int = 4, missing: str = NOT_RUN) -> str:
        """``mean ± std`` (``mean`` alone for one value, ``missing`` for none)."""
        if not self.values:
            return missing
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def rounds_to_quality(
    initial: float | None, losses: Iterable[tuple[int, float | None]], fraction: float = QUALITY
) -> int | None:
    """The first round whose cross-platform loss reaches ``fraction`` of the final improvement.

    The improvement is measured from the initial adapter's loss (round 0) to the last
    round's: the answer is the first round ``r`` with
    ``loss[r] <= initial - fraction * (initial - loss[last])``.

    Parameters
    ----------
    initial : float or None
        The loss before training (round 0).
    losses : iterable of (int, float or None)
        ``(round, loss)`` per round; rounds without a loss (a platform did not report)
        are skipped.
    fraction : float, default 0.95
        Share of the final improvement to reach.

    Returns
    -------
    int or None
        None without a round-0 loss, without rounds, or when the last round did not
        improve on round 0.
    """
    pts = sorted((int(r), float(x)) for r, x in losses if x is not None and math.isfinite(x))
    if initial is None or not math.isfinite(initial) or not pts:
        return None
    gain = initial - pts[-1][1]
    if not gain > 0:
        return None
    target = initial - fraction * gain
    return next(r for r, x in pts if x <= target + 1e-12 * max(1.0, abs(target)))
