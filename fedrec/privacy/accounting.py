"""Privacy accounting across rounds: noise calibration and a persistent ledger.

The mechanism of every DP-SGD step is the Poisson-subsampled Gaussian mechanism with
sampling rate ``q`` (over users) and noise multiplier ``sigma``. Its composition over
steps is what Opacus's accountants compute from a *history* of
``(noise_multiplier, sample_rate, num_steps)`` entries. :class:`PrivacyLedger` keeps
that history for one platform across rounds (and processes: it persists as a durable
file, checksummed, with its last good copy kept), so the epsilon it reports is cumulative
over every round the platform trained in, exactly as one accountant run over all steps
would report it. Which file holds a platform's ledger, and how a node notices one that
went missing, is :mod:`fedrec.privacy.ledgers`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec.io import read_durable, write_durable

if TYPE_CHECKING:
    from fedrec.privacy.node_caps import NodeCaps

log = logging.getLogger("fedrec.privacy")

#: Accountants fedrec supports (Opacus mechanism names).
ACCOUNTANTS = ("rdp", "prv")

#: Opacus PRV's default error bound on epsilon (absolute)
PRV_EPS_ERROR = 0.01

#: ``(noise_multiplier, sample_rate, num_steps)``, Opacus's history entry.
Entry = tuple[float, float, int]

#: 2: a durable file (fedrec.io) with the ledger's platform and data fingerprint
LEDGER_FORMAT = 2


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
        Opacus accountant. ``prv`` (privacy random variables: as tight as a privacy
        loss distribution) returns the upper end of its error interval, refined to
        about 0.2% of epsilon (at least 0.001).

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
    from opacus.accountants import create_accountant  # here: a run without DP never imports opacus (~3.5 s)

    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    eps = float(acc.get_epsilon(delta=delta))
    if accountant == "prv":
        # PRV returns the upper end of an interval of absolute width eps_error (0.01 by default): 1.2% of an
        # epsilon of 0.86. Refine to ~0.2% relative (at least 1e-3: finer costs seconds to minutes).
        error = min(PRV_EPS_ERROR, max(1e-3, 0.002 * eps))
        if error < PRV_EPS_ERROR:
            eps = float(acc.get_epsilon(delta=delta, eps_error=error))
    return eps


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
    from opacus.accountants.utils import get_noise_multiplier  # here: see _epsilon

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
    """One platform's privacy spending on one training data set: accountant history, budget, persistence.

    The ledger holds the Opacus accountant's ``history`` of mechanisms (not an
    accountant object, nor epsilons: a fresh accountant is built from the history
    whenever epsilon is needed, so a ledger that was saved and loaded reports exactly
    what one long accountant run would, at any delta and with either accountant). A
    round is *charged* before it trains (see :meth:`charge`), so a crash mid-round can
    over-report but never under-report.

    Parameters
    ----------
    delta : float, default 1e-5
        Delta of the epsilons this ledger reports (PROTOCOL.md).
    accountant : {"rdp", "prv"}, default "rdp"
        Opacus accountant used for every epsilon this ledger reports.
    budget : float, optional
        Cumulative epsilon a round may not push the platform above (None = no limit).
    path : path-like, optional
        Durable file the ledger is saved to after every charge.
    platform, fingerprint : str, optional
        What the ledger is for: the platform and its training data
        (:func:`fedrec.privacy.fingerprint.training_fingerprint`).
    caps : NodeCaps, optional
        The node's own limits, checked with the run's budget (:meth:`check`).
    elsewhere : sequence of histories, optional
        The platform's other ledgers on the node (other training data), counted by
        ``caps.max_epsilon``.
    on_save : callable, optional
        Called with the ledger after each save (the node registry,
        :meth:`fedrec.privacy.ledgers.LedgerStore.register`).
    """

    def __init__(
        self,
        delta: float = 1e-5,
        accountant: str = "rdp",
        budget: float | None = None,
        path: str | os.PathLike[str] | None = None,
        platform: str = "",
        fingerprint: str = "",
        caps: NodeCaps | None = None,
        elsewhere: Sequence[Sequence[Entry]] = (),
        on_save: Callable[[PrivacyLedger], Any] | None = None,
    ) -> None:
        _check_accountant(accountant)
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.accountant = accountant
        self.budget = None if budget is None else float(budget)
        self.path = None if path is None else Path(path)
        self.platform, self.fingerprint = platform, fingerprint
        self.caps = caps
        self.elsewhere = [list(h) for h in elsewhere]
        self.on_save = on_save
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
        """Why a round of ``steps`` steps may not run, or None if it fits the budget and the node's caps.

        Parameters
        ----------
        noise_multiplier, sample_rate : float
            The round's mechanism.
        steps : int
            The round's steps.

        Returns
        -------
        str or None
            A sentence naming the epsilon the round would reach, the limit and what
            was spent so far; None when the round fits (or nothing limits it).
        """
        entry = (float(noise_multiplier), float(sample_rate), int(steps))
        if self.caps is not None:
            reason = self.caps.check(self.history, entry, self.elsewhere, self.accountant)
            if reason is not None:
                return reason
        if self.budget is None:
            return None
        after = self.epsilon([entry])
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
            If the round would exceed the budget or the node's caps (call :meth:`check`
            first to get the reason without an exception).
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
            "platform": self.platform,
            "fingerprint": self.fingerprint,
            "accountant": self.accountant,
            "delta": self.delta,
            "budget": self.budget,
            "history": [list(e) for e in self.history],
            "steps": self.steps,
            "rounds": list(self.rounds),
            "epsilon": self.epsilon(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        The history is kept whatever delta or accountant it was charged under: epsilon
        is recomputed from it with this ledger's (both accountants bound the same
        mechanisms), so a later run with other settings still starts from everything
        spent before.

        Raises
        ------
        ValueError
            If the format is unknown, or the state belongs to another platform or
            training data than this ledger's (when both are set).
        """
        if state.get("format") != LEDGER_FORMAT:
            raise ValueError(f"unknown privacy ledger format {state.get('format')!r} (expected {LEDGER_FORMAT})")
        for key in ("platform", "fingerprint"):
            mine, theirs = getattr(self, key), str(state.get(key, ""))
            if mine and theirs and mine != theirs:
                raise ValueError(f"privacy ledger of {key} {theirs!r} cannot be loaded as the ledger of {mine!r}")
        if (state["accountant"], float(state["delta"])) != (self.accountant, self.delta):
            log.info(
                "privacy ledger %s: charged under accountant=%s, delta=%s; reported with accountant=%s, delta=%s",
                self.path or "(in memory)",
                state["accountant"],
                state["delta"],
                self.accountant,
                self.delta,
            )
        self.platform = self.platform or str(state.get("platform", ""))
        self.fingerprint = self.fingerprint or str(state.get("fingerprint", ""))
        self.history = merge_history(tuple(e) for e in state["history"])
        self.rounds = list(state.get("rounds", []))

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Durably write :meth:`state_dict` to ``path`` (default: :attr:`path`), then call :attr:`on_save`."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the privacy ledger to")
        out = write_durable(target, json.dumps(self.state_dict(), indent=1).encode())
        if self.on_save is not None:
            self.on_save(self)
        return out

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The state saved at ``path`` (its last good copy if the newest is damaged, logged); None if none exists.

        Raises
        ------
        fedrec.io.CorruptStateError
            If copies exist but none is readable.
        """

        def fallback(message: str) -> None:
            log.warning("privacy ledger: %s", message)

        payload = read_durable(path, on_fallback=fallback)
        return None if payload is None else json.loads(payload)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        delta: float = 1e-5,
        accountant: str = "rdp",
        budget: float | None = None,
    ) -> PrivacyLedger:
        """The ledger saved at ``path`` (a new, empty one if no copy exists), saving back there.

        A stand-alone file: a node's ledgers go through
        :class:`fedrec.privacy.ledgers.LedgerStore`, which also notices a deleted one.

        Parameters
        ----------
        path : path-like
            Ledger file.
        delta, accountant, budget
            See :class:`PrivacyLedger`; ``budget`` is this run's (it may change between runs).
        """
        ledger = cls(delta=delta, accountant=accountant, budget=budget, path=path)
        state = cls.read(path)
        if state is not None:
            ledger.load_state_dict(state)
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(platform={self.platform!r}, epsilon={self.epsilon():.4g}, delta={self.delta:g}, "
            f"accountant={self.accountant}, budget={self.budget}, steps={self.steps}, rounds={len(self.rounds)})"
        )
