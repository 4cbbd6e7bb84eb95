"""A node's privacy ledgers: one per platform and training data, and a registry proving they exist.

Layout of a node's ledger folder (``<state dir>/privacy`` on a deployed node,
``<federation.client_state_dir>/privacy`` in simulation; never inside a run's folder)::

    registry             every (platform, data fingerprint) the node has charged, with its history
    registry.prev        the registry's last good copy
    <platform>-<fp16>.ledger(.prev)
                         the ledger of one platform's training data (fedrec.io durable files)

The ledger is keyed by the data (:func:`fedrec.privacy.fingerprint.training_fingerprint`),
so restarts, resumed runs and new runs on the same data all add to it. Both files are
durable (checksummed, atomic, the last good copy kept), and each holds the charged
history, so each can repair the other:

* a damaged newest ledger falls back to its ``.prev`` copy (logged); if that copy is one
  charge behind the registry, the registry's history (which extends it) is restored;
* a ledger the registry lists but that is gone (both copies), unreadable, or behind in a
  way the registry cannot repair is an error (:class:`LedgerError`): the node refuses
  to train rather than start that data again from zero;
* a registry that is gone while ledger files remain is an error too; a damaged newest
  registry falls back to its ``.prev`` copy, and a ledger ahead of the registry (a crash
  between the two writes) is taken and re-registered.

What cannot be detected: the whole folder wiped (or the node pointed at an empty one),
or the whole folder rolled back to an older consistent copy. Keep the folder on storage
that is backed up and that only the platform's operator can write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec.io import CorruptStateError, read_durable, write_durable
from fedrec.privacy.accounting import Entry, PrivacyLedger, epsilon_of, merge_history

if TYPE_CHECKING:
    from fedrec.privacy.node_caps import NodeCaps

log = logging.getLogger("fedrec.privacy")

REGISTRY = "registry"
REGISTRY_FORMAT = 1
LEDGER_SUFFIX = ".ledger"
LOCK = ".lock"


class LedgerError(ValueError):
    """A ledger the node knows it charged is missing, unreadable or behind: the node does not train."""


def _extends(longer: Sequence[Sequence[float]], shorter: Sequence[Sequence[float]]) -> bool:
    """Whether history ``longer`` is ``shorter`` followed by more steps (both merged)."""
    a = merge_history(tuple(e) for e in longer)
    b = merge_history(tuple(e) for e in shorter)
    if len(b) > len(a):
        return False
    if not b:
        return True
    last = len(b) - 1
    if a[:last] != b[:last]:
        return False
    (s1, q1, n1), (s2, q2, n2) = a[last], b[last]
    return (s1, q1) == (s2, q2) and n1 >= n2


def _key(platform: str, fingerprint: str) -> str:
    """A registry key: the same data could belong to two platforms."""
    return f"{platform}:{fingerprint}"


def _history(entry: dict[str, Any]) -> list[Entry]:
    return [(float(s), float(q), int(n)) for s, q, n in entry["history"]]


class LedgerStore:
    """The ledgers of one node's folder (see the module docstring).

    Parameters
    ----------
    folder : path-like
        The node's ledger folder (created on first write).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- files ----------------------------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        """The registry file."""
        return self.folder / REGISTRY

    def ledger_path(self, platform: str, fingerprint: str) -> Path:
        """The ledger file of ``platform``'s training data ``fingerprint``."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", platform)
        return self.folder / f"{safe}-{fingerprint[:16]}{LEDGER_SUFFIX}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's lock (simulated clients of several platforms share one folder)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_registry(self) -> dict[str, dict[str, Any]]:
        def fallback(message: str) -> None:
            log.warning("privacy registry: %s", message)

        try:
            payload = read_durable(self.registry_path, on_fallback=fallback)
        except CorruptStateError as exc:
            raise LedgerError(
                f"the node's privacy registry is unreadable ({exc}); it lists which data this node has charged, so "
                "no platform trains until it is restored from a backup"
            ) from None
        if payload is None:
            orphans = sorted(p.name for p in self.folder.glob(f"*{LEDGER_SUFFIX}*"))
            if orphans:
                raise LedgerError(
                    f"the node's privacy registry {self.registry_path} is missing but ledgers remain ({orphans}): "
                    "part of the folder was deleted, so ledgers it listed may be gone too; restore the registry "
                    "from a backup (no platform trains until then)"
                )
            return {}
        doc = json.loads(payload)
        if doc.get("format") != REGISTRY_FORMAT:
            raise LedgerError(f"{self.registry_path}: unknown registry format {doc.get('format')!r}")
        return dict(doc["ledgers"])

    def _write_registry(self, entries: dict[str, dict[str, Any]]) -> None:
        doc = {"format": REGISTRY_FORMAT, "ledgers": entries}
        write_durable(self.registry_path, json.dumps(doc, indent=1, sort_keys=True).encode())

    # -- queries --------------------------------------------------------------------------
    def entries(self) -> dict[str, dict[str, Any]]:
        """The registry: ``<platform>:<fingerprint>`` -> ``{platform, fingerprint, file, steps, history, updated}``.

        Raises
        ------
        LedgerError
            If the registry is unreadable, or gone while ledger files remain.
        """
        with self._locked():
            return self._read_registry()

    def spent(self, platform: str, delta: float = 1e-5, accountant: str = "rdp") -> dict[str, float]:
        """Epsilon of each of ``platform``'s ledgers on this node (fingerprint -> epsilon at ``delta``)."""
        return {
            entry["fingerprint"]: epsilon_of(_history(entry), delta, accountant)
            for _, entry in sorted(self.entries().items())
            if entry["platform"] == platform
        }

    # -- the ledger of one platform's data ------------------------------------------------
    def open(
        self,
        platform: str,
        fingerprint: str,
        delta: float = 1e-5,
        accountant: str = "rdp",
        budget: float | None = None,
        caps: NodeCaps | None = None,
    ) -> PrivacyLedger:
        """The ledger of ``platform``'s data ``fingerprint``: loaded, repaired from the registry, or new.

        The returned ledger saves itself here after every charge and registers each save.

        Parameters
        ----------
        platform : str
            The platform.
        fingerprint : str
            Its training data's fingerprint.
        delta, accountant, budget
            This run's (see :class:`~fedrec.privacy.accounting.PrivacyLedger`).
        caps : NodeCaps, optional
            The node's caps (they also count the platform's other ledgers here).

        Raises
        ------
        LedgerError
            If the registry lists this data but its ledger is gone, unreadable, or
            behind the registry in a way the registry's history cannot repair; or the
            registry itself is unusable.
        """
        path = self.ledger_path(platform, fingerprint)
        with self._locked():
            entries = self._read_registry()
            entry = entries.get(_key(platform, fingerprint))
            try:
                state = PrivacyLedger.read(path)
            except CorruptStateError as exc:
                raise LedgerError(
                    f"privacy ledger of platform {platform} (data {fingerprint[:16]}) is unreadable: {exc}. "
                    f"{self._known(entry)}restore {path.name} from a backup; this data will not be trained on "
                    "again from zero"
                ) from None
            others = sorted(
                k for k, v in entries.items() if v["platform"] == platform and k != _key(platform, fingerprint)
            )
            elsewhere = [_history(entries[k]) for k in others]
            ledger = PrivacyLedger(
                delta=delta,
                accountant=accountant,
                budget=budget,
                path=path,
                platform=platform,
                fingerprint=fingerprint,
                caps=caps,
                elsewhere=elsewhere,
                on_save=self.register,
            )
            if state is None and entry is not None and int(entry["steps"]) > 0:
                raise LedgerError(
                    f"privacy ledger of platform {platform} (data {fingerprint[:16]}) is missing: {path} and its "
                    f".prev copy are gone, but {self._known(entry)}restore the file from a backup; this data will "
                    "not be trained on again from zero"
                )
            if state is None:
                if entry is None:  # registered before its first charge: a crash mid-charge leaves it ahead, not unknown
                    self._register_locked(entries, ledger)
                log.info("privacy ledger of %s: new (data %s, %s)", platform, fingerprint[:16], path)
                return ledger
            ledger.load_state_dict(state)
            if entry is not None and ledger.steps < int(entry["steps"]):
                if not _extends(entry["history"], ledger.history):
                    raise LedgerError(
                        f"privacy ledger {path} of platform {platform} has {ledger.steps} steps but "
                        f"{self._known(entry)}and the two histories disagree; restore the ledger from a backup"
                    )
                log.warning(
                    "privacy ledger of %s (data %s) was %d steps behind the node registry (a recovered older copy); "
                    "restored the registry's history of %d steps",
                    platform,
                    fingerprint[:16],
                    int(entry["steps"]) - ledger.steps,
                    int(entry["steps"]),
                )
                self._restore(ledger, entry["history"], "node registry")
                write_durable(path, json.dumps(ledger.state_dict(), indent=1).encode())
            elif entry is None or ledger.steps > int(entry["steps"]):  # a crash between the two writes
                self._register_locked(entries, ledger)
        return ledger

    def recover(self, ledger: PrivacyLedger, history: Sequence[Sequence[float]], source: str) -> bool:
        """Bring ``ledger`` up to a copy kept elsewhere (Flower's ``Context.state``) if that copy is ahead.

        Returns
        -------
        bool
            Whether the ledger was behind and was restored (saved and registered).
        """
        merged = merge_history(tuple(e) for e in history)
        if sum(n for _, _, n in merged) <= ledger.steps or not _extends(merged, ledger.history):
            return False
        log.warning(
            "privacy ledger of %s (data %s): restored %d steps from the %s",
            ledger.platform,
            ledger.fingerprint[:16],
            sum(n for _, _, n in merged),
            source,
        )
        self._restore(ledger, merged, source)
        ledger.save()  # and registers it
        return True

    @staticmethod
    def _restore(ledger: PrivacyLedger, history: Sequence[Sequence[float]], source: str) -> None:
        """Replace ``ledger``'s history by a longer copy, noting it in its rounds (the caller writes it)."""
        before = ledger.steps
        ledger.history = merge_history(tuple(e) for e in history)
        ledger.rounds.append(
            {
                "round": None,
                "restored_from": source,
                "steps": ledger.steps - before,
                "epsilon": ledger.epsilon(),
            }
        )

    @staticmethod
    def _known(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return ""
        return f"the node registry says it charged {entry['steps']} steps (last at {entry.get('updated', '?')}); "

    def register(self, ledger: PrivacyLedger) -> None:
        """Record ``ledger``'s history in the registry (after each save of the ledger)."""
        with self._locked():
            self._register_locked(self._read_registry(), ledger)

    def _register_locked(self, entries: dict[str, dict[str, Any]], ledger: PrivacyLedger) -> None:
        entries[_key(ledger.platform, ledger.fingerprint)] = {
            "platform": ledger.platform,
            "fingerprint": ledger.fingerprint,
            "file": self.ledger_path(ledger.platform, ledger.fingerprint).name,
            "steps": ledger.steps,
            "history": [list(e) for e in ledger.history],
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write_registry(entries)
