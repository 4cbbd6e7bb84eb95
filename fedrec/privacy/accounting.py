"""Privacy accounting across rounds: noise calibration and a persistent ledger.

The mechanism of every DP-SGD step is the Poisson-subsampled Gaussian mechanism with
sampling rate ``q`` (over users) and noise multiplier ``sigma``. Its composition over
steps is what Opacus's accountants compute from a *history* of
``(noise_multiplier, sample_rate, num_steps)`` entries. :class:`PrivacyLedger` keeps
that history for one platform across rounds (and processes: it persists atomically), so
the epsilon it reports is cumulative over every round the platform trained in, exactly
as one accountant run over all steps would report it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedrec.io import write_json

#: Accountants fedrec supports (Opacus mechanism names).
ACCOUNTANTS = ("rdp", "prv")

#: ``(noise_multiplier, sample_rate, num_steps)``, Opacus's history entry.
Entry = tuple[float, float, int]

LEDGER_FORMAT = 1


def _check_accountant(name: str) -> None:
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {list(ACCOUNTANTS)}, got {name!r}")


def merge_history(entries: Iterable[Sequence[float]]) -> list[Entry]:
    """Normalise a history: drop empty entries and merge consecutive equal mechanisms.

    Opacus's accountants merge consecutive steps with the same ``(sigma, q)`` into one
    entry; doing the same here makes a ledger's history identical to the history of
    one accountant that took every step, whatever the round boundaries were.

    Parameters
    ----------
    entries : iterable of (noise_multiplier, sample_rate, num_steps)
        History entries in order.

    Returns
    -------
    list of (float, float, int)
    """
    out: list[Entry] = []
    for sigma, q, steps in entries:
        if int(steps) <= 0:
            continue
        if out and out[-1][0] == float(sigma) and out[-1][1] == float(q):
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + int(steps))
        else:
            out.append((float(sigma), float(q), int(steps)))
    return out


def epsilon_of(history: Sequence[Entry], delta: float, accountant: str = "rdp") -> float:
    """Epsilon of a composed history at ``delta`` with an Opacus accountant.

    Parameters
    ----------
    history : sequence of (noise_multiplier, sample_rate, num_steps)
        The mechanisms run so far.
    delta : float
        Target delta.
    accountant : {"rdp", "prv"}, default "rdp"
        Opacus accountant. ``prv`` returns the upper end of its error interval.

    Returns
    -------
    float
        0 for an empty history; ``inf`` if any step ran without noise.
    """
    _check_accountant(accountant)
    return _epsilon(tuple(merge_history(history)), float(delta), accountant)


@functools.lru_cache(maxsize=1024)
def _epsilon(history: tuple[Entry, ...], delta: float, accountant: str) -> float:
    # cached: an RDP evaluation takes ~0.3 s and a ledger asks for the same history often
    if not history:
        return 0.0
    if any(sigma <= 0 and q > 0 for sigma, q, _ in history):
        return math.inf
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """Smallest noise multiplier (to Opacus's search tolerance) reaching ``target_epsilon`` after ``steps``.

    Uses :func:`opacus.accountants.utils.get_noise_multiplier`, whose binary search
    returns a multiplier whose epsilon is ``<= target_epsilon``.

    Parameters
    ----------
    target_epsilon : float
        Epsilon after all ``steps`` (the whole run). ``inf`` gives 0 (no noise).
    delta : float
        Target delta.
    sample_rate : float
        Poisson sampling rate per step.
    steps : int
        Total steps of the run (rounds x local steps).
    accountant : {"rdp", "prv"}, default "rdp"
        Accountant used for the search.

    Raises
    ------
    ValueError
        If the target is not reachable (Opacus gives up above sigma = 1e6).
    """
    _check_accountant(accountant)
    if math.isinf(target_epsilon):
        return 0.0
    if target_epsilon <= 0 or steps <= 0 or not 0 < sample_rate <= 1:
        raise ValueError(
            f"cannot calibrate noise for target_epsilon={target_epsilon}, steps={steps}, sample_rate={sample_rate}"
        )
    with warnings.catch_warnings():
        # the search probes very large multipliers, where RDP's alpha grid tops out; harmless there
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        sigma = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=int(steps),
            accountant=accountant,
        )
    return float(sigma)


class PrivacyLedger:
    """One platform's privacy spending across rounds: accountant history, budget, persistence.

    The ledger holds the Opacus accountant's ``history`` (not an accountant object:
    a fresh accountant is built from the history whenever epsilon is needed, so a
    ledger that was saved and loaded reports exactly what one long accountant run
    would). A round is *charged* before it trains (see :meth:`charge`), so a crash
    mid-round can over-report but never under-report.

    Parameters
    ----------
    delta : float, default 1e-5
        Delta of the guarantee (PROTOCOL.md).
    accountant : {"rdp", "prv"}, default "rdp"
        Opacus accountant used for every epsilon this ledger reports.
    budget : float, optional
        Cumulative epsilon a round may not push the platform above (None = no limit).
    path : path-like, optional
        JSON file the ledger is saved to after every charge (atomically).
    """

    def __init__(
        self,
        delta: float = 1e-5,
        accountant: str = "rdp",
        budget: float | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_accountant(accountant)
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.accountant = accountant
        self.budget = None if budget is None else float(budget)
        self.path = None if path is None else Path(path)
        self.history: list[Entry] = []
        self.rounds: list[dict[str, Any]] = []

    # -- queries ------------------------------------------------------------------------
    def epsilon(self, extra: Sequence[Entry] = ()) -> float:
        """Cumulative epsilon at :attr:`delta`, optionally with ``extra`` steps appended."""
        return epsilon_of([*self.history, *extra], self.delta, self.accountant)

    @property
    def steps(self) -> int:
        """Steps charged so far."""
        return sum(s for _, _, s in self.history)

    def check(self, noise_multiplier: float, sample_rate: float, steps: int) -> str | None:
        """Why a round of ``steps`` steps may not run, or None if it fits the budget.

        Parameters
        ----------
        noise_multiplier, sample_rate : float
            The round's mechanism.
        steps : int
            The round's steps.

        Returns
        -------
        str or None
            A sentence naming the epsilon the round would reach, the budget and what
            was spent so far; None when there is no budget or the round fits.
        """
        if self.budget is None:
            return None
        after = self.epsilon([(noise_multiplier, sample_rate, steps)])
        if after <= self.budget:
            return None
        return (
            f"privacy budget exceeded: this round ({steps} steps, noise multiplier {noise_multiplier:.4g}, "
            f"sampling rate {sample_rate:.4g}) would take the cumulative epsilon from {self.epsilon():.4g} to "
            f"{after:.4g} > budget {self.budget:.4g} (delta={self.delta:g}, accountant={self.accountant}, "
            f"{len(self.rounds)} rounds charged so far); the round was not trained"
        )

    # -- updates ------------------------------------------------------------------------
    def charge(self, noise_multiplier: float, sample_rate: float, steps: int, round_id: int | None = None) -> float:
        """Record a round's steps (and save when the ledger has a path); returns the new epsilon.

        Raises
        ------
        ValueError
            If the round would exceed the budget (call :meth:`check` first to get the
            reason without an exception).
        """
        reason = self.check(noise_multiplier, sample_rate, steps)
        if reason is not None:
            raise ValueError(reason)
        self.history = merge_history([*self.history, (noise_multiplier, sample_rate, steps)])
        eps = self.epsilon()
        self.rounds.append(
            {
                "round": round_id,
                "steps": int(steps),
                "noise_multiplier": float(noise_multiplier),
                "sample_rate": float(sample_rate),
                "epsilon": eps,
            }
        )
        if self.path is not None:
            self.save()
        return eps

    # -- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (for Flower's ``Context.state`` or a file)."""
        return {
            "format": LEDGER_FORMAT,
            "accountant": self.accountant,
            "delta": self.delta,
            "budget": self.budget,
            "history": [list(e) for e in self.history],
            "rounds": list(self.rounds),
            "epsilon": self.epsilon(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises
        ------
        ValueError
            If the saved accountant or delta differ from this ledger's (epsilons under
            different settings cannot be mixed silently).
        """
        if state.get("format") != LEDGER_FORMAT:
            raise ValueError(f"unknown privacy ledger format {state.get('format')!r}")
        if state["accountant"] != self.accountant or float(state["delta"]) != self.delta:
            raise ValueError(
                f"privacy ledger was kept with accountant={state['accountant']}, delta={state['delta']}; "
                f"this run uses accountant={self.accountant}, delta={self.delta}"
            )
        self.history = merge_history(tuple(e) for e in state["history"])
        self.rounds = list(state.get("rounds", []))

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Atomically write :meth:`state_dict` as JSON to ``path`` (default: :attr:`path`)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the privacy ledger to")
        return write_json(target, self.state_dict())

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        delta: float = 1e-5,
        accountant: str = "rdp",
        budget: float | None = None,
    ) -> PrivacyLedger:
        """The ledger saved at ``path`` (a new, empty one if the file does not exist), saving back there.

        Parameters
        ----------
        path : path-like
            Ledger file.
        delta, accountant, budget
            See :class:`PrivacyLedger`; ``budget`` is this run's (it may change between runs).
        """
        ledger = cls(delta=delta, accountant=accountant, budget=budget, path=path)
        p = Path(path)
        if p.is_file():
            ledger.load_state_dict(json.loads(p.read_text()))
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(epsilon={self.epsilon():.4g}, delta={self.delta:g}, accountant={self.accountant}, "
            f"budget={self.budget}, steps={self.steps}, rounds={len(self.rounds)})"
        )
